/**
 * Runs a consumer as a real child process (`node --import tsx …`) for kill -9 tests. Every child
 * is tracked and killed by {@link killAllConsumers}, so no test leaves one behind.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { waitFor } from "./wait-for.js";
import { collectLines } from "./json-lines.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** A consumer child process. */
export interface ConsumerProcess {
  readonly pid: number;
  /** Every output line, parsed when it is JSON, else `{ text }`. */
  readonly lines: Array<Record<string, any>>;
  readonly exited: Promise<number | NodeJS.Signals>;
  waitForLine(match: (line: Record<string, any>) => boolean, what: string, timeoutMs?: number): Promise<Record<string, any>>;
  /** SIGKILL, and wait until the process is gone. */
  kill(): Promise<void>;
}

const children = new Set<ChildProcess>();

/** Spawns `entry` (default the crash child) with exactly `env` (plus PATH). */
export function spawnConsumer(env: Record<string, string>, entry = "test/helpers/consumer-child.ts"): ConsumerProcess {
  const child = spawn(process.execPath, ["--import", "tsx", entry], {
    cwd: ROOT,
    env: { PATH: process.env["PATH"] ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  const lines: Array<Record<string, any>> = [];
  const echo = process.env["TIDEMARK_TEST_LOG_LEVEL"] !== undefined;
  collectLines(child, (line, raw) => {
    if (echo) process.stdout.write(`[consumer ${child.pid}] ${raw}\n`);
    lines.push(line);
  });
  const exited = new Promise<number | NodeJS.Signals>((resolve) => {
    child.on("exit", (code, signal) => {
      children.delete(child);
      resolve(code ?? signal ?? -1);
    });
  });
  return {
    pid: child.pid!,
    lines,
    exited,
    waitForLine: (match, what, timeoutMs = 60_000) =>
      waitFor(() => lines.find(match), { timeoutMs, intervalMs: 20, what: `${what} (consumer pid ${child.pid}; output: ${JSON.stringify(lines.slice(-5))})` }),
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
}

/** SIGKILLs every consumer child still running and waits for them to exit. */
export async function killAllConsumers(): Promise<void> {
  await Promise.all(
    [...children].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once("exit", () => resolve());
          child.kill("SIGKILL");
        }),
    ),
  );
}

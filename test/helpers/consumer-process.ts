/**
 * Runs a consumer as a real child process (`node --import tsx …`) for kill -9 tests. Every child
 * is tracked and killed by {@link killAllConsumers}, so no test leaves one behind.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { waitFor } from "./wait-for.js";

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
  for (const stream of [child.stdout!, child.stderr!]) {
    let buffered = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      buffered += chunk;
      let nl;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.trim() === "") continue;
        if (echo) process.stdout.write(`[consumer ${child.pid}] ${line}\n`);
        try {
          lines.push(JSON.parse(line) as Record<string, any>);
        } catch {
          lines.push({ text: line });
        }
      }
    });
  }
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

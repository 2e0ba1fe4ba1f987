/**
 * The processes under test run as real children (`node --import tsx …`), so each one's memory is
 * its own and its CPU competes with the others as in production. Every child is tracked; the bench
 * kills whatever is left when it exits, on success, failure or Ctrl-C.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { collectLines } from "../test/helpers/index.js";

/** The repository root (the children's working directory). */
export const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** A running child. */
export interface NodeChild {
  readonly name: string;
  readonly pid: number;
  /** The last lines of stdout/stderr (parsed JSON when they are pino logs). */
  readonly lines: Array<Record<string, unknown>>;
  readonly exited: Promise<number | NodeJS.Signals>;
  /** Resolves with the first line matching `match`; rejects on timeout or exit. */
  waitForLine(match: (line: Record<string, unknown>) => boolean, what: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Sends `signal` to the child (e.g. SIGKILL to crash it); `exited` tells when it is gone. */
  kill(signal: NodeJS.Signals): void;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the child is gone. */
  stop(graceMs?: number): Promise<void>;
}

const KEEP_LINES = 400;
const children = new Set<ChildProcess>();

/** Spawns `node [nodeArgs] --import tsx entry [args]` with `env` (plus PATH). */
export function spawnNode(
  name: string,
  entry: string,
  env: Record<string, string>,
  nodeArgs: readonly string[] = [],
  args: readonly string[] = [],
): NodeChild {
  const child = spawn(process.execPath, [...nodeArgs, "--import", "tsx", entry, ...args], {
    cwd: ROOT,
    env: { PATH: process.env["PATH"] ?? "", NODE_ENV: "production", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  const lines: Array<Record<string, unknown>> = [];
  const listeners = new Set<() => void>();
  const echo = process.env["TIDEMARK_BENCH_ECHO"] !== undefined;
  collectLines(child, (parsed, raw) => {
    if (echo) process.stderr.write(`[${name} ${child.pid}] ${raw}\n`);
    lines.push(parsed);
    if (lines.length > KEEP_LINES) lines.shift();
    for (const l of listeners) l();
  });
  let exitedWith: number | NodeJS.Signals | undefined;
  const exited = new Promise<number | NodeJS.Signals>((resolve) => {
    child.on("exit", (code, signal) => {
      children.delete(child);
      exitedWith = code ?? signal ?? -1;
      for (const l of listeners) l();
      resolve(exitedWith);
    });
  });
  return {
    name,
    pid: child.pid!,
    lines,
    exited,
    waitForLine(match, what, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = lines.find(match);
          if (found !== undefined) return done(() => resolve(found));
          if (exitedWith !== undefined) {
            const tail = lines.slice(-15).map((l) => JSON.stringify(l)).join("\n");
            return done(() => reject(new Error(`${name} exited (${exitedWith}) before ${what}:\n${tail}`)));
          }
        };
        const timer = setTimeout(() => done(() => reject(new Error(`${name}: timed out after ${timeoutMs} ms waiting for ${what}`))), timeoutMs);
        const done = (settle: () => void) => {
          clearTimeout(timer);
          listeners.delete(check);
          settle();
        };
        listeners.add(check);
        check();
      });
    },
    kill(signal) {
      if (exitedWith === undefined) child.kill(signal);
    },
    async stop(graceMs = 15_000) {
      if (exitedWith !== undefined) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** SIGKILLs every child still running (the bench's last resort on exit). */
export function killAllChildren(): void {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
}

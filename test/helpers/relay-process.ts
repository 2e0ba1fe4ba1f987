/**
 * Runs a relay as a real child process (`node --import tsx …`), for kill -9, SIGSTOP and takeover
 * tests. Every child is tracked and killed by {@link killAllRelays}, so no test leaves one behind.
 */
import type { ChildProcess } from "node:child_process";
import { spawnTsx } from "./json-lines.js";

/** A relay child process. */
export interface RelayProcess {
  readonly pid: number;
  /** Every stdout line, parsed when it is JSON (pino logs) else kept as `{ text }`. */
  readonly lines: Array<Record<string, any>>;
  /** Resolves with the exit code or signal. */
  readonly exited: Promise<number | NodeJS.Signals>;
  /** Waits for a stdout line that satisfies `match`, and returns it. */
  waitForLine(match: (line: Record<string, any>) => boolean, what: string, timeoutMs?: number): Promise<Record<string, any>>;
  signal(signal: NodeJS.Signals): void;
}

const children = new Set<ChildProcess>();
// A test worker that exits without its afterAll (a crash, a timeout) must not leave relays behind.
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

/**
 * Spawns `tidemark relay` (or a test `entry` of its own) with exactly `env` (plus PATH and
 * NODE_ENV); stderr is kept with stdout so a start failure shows up in `lines`.
 */
export function spawnRelay(env: Record<string, string>, entry?: string): RelayProcess {
  const { child, pid, lines, exited, waitForLine } = spawnTsx(entry ?? "cli/main.ts", { NODE_ENV: "production", ...env }, "relay", children, entry === undefined ? ["relay"] : []);
  return {
    pid,
    lines,
    exited,
    waitForLine,
    signal(signal) {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
  };
}

/** SIGKILLs every relay child still running and waits for them to exit. */
export async function killAllRelays(): Promise<void> {
  const pending = [...children].map(
    (child) =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGCONT");
        child.kill("SIGKILL");
      }),
  );
  await Promise.all(pending);
}

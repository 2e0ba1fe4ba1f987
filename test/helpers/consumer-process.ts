/**
 * Runs a consumer as a real child process (`node --import tsx …`) for kill -9 tests. Every child
 * is tracked and killed by {@link killAllConsumers}, so no test leaves one behind.
 */
import type { ChildProcess } from "node:child_process";
import { spawnTsx } from "./json-lines.js";

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
  const { child, pid, lines, exited, waitForLine } = spawnTsx(entry, env, "consumer", children);
  return {
    pid,
    lines,
    exited,
    waitForLine,
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

/**
 * Reads a child process's stdout and stderr line by line: JSON lines are parsed (the processes log
 * with pino), anything else is kept as `{ text }`. `onLine` sees every line as it arrives.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { waitFor } from "./wait-for.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

export type LogLine = Record<string, any>;

export function collectLines(
  child: ChildProcess,
  onLine: (line: LogLine, raw: string) => void,
): void {
  for (const stream of [child.stdout, child.stderr]) {
    if (stream === null) continue;
    let buffered = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      buffered += chunk;
      let nl;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const raw = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (raw.trim() === "") continue;
        let parsed: LogLine;
        try {
          parsed = JSON.parse(raw) as LogLine;
        } catch {
          parsed = { text: raw };
        }
        onLine(parsed, raw);
      }
    });
  }
}

/** A `node --import tsx` child process whose output is collected as log lines. */
export interface TsxChild {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Every output line, parsed when it is JSON (pino logs), else `{ text }`. */
  readonly lines: LogLine[];
  /** Resolves with the exit code or signal. */
  readonly exited: Promise<number | NodeJS.Signals>;
  /** Waits for an output line that satisfies `match`, and returns it. */
  waitForLine(match: (line: LogLine) => boolean, what: string, timeoutMs?: number): Promise<LogLine>;
}

/**
 * Spawns `node --import tsx entry` from the repository root with exactly `env` (plus PATH); the
 * child is added to `tracked` until it exits, so a suite can kill whatever it left running.
 */
export function spawnTsx(entry: string, env: Record<string, string>, label: string, tracked: Set<ChildProcess>, args: readonly string[] = []): TsxChild {
  const child = spawn(process.execPath, ["--import", "tsx", entry, ...args], {
    cwd: ROOT,
    env: { PATH: process.env["PATH"] ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  tracked.add(child);
  const lines: LogLine[] = [];
  const echo = process.env["TIDEMARK_TEST_LOG_LEVEL"] !== undefined;
  collectLines(child, (line, raw) => {
    if (echo) process.stdout.write(`[${label} ${child.pid}] ${raw}\n`);
    lines.push(line);
  });
  const exited = new Promise<number | NodeJS.Signals>((resolve) => {
    child.on("exit", (code, signal) => {
      tracked.delete(child);
      resolve(code ?? signal ?? -1);
    });
  });
  return {
    child,
    pid: child.pid!,
    lines,
    exited,
    waitForLine: (match, what, timeoutMs = 60_000) =>
      waitFor(() => lines.find(match), {
        timeoutMs,
        intervalMs: 20,
        what: `${what} (${label} pid ${child.pid}; output: ${JSON.stringify(lines.slice(-5))})`,
      }),
  };
}

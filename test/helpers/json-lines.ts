/**
 * Reads a child process's stdout and stderr line by line: JSON lines are parsed (the processes log
 * with pino), anything else is kept as `{ text }`. `onLine` sees every line as it arrives.
 */
import type { ChildProcess } from "node:child_process";

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

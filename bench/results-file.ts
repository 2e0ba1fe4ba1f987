/**
 * Where a standalone bench (secure-bench.ts, command-bench.ts) leaves its figures: a JSON file
 * under bench/results named after the bench and the time of the run.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { ROOT } from "./child-process.js";

/** Writes `data` as bench/results/`name`-<ISO time>.json; returns the file's path. */
export function writeResultsFile(name: string, data: unknown): string {
  const dir = path.join(ROOT, "bench/results");
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  writeFileSync(file, `${JSON.stringify(data, null, 2)}\n`);
  return file;
}

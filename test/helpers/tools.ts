import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";

/**
 * The absolute path of a command-line tool: on PATH, or in Go's bin directory (where the stack
 * script installs grpcurl). Throws, never skips, when it is missing.
 */
export function findTool(name: string): string {
  const dirs = (process.env["PATH"] ?? "").split(path.delimiter);
  try {
    dirs.push(path.join(execFileSync("go", ["env", "GOPATH"], { encoding: "utf8" }).trim(), "bin"));
  } catch {}
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    if (dir !== "" && existsSync(candidate)) return candidate;
  }
  throw new Error(`${name} is not installed: run \`npm run stack -- up\`, which installs it`);
}

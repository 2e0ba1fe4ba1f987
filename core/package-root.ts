/**
 * Where the package's own files are (package.json, scripts/stack.sh, the console's front-end): the
 * nearest directory above this module that holds package.json — the checkout when Tidemark runs
 * from its sources (core/), and the package when it runs compiled (dist/core/, `npm run build`).
 */
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The package's root directory. */
export const PACKAGE_ROOT: string = packageRootAbove(path.dirname(fileURLToPath(import.meta.url)));

function packageRootAbove(start: string): string {
  for (let dir = start; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, "package.json"))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json above ${start}`);
  }
}

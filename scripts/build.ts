/**
 * `npm run build`: compiles the parts the `tidemark` command runs (core, server, relay, consumers,
 * gen, cli) to plain JavaScript with tsc (tsconfig.build.json), keeping the sources' layout, and
 * copies what those parts read from beside their own files at run time — the SQL functions of
 * core/db/functions/ — so `node dist/cli/main.js` and the `tidemark` bin run with no TypeScript
 * loader. `--out DIR` (default dist, relative to the checkout) builds elsewhere; the directory must
 * lie inside the package, where the CLI finds package.json and scripts/stack.sh by walking up.
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** Files read at run time relative to a compiled module, by source directory and name pattern. */
const RUNTIME_FILES: ReadonlyArray<readonly [string, RegExp]> = [["core/db/functions", /\.sql$/]];

const { values } = parseArgs({ options: { out: { type: "string", default: "dist" } } });
const out = path.resolve(ROOT, values.out);
if (out === ROOT || !out.startsWith(ROOT)) {
  process.stderr.write(`build: --out must be a directory inside ${ROOT}\n`);
  process.exit(2);
}

// A fresh directory: a module deleted from the sources must not live on in the build.
rmSync(out, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
const compiled = spawnSync(process.execPath, [tsc, "-p", path.join(ROOT, "tsconfig.build.json"), "--outDir", out], { cwd: ROOT, stdio: "inherit" });
if (compiled.status !== 0) process.exit(compiled.status ?? 1);

let copied = 0;
for (const [dir, pattern] of RUNTIME_FILES) {
  mkdirSync(path.join(out, dir), { recursive: true });
  for (const name of readdirSync(path.join(ROOT, dir)).filter((n) => pattern.test(n))) {
    copyFileSync(path.join(ROOT, dir, name), path.join(out, dir, name));
    copied += 1;
  }
}
process.stdout.write(`build: ${path.relative(ROOT, out)}/ (tsc, ${copied} runtime files copied); run it with node ${path.relative(ROOT, path.join(out, "cli/main.js"))} or the tidemark bin\n`);

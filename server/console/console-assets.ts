/**
 * The web console's front-end (console/: Preact, bundled by esbuild): where its files are, and the
 * build that makes `console/dist/console.js`. `npm run build:console` runs it, and a server with the
 * console on runs it at start when the bundle is missing or older than its sources, so a checkout
 * works with no extra step and no internet (every input is in node_modules).
 */
import { mkdir, readdir, rename, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { PACKAGE_ROOT } from "../../core/index.js";

/**
 * The console's folder: index.html, console.css, src/ (sources) and dist/ (the bundle, not
 * committed). In the package, beside the compiled code (dist/) as beside the sources.
 */
export const CONSOLE_DIR = path.join(PACKAGE_ROOT, "console");

/** The bundle the page loads. */
export const CONSOLE_BUNDLE = path.join(CONSOLE_DIR, "dist", "console.js");

async function mtime(file: string): Promise<number | undefined> {
  try {
    return (await stat(file)).mtimeMs;
  } catch {
    return undefined;
  }
}

async function newestSource(dir: string): Promise<number> {
  let newest = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? await newestSource(full) : ((await mtime(full)) ?? 0));
  }
  return newest;
}

/** True when the bundle is missing or a source (console/src, or the generated descriptors) is newer. */
export async function consoleBundleStale(): Promise<boolean> {
  const built = await mtime(CONSOLE_BUNDLE);
  if (built === undefined) return true;
  const sources = Math.max(await newestSource(path.join(CONSOLE_DIR, "src")), await newestSource(path.join(CONSOLE_DIR, "..", "gen", "tidemark")));
  return sources > built;
}

/**
 * Bundles console/src/main.tsx into console/dist/console.js (minified, with a source map). The files
 * are written under temporary names and renamed, so a server reading them meanwhile, or a second
 * build at the same time, never sees half a file. esbuild is loaded only here: a server whose
 * bundle is current does not need it.
 */
export async function buildConsole(): Promise<{ readonly bundle: string; readonly bytes: number }> {
  const esbuild = await import("esbuild");
  const result = await esbuild.build({
    entryPoints: [path.join(CONSOLE_DIR, "src", "main.tsx")],
    bundle: true,
    format: "esm",
    target: "es2022",
    platform: "browser",
    minify: true,
    sourcemap: "external",
    jsx: "automatic",
    jsxImportSource: "preact",
    outfile: CONSOLE_BUNDLE,
    write: false,
    logLevel: "silent",
    legalComments: "none",
  });
  await mkdir(path.dirname(CONSOLE_BUNDLE), { recursive: true });
  let bytes = 0;
  for (const file of result.outputFiles) {
    const temporary = `${file.path}.${process.pid}.${Date.now()}.tmp`;
    await writeFile(temporary, file.contents);
    await rename(temporary, file.path);
    if (file.path === CONSOLE_BUNDLE) bytes = file.contents.byteLength;
  }
  return { bundle: CONSOLE_BUNDLE, bytes };
}

/** Builds the bundle when {@link consoleBundleStale}; true when it built. */
export async function ensureConsoleBundle(): Promise<boolean> {
  if (!(await consoleBundleStale())) return false;
  await buildConsole();
  return true;
}

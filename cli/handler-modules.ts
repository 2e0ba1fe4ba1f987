/**
 * Loads user modules: handler modules for `tidemark consumer MODULE` and `tidemark start --consumer
 * MODULE` — a module's default export (or its `handlers` export) is one handler or a list of them,
 * as `defineHandler` makes them, and its `upcasters` export applies to those that declare none
 * (docs/CONSUMERS.md) — and the server's upcasters module (TIDEMARK_UPCASTERS). TypeScript modules
 * load when the CLI runs from its sources under tsx (`npm run tidemark`) or on a Node that strips
 * types itself; the compiled CLI (`npm run build`) loads JavaScript.
 */
import path from "node:path";
import { pathToFileURL } from "node:url";
import { upcastersOfModule, Upcasters } from "../core/index.js";
import { defineHandler, type Handler } from "../consumers/index.js";
import { UsageError } from "./args.js";

/** Imports a user module; UsageError naming it (and why a .ts file may not load) when that fails. */
async function importUserModule(what: string, specifier: string, cwd: string): Promise<Record<string, unknown>> {
  const file = path.resolve(cwd, specifier);
  try {
    return (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    const hint = code === "ERR_UNKNOWN_FILE_EXTENSION" ? " (this Node does not load TypeScript: compile the module to JavaScript, or run the CLI from its sources with `npm run tidemark`)" : "";
    throw new UsageError(`cannot load ${what} ${specifier} (${file}): ${(e as Error).message}${hint}`);
  }
}

/** The handlers `specifier` (a path, relative to `cwd`) exports; UsageError when it exports none. */
export async function loadHandlerModule(specifier: string, cwd = process.cwd()): Promise<Handler[]> {
  const mod = await importUserModule("handler module", specifier, cwd);
  const exported = mod["default"] ?? mod["handlers"];
  const list = Array.isArray(exported) ? exported : [exported];
  const handlers = list.filter(
    (h): h is Handler => typeof h === "object" && h !== null && typeof (h as Handler).name === "string" && typeof (h as Handler).handle === "function",
  );
  if (handlers.length === 0 || handlers.length !== list.length) {
    throw new UsageError(`${specifier} must export handlers: \`export default defineHandler({ name, handle })\` or \`export const handlers = [...]\``);
  }
  try {
    const upcasters = upcastersOfModule(mod, false);
    return handlers.map((h) => defineHandler(h.upcasters === undefined && upcasters.length > 0 ? { ...h, upcasters } : h));
  } catch (e) {
    throw new UsageError(`${specifier}: ${(e as Error).message}`);
  }
}

/**
 * The upcasters of the module `specifier` (TIDEMARK_UPCASTERS): its `upcasters` export or a default
 * export of the list. UsageError when it exports none or one is malformed.
 */
export async function loadUpcasterModule(specifier: string, cwd = process.cwd()): Promise<Upcasters> {
  const mod = await importUserModule("upcaster module", specifier, cwd);
  try {
    return new Upcasters(upcastersOfModule(mod, true));
  } catch (e) {
    throw new UsageError(`${specifier}: ${(e as Error).message}`);
  }
}

/**
 * Loads user handler modules for `tidemark consumer MODULE` and `tidemark start --consumer MODULE`:
 * a module's default export (or its `handlers` export) is one handler or a list of them, as
 * `defineHandler` makes them (docs/CONSUMERS.md). TypeScript modules load because the CLI runs
 * under tsx.
 */
import path from "node:path";
import { pathToFileURL } from "node:url";
import { defineHandler, type Handler } from "../consumers/index.js";
import { UsageError } from "./args.js";

/** The handlers `specifier` (a path, relative to `cwd`) exports; UsageError when it exports none. */
export async function loadHandlerModule(specifier: string, cwd = process.cwd()): Promise<Handler[]> {
  const file = path.resolve(cwd, specifier);
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } catch (e) {
    throw new UsageError(`cannot load handler module ${specifier} (${file}): ${(e as Error).message}`);
  }
  const exported = mod["default"] ?? mod["handlers"];
  const list = Array.isArray(exported) ? exported : [exported];
  const handlers = list.filter(
    (h): h is Handler => typeof h === "object" && h !== null && typeof (h as Handler).name === "string" && typeof (h as Handler).handle === "function",
  );
  if (handlers.length === 0 || handlers.length !== list.length) {
    throw new UsageError(`${specifier} must export handlers: \`export default defineHandler({ name, handle })\` or \`export const handlers = [...]\``);
  }
  try {
    return handlers.map((h) => defineHandler(h));
  } catch (e) {
    throw new UsageError(`${specifier}: ${(e as Error).message}`);
  }
}

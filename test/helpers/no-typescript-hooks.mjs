// Module hooks of no-typescript.mjs: refuse every .ts/.mts/.cts module and every module of tsx.
import { URL } from "node:url";

export async function resolve(specifier, context, nextResolve) {
  const resolved = await nextResolve(specifier, context);
  if (/\.[cm]?ts$/.test(new URL(resolved.url).pathname) || resolved.url.includes("/node_modules/tsx/")) {
    throw new Error(`TypeScript loaded at run time: ${resolved.url}`);
  }
  return resolved;
}

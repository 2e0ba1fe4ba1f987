// Module hooks of no-store-clients.mjs and no-clients.mjs: refuse every module of the packages named.
let refused = [];

export function initialize(data) {
  refused = data.packages;
}

export async function resolve(specifier, context, nextResolve) {
  const resolved = await nextResolve(specifier, context);
  const hit = refused.find((name) => resolved.url.includes(`/node_modules/${name}/`));
  if (hit !== undefined) throw new Error(`${hit} loaded at run time: ${resolved.url}`);
  return resolved;
}

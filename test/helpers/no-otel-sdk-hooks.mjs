// Module hooks of no-otel-sdk.mjs: refuse every @opentelemetry package but the API.
export async function resolve(specifier, context, nextResolve) {
  const resolved = await nextResolve(specifier, context);
  const name = /\/node_modules\/(@opentelemetry\/[^/]+)\//.exec(resolved.url)?.[1];
  if (name !== undefined && name !== "@opentelemetry/api") throw new Error(`OpenTelemetry SDK loaded: ${name}`);
  return resolved;
}

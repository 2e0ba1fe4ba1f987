#!/usr/bin/env node
// The `tidemark` bin. With a build (`npm run build`: dist/, as an installed package has it) it runs
// the compiled CLI, plain JavaScript with no TypeScript loader; in a checkout without one it
// registers tsx and runs the TypeScript sources as they are. Rebuild after changing the sources.
import { existsSync } from "node:fs";
import { URL } from "node:url";

const compiled = new URL("../dist/cli/main.js", import.meta.url);
if (existsSync(compiled)) {
  const { main } = await import(compiled.href);
  main();
} else {
  const { register } = await import("tsx/esm/api");
  register();
  const { main } = await import("./main.ts");
  main();
}

// `node --import ./test/helpers/no-typescript.mjs …`: fails the process when anything loads a
// TypeScript file or tsx, so a test can show the compiled CLI runs as plain JavaScript (Node 22.18+
// and 24 would otherwise strip the types of a stray .ts import silently).
import { register } from "node:module";
import { URL } from "node:url";

register(new URL("./no-typescript-hooks.mjs", import.meta.url));

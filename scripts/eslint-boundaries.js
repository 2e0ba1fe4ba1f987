/**
 * An ESLint rule that holds the house's corridors: a top-level folder imports another only through
 * that folder's public face (index.ts, or a narrow second face listed below), and only the folders
 * it may depend on (cli/ assembles processes from server/, relay/ and consumers/; those three share
 * core/; core/ depends on nothing of ours). The generated code in gen/ may be imported from
 * anywhere. See docs/ARCHITECTURE.md ("Layout").
 */
import path from "node:path";
import { fileURLToPath, URL } from "node:url";

/** Which top-level folders each folder may import (always through their index.ts). */
export const ALLOWED = {
  core: [],
  server: ["core"],
  relay: ["core"],
  consumers: ["core"],
  cli: ["server", "relay", "consumers", "core"],
  bench: ["cli", "server", "relay", "consumers", "core", "test"],
  scripts: ["cli", "server", "relay", "consumers", "core"],
  chaos: ["server", "core", "test"],
};

/**
 * The files a folder exposes (index.ts unless listed): core/ and server/ have a narrow second face
 * for gRPC clients (client.ts, which loads no client of the store); test/ lends bench/ a few
 * helpers through test/helpers/index.ts.
 */
const FACES = { core: ["core/index.ts", "core/client.ts"], server: ["server/index.ts", "server/client.ts"], test: ["test/helpers/index.ts"] };

const root = fileURLToPath(new URL("..", import.meta.url));

function check(context, node, source) {
  if (source === null || source === undefined || typeof source.value !== "string" || !source.value.startsWith(".")) return;
  const file = path.relative(root, context.filename);
  const from = file.split(path.sep)[0];
  if (!(from in ALLOWED)) return;
  const resolved = path.relative(root, path.resolve(path.dirname(context.filename), source.value)).replace(/\.js$/, ".ts");
  const to = resolved.split(path.sep)[0];
  if (to === from || to === "gen") return;
  if (!ALLOWED[from].includes(to)) {
    context.report({ node, message: `${from}/ may not import ${to}/ (allowed: ${ALLOWED[from].join(", ") || "nothing outside core/ and gen/"}); see docs/ARCHITECTURE.md` });
    return;
  }
  const faces = FACES[to] ?? [`${to}/index.ts`];
  if (!faces.includes(resolved)) {
    context.report({ node, message: `import ${to}/ through its public face ${faces.join(" or ")}, not ${resolved}` });
  }
}

/** The plugin, registered as `tidemark` in eslint.config.js. */
export const boundaries = {
  rules: {
    boundaries: {
      meta: { type: "problem", docs: { description: "folders import each other only through index.ts, along the allowed dependencies" }, schema: [] },
      create(context) {
        return {
          ImportDeclaration: (node) => check(context, node, node.source),
          ExportNamedDeclaration: (node) => check(context, node, node.source),
          ExportAllDeclaration: (node) => check(context, node, node.source),
          ImportExpression: (node) => check(context, node, node.source.type === "Literal" ? node.source : null),
        };
      },
    },
  },
};

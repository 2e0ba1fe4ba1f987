/**
 * An ESLint rule that holds the house's corridors: a top-level folder imports another only through
 * that folder's index.ts, and only the folders it may depend on (cli/ assembles processes from
 * server/, relay/ and consumers/; those three share core/; core/ depends on nothing of ours). The
 * generated code in gen/ may be imported from anywhere. See docs/ARCHITECTURE.md ("Layout").
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

/** The file a folder exposes; test/ lends bench/ a few helpers through test/helpers/index.ts. */
const FACE = { test: "test/helpers/index.ts" };

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
  const face = FACE[to] ?? `${to}/index.ts`;
  if (resolved !== face) {
    context.report({ node, message: `import ${to}/ through its public face ${face}, not ${resolved}` });
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

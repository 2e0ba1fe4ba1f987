import js from "@eslint/js";
import tseslint from "typescript-eslint";
import { boundaries } from "./scripts/eslint-boundaries.js";

const infrastructure = ["node:*", "@aws-sdk/*", "kafkajs", "kysely", "pg", "@grpc/*", "pino", "@electric-sql/*"];

export default tseslint.config(
  { ignores: ["gen/**", "dist/**", ".build-*/**", "node_modules/**", "test/interop/gen/**", ".tidemark/**", "bench/results/**", "console/dist/**", "test-results/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-explicit-any": "off",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/no-non-null-assertion": "off",
      "no-empty": ["error", { allowEmptyCatch: true }],
    },
  },
  {
    // The corridors: folders import each other through index.ts, along the allowed dependencies.
    files: ["cli/**/*.ts", "server/**/*.ts", "relay/**/*.ts", "consumers/**/*.ts", "core/**/*.ts", "bench/**/*.ts", "scripts/**/*.ts", "chaos/**/*.ts"],
    plugins: { tidemark: boundaries },
    rules: { "tidemark/boundaries": "error" },
  },
  {
    // grpc-js stays behind the bridge in server/grpc/.
    files: ["core/**/*.ts", "relay/**/*.ts", "consumers/**/*.ts", "server/*.ts", "server/instances/**/*.ts", "server/services/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [{ group: ["@grpc/*"], message: "use server/grpc/ (the bridge) instead" }] }],
    },
  },
  {
    // Decisions are pure: time, ids and I/O come in as arguments. After the block above, which
    // would otherwise replace this rule for these files (the last matching block wins).
    files: ["core/domain/**/*.ts", "consumers/next-step.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: infrastructure.map((group) => ({ group: [group], message: "decision code must stay free of I/O" })) }],
    },
  },
);

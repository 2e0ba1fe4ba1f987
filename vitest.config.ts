import { defineConfig } from "vitest/config";

// Two cores serve the tests and the real services: keep the fan-out small.
const heavy = { testTimeout: 60_000, hookTimeout: 120_000, maxWorkers: 2, pool: "forks" as const };

export default defineConfig({
  test: {
    reporters: ["default", "./test/helpers/summary-reporter.ts"],
    projects: [
      {
        // Same worker limit as the other projects: vitest runs projects of one group together.
        test: { name: "unit", include: ["test/unit/**/*.test.ts"], maxWorkers: 2 },
      },
      {
        // The contract suites and the real-service scenarios, against PostgreSQL, Kafka and S3Proxy.
        test: {
          name: "integration",
          include: ["test/contract/**/*.test.ts", "test/integration/**/*.test.ts"],
          globalSetup: ["test/helpers/global-setup.ts"],
          provide: { backend: "services" },
          ...heavy,
        },
      },
      {
        // The web console in a real headless Chromium (Debian's package, installed by the setup)
        // against the real services.
        test: {
          name: "browser",
          include: ["test/browser/**/*.test.ts"],
          globalSetup: ["test/helpers/global-setup.ts", "test/helpers/browser-setup.ts"],
          provide: { backend: "services" },
          ...heavy,
        },
      },
      {
        // The short form of `npm run chaos`: private services on free ports, so it disturbs no
        // other file; the global setup only makes sure the stack's jars are there.
        test: {
          name: "chaos",
          include: ["test/chaos/**/*.test.ts"],
          globalSetup: ["test/helpers/global-setup.ts"],
          ...heavy,
          testTimeout: 240_000,
        },
      },
      {
        // The same contract suites against the embedded default (PGlite and local files), plus the
        // embedded all-in-one process, the CLI and `npm start` as the README runs it.
        test: {
          name: "embedded",
          include: ["test/contract/**/*.test.ts", "test/embedded/**/*.test.ts"],
          // One initialised PGlite cluster that the contract suites' servers copy (not initdb each).
          globalSetup: ["test/helpers/embedded-setup.ts"],
          provide: { backend: "embedded", stack: undefined },
          ...heavy,
        },
      },
    ],
  },
});

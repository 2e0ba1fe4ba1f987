/**
 * Brings the real services up (PostgreSQL, Kafka, S3Proxy) with the stack script when they are not
 * running (or run without their secure faces), and hands their addresses to the tests: `env` as
 * `stack`, `env --secure` (TLS, HTTPS, SASL_SSL and the CA files) as `stackSecure`. `up` is
 * idempotent and fast when warm.
 */
import { execFileSync } from "node:child_process";
import type { TestProject } from "vitest/node";
import { parseExports } from "../../bench/stack-env.js";

declare module "vitest" {
  export interface ProvidedContext {
    stack: Record<string, string> | undefined;
    stackSecure: Record<string, string> | undefined;
    backend: "services" | "embedded";
  }
}

export default function setup(project: TestProject): void {
  const script = new URL("../../scripts/stack.sh", import.meta.url).pathname;
  try {
    execFileSync("bash", [script, "status"], { stdio: "ignore" });
  } catch {
    execFileSync("bash", [script, "up"], { stdio: ["ignore", "inherit", "inherit"] });
  }
  const env = parseExports(execFileSync("bash", [script, "env"], { encoding: "utf8" }));
  for (const name of ["TIDEMARK_PG_URL", "TIDEMARK_S3_ENDPOINT", "TIDEMARK_KAFKA_BROKERS"]) {
    if (!env[name]) throw new Error(`stack env did not provide ${name}`);
  }
  if (env["PATH"]) process.env["PATH"] = env["PATH"];
  project.provide("stack", env);
  // Checked where it is used (stackSecureEnv): a test that needs a secure face fails there.
  project.provide("stackSecure", parseExports(execFileSync("bash", [script, "env", "--secure"], { encoding: "utf8" })));
}


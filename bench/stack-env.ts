/**
 * The addresses of the real services, from `bash scripts/stack.sh env` (brought up with `up` when
 * `status` says they are down, as the test suite does). Variables already in the environment win,
 * so the bench also runs against a compose stack.
 */
import { execFileSync } from "node:child_process";
import { ROOT } from "./child-process.js";

/** The stack's variables the bench needs. */
export interface StackEnv {
  readonly pgUrl: string;
  readonly s3Endpoint: string;
  readonly s3Region: string;
  readonly s3AccessKey: string;
  readonly s3SecretKey: string;
  readonly kafkaBrokers: string;
  /** Every exported variable, for the children's environments. */
  readonly vars: Readonly<Record<string, string>>;
}

const NEEDED = ["TIDEMARK_PG_URL", "TIDEMARK_S3_ENDPOINT", "TIDEMARK_S3_ACCESS_KEY", "TIDEMARK_S3_SECRET_KEY", "TIDEMARK_KAFKA_BROKERS"];

/** Reads the stack's environment, starting the stack when it is down. */
export function loadStackEnv(): StackEnv {
  let vars: Record<string, string> = {};
  if (NEEDED.every((n) => (process.env[n] ?? "") !== "")) {
    for (const name of [...NEEDED, "TIDEMARK_S3_REGION"]) if (process.env[name] !== undefined) vars[name] = process.env[name]!;
  } else {
    const script = `${ROOT}scripts/stack.sh`;
    try {
      execFileSync("bash", [script, "status"], { stdio: "ignore" });
    } catch {
      process.stderr.write("bench: the stack is down; running `bash scripts/stack.sh up`\n");
      execFileSync("bash", [script, "up"], { stdio: ["ignore", "inherit", "inherit"] });
    }
    vars = parseExports(execFileSync("bash", [script, "env"], { encoding: "utf8" }));
    delete vars["PATH"];
  }
  for (const name of NEEDED) if ((vars[name] ?? "") === "") throw new Error(`stack env did not provide ${name}`);
  // The services mode defaults to tokens; the plain runs measure without (the TLS + tokens variant sets its own).
  vars = { TIDEMARK_AUTH: "off", ...vars };
  return {
    pgUrl: vars["TIDEMARK_PG_URL"]!,
    s3Endpoint: vars["TIDEMARK_S3_ENDPOINT"]!,
    s3Region: vars["TIDEMARK_S3_REGION"] ?? "us-east-1",
    s3AccessKey: vars["TIDEMARK_S3_ACCESS_KEY"]!,
    s3SecretKey: vars["TIDEMARK_S3_SECRET_KEY"]!,
    kafkaBrokers: vars["TIDEMARK_KAFKA_BROKERS"]!,
    vars,
  };
}

/** The variables of `export NAME='value'` lines (what `stack.sh env` prints). */
export function parseExports(out: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of out.split("\n")) {
    const match = /^export ([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (match) env[match[1]!] = match[2]!.replace(/^["']|["']$/g, "");
  }
  return env;
}

/**
 * The processes under test, started as children against one benchmark's names through the CLI
 * users run (`tidemark server`, `tidemark relay`, `tidemark consumer projection`). Each is tracked
 * by the memory sampler under its role name; the server and the relay serve /metrics on a port of
 * their own, where the bench reads their S3 request counts (s3-requests.ts).
 */
import { spawnNode, type NodeChild } from "./child-process.js";
import type { MemorySampler } from "./memory.js";
import type { BenchNames } from "./resources.js";
import type { StackEnv } from "./stack-env.js";

/** A started child that serves /metrics, and the address (host:port) that endpoint bound. */
export interface MeteredProcess {
  readonly child: NodeChild;
  readonly metricsAddress: string;
}

/** A started server child and the gRPC address it bound. */
export interface ServerProcess extends MeteredProcess {
  readonly address: string;
}

/** Options shared by the starters. */
export interface StartOptions {
  readonly memory: MemorySampler;
  /** Extra node flags, e.g. `--cpu-prof`. */
  readonly nodeArgs?: readonly string[];
  /** Extra environment for the child. */
  readonly env?: Readonly<Record<string, string>>;
}

function baseEnv(stack: StackEnv, names: BenchNames): Record<string, string> {
  return {
    ...stack.vars,
    TIDEMARK_PG_SCHEMA: names.schema,
    TIDEMARK_S3_BUCKET: names.bucket,
    TIDEMARK_LOG_LEVEL: "info",
    // Segment settings may be tried from the bench's own environment (bench/README.md).
    ...Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[0].startsWith("TIDEMARK_SEGMENT_") && e[1] !== undefined)),
  };
}

/** The CLI's entry point, run with `node --import tsx`. */
export const CLI_ENTRY = "cli/main.ts";

/** Port 0: the child picks a free port and says which in its start line. */
const METRICS_ENV = { TIDEMARK_METRICS_ADDR: "127.0.0.1:0" };

/** Waits for the process's start line (`tidemark started`, logged once every part is up) and reads the metrics address from it. */
async function metricsAddressOf(child: NodeChild): Promise<string> {
  const line = await child.waitForLine((l) => l["msg"] === "tidemark started", "the process to report its metrics address");
  if (typeof line["metrics"] !== "string") throw new Error(`${child.name}: its start line has no metrics address`);
  return line["metrics"];
}

/**
 * Starts `tidemark server` on 127.0.0.1:0 and waits until it listens; `role` names it in the
 * memory figures (e.g. `server (P1)`).
 */
export async function startServerProcess(stack: StackEnv, names: BenchNames, options: StartOptions & { readonly role: string }): Promise<ServerProcess> {
  const child = spawnNode(options.role, CLI_ENTRY, { ...baseEnv(stack, names), TIDEMARK_GRPC_ADDR: "127.0.0.1:0", ...METRICS_ENV, ...options.env }, options.nodeArgs, ["server"]);
  options.memory.track(options.role, child.pid);
  const line = await child.waitForLine((l) => l["msg"] === "tidemark server listening", "the server to listen");
  return { child, address: String(line["address"]), metricsAddress: await metricsAddressOf(child) };
}

/** Starts `tidemark relay` publishing to the benchmark's topic. */
export async function startRelayProcess(stack: StackEnv, names: BenchNames, options: StartOptions): Promise<MeteredProcess> {
  const child = spawnNode(
    "relay",
    CLI_ENTRY,
    {
      ...baseEnv(stack, names),
      TIDEMARK_RELAY_TOPIC: names.topic,
      TIDEMARK_DEAD_LETTER_TOPIC: names.deadLetterTopic,
      TIDEMARK_RELAY_NAME: "bench",
      ...METRICS_ENV,
      ...options.env,
    },
    options.nodeArgs,
    ["relay"],
  );
  options.memory.track("relay", child.pid);
  await child.waitForLine((l) => l["msg"] === "tidemark relay started", "the relay to start");
  return { child, metricsAddress: await metricsAddressOf(child) };
}

/**
 * Starts `tidemark consumer projection` on the benchmark's topic, with its own
 * consumer-group prefix, and waits until it logs that it started.
 */
export async function startProjectionProcess(stack: StackEnv, names: BenchNames, options: StartOptions): Promise<NodeChild> {
  const child = spawnNode(
    "projection",
    CLI_ENTRY,
    {
      ...baseEnv(stack, names),
      TIDEMARK_CONSUMER_TOPICS: names.topic,
      TIDEMARK_CONSUMER_GROUP_PREFIX: names.groupPrefix,
      TIDEMARK_DEAD_LETTER_TOPIC: names.deadLetterTopic,
      TIDEMARK_CONSUMER_FROM_BEGINNING: "true",
      ...options.env,
    },
    options.nodeArgs,
    ["consumer", "projection"],
  );
  options.memory.track("projection", child.pid);
  await child.waitForLine((l) => l["msg"] === "tidemark consumers running", "the projection to join its group");
  return child;
}

/**
 * The Tidemark processes a chaos run starts and the environment each gets: the same variables an
 * operator sets (docs/CONFIGURATION.md), with timings short enough for every recovery to fit in a
 * round.
 */
import type { PrivateStack } from "./private-stack.js";

/** One Tidemark process of a chaos run: its name, its `tidemark` arguments and the services it uses. */
export interface ProcessSpec {
  readonly name: string;
  readonly args: readonly string[];
  /** Services it uses; partitions are drawn from these links. */
  readonly partitionable: readonly ("pg" | "s3" | "kafka")[];
  readonly kafka: boolean;
}

/** The processes of a run: the server, a relay pair, the instances projection and the user handler. */
export const PROCESSES: readonly ProcessSpec[] = [
  { name: "server", args: ["server"], partitionable: ["pg", "s3"], kafka: false },
  { name: "relay-a", args: ["relay"], partitionable: ["pg", "s3", "kafka"], kafka: true },
  { name: "relay-b", args: ["relay"], partitionable: ["pg", "s3", "kafka"], kafka: true },
  { name: "projection", args: ["consumer", "projection"], partitionable: ["pg", "kafka"], kafka: true },
  { name: "handler", args: ["consumer", "./chaos/handler.ts"], partitionable: ["pg", "kafka"], kafka: true },
];

/** The storage settings of every process: PostgreSQL and S3 through `pgUrl` and the S3 port given (a link's). */
export function storageEnv(pgUrl: string, s3Port: number, s3: PrivateStack["s3"]): Record<string, string> {
  return {
    TIDEMARK_PG_URL: pgUrl,
    TIDEMARK_S3_ENDPOINT: `http://127.0.0.1:${s3Port}`,
    TIDEMARK_S3_BUCKET: s3.bucket,
    TIDEMARK_S3_REGION: s3.region,
    TIDEMARK_S3_ACCESS_KEY: s3.accessKey,
    TIDEMARK_S3_SECRET_KEY: s3.secretKey,
  };
}

/**
 * A process's own settings: short leases, deadlines and timeouts, so that every recovery fits in
 * a round (docs/CHAOS.md, "What runs"), and its gRPC, Kafka and metrics addresses.
 */
export function processEnv(spec: ProcessSpec, grpcPort: number, kafkaPort: number, metricsAddr: string): Record<string, string> {
  const common = { TIDEMARK_METRICS_ADDR: metricsAddr, TIDEMARK_LOG_LEVEL: "info", TIDEMARK_S3_REQUEST_TIMEOUT_MS: "2000" };
  if (spec.name === "server") {
    return {
      ...common,
      TIDEMARK_GRPC_ADDR: `127.0.0.1:${grpcPort}`,
      // W5 resolves within a round: abandoned reservations are settled after 3 s.
      TIDEMARK_WRITE_DEADLINE_MS: "3000",
      TIDEMARK_SWEEP_INTERVAL_MS: "1000",
      TIDEMARK_SHUTDOWN_GRACE_MS: "1000",
      // The checker re-reads every stream after every round; a warm cache spares S3 (events never change).
      TIDEMARK_EVENT_CACHE_SIZE: "200000",
      // The run judges storage under faults; tokens and TLS are tested in test/integration/security.test.ts.
      TIDEMARK_AUTH: "off",
    };
  }
  const kafka = { TIDEMARK_KAFKA_BROKERS: `127.0.0.1:${kafkaPort}` };
  // A hung step gives the lease up well inside the convergence bound (60 s without progress).
  if (spec.args[0] === "relay") return { ...common, ...kafka, TIDEMARK_RELAY_LEASE_MS: "3000", TIDEMARK_RELAY_STALL_MS: "10000", TIDEMARK_RELAY_PARTITIONS: "6" };
  return {
    ...common,
    ...kafka,
    TIDEMARK_CONSUMER_LEASE_SECONDS: "3",
    TIDEMARK_CONSUMER_HEARTBEAT_SECONDS: "1",
    TIDEMARK_KAFKA_SESSION_TIMEOUT_MS: "6000",
    TIDEMARK_CONSUMER_RETRY_BASE_MS: "200",
    TIDEMARK_CONSUMER_RETRY_MAX_MS: "2000",
  };
}


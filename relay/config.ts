/**
 * Configuration of the relay, parsed once from the environment, typed and frozen. PostgreSQL and
 * S3 settings use the same variables as the server, so one environment serves both processes.
 */
import { backendMode, ConfigError, KAFKA_SECURITY_SETTINGS, ORIGIN_SETTINGS, parse, parseSettings, PROCESS_SETTINGS, STORAGE_SETTINGS, type Setting } from "../core/index.js";
import { checkTopicName, parseRoutes, type Route } from "./topic-router.js";

const topic = (raw: string): string => {
  const problem = checkTopicName(raw);
  if (problem !== undefined) throw new Error(problem);
  return raw;
};

const brokers = (raw: string): string[] => {
  const list = parse.list(raw);
  if (list.length === 0) throw new Error("must name at least one broker (host:port)");
  return list.map(parse.hostPort);
};

/** The relay's own settings (beside the storage, process and origin settings it shares). */
export const RELAY_OWN_SETTINGS = {
  pgPoolSize: { env: "TIDEMARK_RELAY_PG_POOL_SIZE", default: 5, parse: parse.int(3, 1000), description: "Maximum PostgreSQL connections of the relay process (at least 3: reader, checkpoint, lease)." },
  kafkaBrokers: { env: "TIDEMARK_KAFKA_BROKERS", parse: brokers, description: "Kafka bootstrap brokers, comma-separated host:port." },
  kafkaClientId: { env: "TIDEMARK_KAFKA_CLIENT_ID", default: "tidemark-relay", parse: parse.string, description: "Kafka client id of the relay's producer and admin client." },
  topic: { env: "TIDEMARK_RELAY_TOPIC", default: "tidemark.events", parse: topic, description: "Default topic: every event no route matches goes here." },
  routes: { env: "TIDEMARK_RELAY_ROUTES", default: [] as Route[], defaultLabel: "none", parse: parseRoutes, description: "Ordered routing rules `match=topic`, comma-separated; match is an aggregate type, `kind:domain`/`kind:command`, or `Type+kind:K`; the first match wins (e.g. `kind:command=commands,Order=orders`)." },
  partitions: { env: "TIDEMARK_RELAY_PARTITIONS", default: 12, parse: parse.int(1, 10_000), description: "Partitions of each topic the relay creates (existing topics are left as they are)." },
  replication: { env: "TIDEMARK_RELAY_REPLICATION", default: 1, parse: parse.int(1, 32), description: "Replication factor of each topic the relay creates (use 3 on a production cluster)." },
  retentionMs: { env: "TIDEMARK_RELAY_RETENTION_MS", default: 604_800_000, parse: parse.int(-1), description: "`retention.ms` of the topics the relay creates (-1 keeps messages forever)." },
  deadLetterTopic: { env: "TIDEMARK_DEAD_LETTER_TOPIC", default: "tidemark.dead-letter", parse: topic, description: "Dead-letter topic, reserved and created by the relay for consumers (the relay never produces to it)." },
  leaseMs: { env: "TIDEMARK_RELAY_LEASE_MS", default: 10_000, parse: parse.int(3000, 600_000), description: "Lease of the active relay, on the database clock; a standby takes over within this time after the active one dies. Kafka request timeouts are derived from it (lease/10, connection lease/20)." },
  stallMs: { env: "TIDEMARK_RELAY_STALL_MS", default: 60_000, parse: parse.int(1000, 3_600_000), description: "Longest the active relay waits on one step of its term (a produce call, a checkpoint write, topic creation) before it stops renewing its lease, so a standby (or a new term here) takes over from a hung client call. Retries of a failing step are not a stall; each produce call also has its own deadline." },
  batchSize: { env: "TIDEMARK_RELAY_BATCH_SIZE", default: 500, parse: parse.int(1, 10_000), description: "Most events in one produce request (and one checkpoint step)." },
  readAheadBatches: { env: "TIDEMARK_RELAY_READ_AHEAD", default: 2, parse: parse.int(0, 64), description: "Batches read from S3 ahead of the one Kafka is acknowledging (bounds memory)." },
  readConcurrency: { env: "TIDEMARK_RELAY_READ_CONCURRENCY", default: 32, parse: parse.int(1, 1024), description: "Parallel S3 reads while preparing a batch." },
  pollMs: { env: "TIDEMARK_RELAY_POLL_MS", default: 1000, parse: parse.int(10, 600_000), description: "Longest wait for a commit notification before the relay looks anyway (the polling fallback)." },
  name: { env: "TIDEMARK_RELAY_NAME", default: "default", parse: parse.string, description: "Name of the relay: relays with one name share one lease and one checkpoint (one active, others standby)." },
  logIntervalMs: { env: "TIDEMARK_RELAY_LOG_INTERVAL_MS", default: 30_000, parse: parse.int(100, 3_600_000), description: "How often the relay logs its progress and lag (the lag metrics are refreshed every second)." },
  ...KAFKA_SECURITY_SETTINGS,
} satisfies Record<string, Setting<unknown>>;

/** Every setting the relay reads. */
export const RELAY_SETTINGS = { ...STORAGE_SETTINGS, ...RELAY_OWN_SETTINGS, ...PROCESS_SETTINGS, ...ORIGIN_SETTINGS } satisfies Record<string, Setting<unknown>>;

/** The relay's parsed configuration. */
export type RelayConfig = ReturnType<typeof loadRelayConfig>;

/** Parses the relay configuration; throws ConfigError naming every bad variable. */
export function loadRelayConfig(env: Readonly<Record<string, string | undefined>> = process.env) {
  const config = parseSettings(RELAY_SETTINGS, env);
  // The relay publishes to Kafka, so only the services mode has one.
  if (backendMode(config) !== "services") {
    throw new ConfigError(
      "invalid configuration:\n  the relay publishes to Kafka and needs TIDEMARK_PG_URL and TIDEMARK_S3_* (and TIDEMARK_KAFKA_BROKERS); with no services set, `tidemark start` plays the relay's role in process",
    );
  }
  return config;
}

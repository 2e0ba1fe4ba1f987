/**
 * Configuration of a consumer process, parsed once from the environment, typed and frozen. The
 * origin's variable names are accepted as aliases; the registry cannot be switched off.
 */
import { ConfigError, KAFKA_SECURITY_SETTINGS, ORIGIN_SETTINGS, parse, parseSettings, PROCESS_SETTINGS, STORAGE_SETTINGS, type Setting } from "../core/index.js";

/** Seconds (decimals allowed) as milliseconds, within bounds. */
const seconds =
  (min: number, max: number) =>
  (raw: string): number => {
    const n = Number(raw);
    if (!/^\d+(\.\d+)?$/.test(raw.trim()) || !Number.isFinite(n) || n < min || n > max) {
      throw new Error(`must be a number of seconds from ${min} to ${max}, got ${JSON.stringify(raw)}`);
    }
    return Math.round(n * 1000);
  };

/**
 * A consumer process's own settings (beside the storage, process and origin settings it shares).
 * Lease and heartbeat are in seconds, kept as milliseconds.
 */
export const CONSUMER_OWN_SETTINGS = {
  pgPoolSize: { env: "TIDEMARK_CONSUMER_PG_POOL_SIZE", default: 12, parse: parse.int(2, 1000), description: "Maximum PostgreSQL connections of the consumer process; keep it above the handler concurrency." },
  kafkaBrokers: { env: "TIDEMARK_KAFKA_BROKERS", default: [] as string[], defaultLabel: "*required* (unset: the embedded mode of `tidemark start`)", parse: parse.list, description: "Kafka bootstrap brokers, comma-separated host:port. In the embedded mode the consumers read the commit log in process instead." },
  kafkaClientId: { env: "TIDEMARK_KAFKA_CLIENT_ID", default: "tidemark-consumer", parse: parse.string, description: "Kafka client id of the consumer process." },
  topics: { env: "TIDEMARK_CONSUMER_TOPICS", default: ["tidemark.events"], parse: parse.list, description: "Topics the consumers subscribe to, comma-separated." },
  groupPrefix: { env: "TIDEMARK_CONSUMER_GROUP_PREFIX", default: "tidemark.", parse: parse.string, description: "Each handler consumes in the group `{prefix}{handler name}`." },
  fromBeginning: { env: "TIDEMARK_CONSUMER_FROM_BEGINNING", default: true, parse: parse.bool, description: "A new consumer group starts at the beginning of its topics (a projection must see every event)." },
  deadLetterTopic: { env: "TIDEMARK_DEAD_LETTER_TOPIC", default: "tidemark.dead-letter", parse: parse.string, description: "Topic receiving poison and exhausted events with their cause; created when missing." },
  deadLetterPartitions: { env: "TIDEMARK_DEAD_LETTER_PARTITIONS", default: 3, parse: parse.int(1, 10_000), description: "Partitions of the dead-letter topic when it is created." },
  deadLetterReplication: { env: "TIDEMARK_DEAD_LETTER_REPLICATION", default: 1, parse: parse.int(1, 32), description: "Replication factor of the dead-letter topic when it is created." },
  leaseMs: { env: "TIDEMARK_CONSUMER_LEASE_SECONDS", aliases: ["PROCESSED_EVENT_LEASE_TIMEOUT_SECONDS"], default: 30_000, defaultLabel: "`30`", parse: seconds(0.5, 3600), description: "Lease of a claim, in seconds: a crashed holder's event is taken over after at most this long." },
  heartbeatMs: { env: "TIDEMARK_CONSUMER_HEARTBEAT_SECONDS", aliases: ["PROCESSED_EVENT_HEARTBEAT_INTERVAL_SECONDS"], default: 10_000, defaultLabel: "`10`", parse: seconds(0.1, 3600), description: "How often a holder renews its lease, in seconds; must be below the lease." },
  maxAttempts: { env: "TIDEMARK_CONSUMER_MAX_ATTEMPTS", default: 10, parse: parse.int(1, 1000), description: "Attempts (retries and takeovers included) before an event is dead-lettered." },
  retryBaseMs: { env: "TIDEMARK_CONSUMER_RETRY_BASE_MS", default: 500, parse: parse.int(1, 3_600_000), description: "Backoff before the second attempt; doubles per attempt." },
  retryMaxMs: { env: "TIDEMARK_CONSUMER_RETRY_MAX_MS", default: 60_000, parse: parse.int(1, 86_400_000), description: "Upper bound of the retry backoff." },
  concurrency: { env: "TIDEMARK_CONSUMER_CONCURRENCY", default: 8, parse: parse.int(1, 1000), description: "Handler calls running at once per partition (different aggregates; one aggregate is always sequential)." },
  maxInFlight: { env: "TIDEMARK_CONSUMER_MAX_IN_FLIGHT", default: 1000, parse: parse.int(1, 1_000_000), description: "Messages of one partition held between fetch and commit; the partition pauses above it." },
  maxGroupSize: { env: "TIDEMARK_CONSUMER_GROUP_SIZE", default: 64, parse: parse.int(1, 10_000), description: "Most events one group of a handler with handleBatch (the instances projection) claims and applies in one transaction; 1 applies every event alone." },
  groupTimeoutMs: { env: "TIDEMARK_CONSUMER_GROUP_TIMEOUT_MS", default: 2000, parse: parse.int(1, 3_600_000), description: "A group still running after this long is rolled back and its events applied one by one, so one slow event holds the others of its group no longer than this." },
  replayPollMs: { env: "TIDEMARK_CONSUMER_REPLAY_POLL_MS", default: 500, parse: parse.int(10, 3_600_000), description: "How often each handler's consumer asks the registry for replays an operator requested (`tidemark dead-letters replay`), and refreshes the waiting-event counts." },
  partitionsConsumedConcurrently: { env: "TIDEMARK_CONSUMER_PARTITIONS_CONCURRENTLY", default: 4, parse: parse.int(1, 1000), description: "Partitions whose batches are dispatched at once." },
  sessionTimeoutMs: { env: "TIDEMARK_KAFKA_SESSION_TIMEOUT_MS", default: 30_000, parse: parse.int(6000, 300_000), description: "Kafka group session timeout: a dead consumer's partitions move after this long." },
  retentionMs: { env: "TIDEMARK_CONSUMER_RETENTION_HOURS", default: 7 * 24 * 3_600_000, defaultLabel: "`168` (7 days)", parse: (raw: string) => parse.int(1, 24 * 365 * 10)(raw) * 3_600_000, description: "Done registry rows older than this are pruned (watermarks stay)." },
  pruneIntervalMs: { env: "TIDEMARK_CONSUMER_PRUNE_INTERVAL_SECONDS", default: 600_000, defaultLabel: "`600`", parse: seconds(1, 86_400), description: "How often housekeeping prunes done rows (0 rows is cheap: an index range scan); it folds the registry's kept counts every 10 s whatever this is." },
  pruneBatchSize: { env: "TIDEMARK_CONSUMER_PRUNE_BATCH_SIZE", default: 1000, parse: parse.int(1, 100_000), description: "Rows deleted per housekeeping statement." },
  keyServer: { env: "TIDEMARK_CONSUMER_KEY_SERVER", default: "", defaultLabel: "unset (in `tidemark start`: the server in process)", parse: (raw: string) => (raw === "" ? raw : parse.hostPort(raw)), description: "host:port of a Tidemark server a consumer process asks for data subjects' keys (PrivacyService.GetSubjectKey) to open events that name a subject; it holds no master key (docs/SECURITY.md \"Erasure\")." },
  keyServerToken: { env: "TIDEMARK_CONSUMER_KEY_SERVER_TOKEN", default: "", defaultLabel: "unset", parse: parse.string, description: "Bearer token for TIDEMARK_CONSUMER_KEY_SERVER, with the read scope on the databases whose events the handlers open.", secret: true },
  keyServerCa: { env: "TIDEMARK_CONSUMER_KEY_SERVER_CA", default: "", defaultLabel: "unset (plain text)", parse: parse.string, description: "PEM file of the CA that signed the key server's certificate: talk TLS to it (keys cross the network, so use TLS off loopback)." },
  subjectKeyCacheMs: { env: "TIDEMARK_CONSUMER_SUBJECT_KEY_CACHE_MS", default: 2000, parse: parse.int(0, 600_000), description: "How long a consumer keeps a subject's key; after ForgetSubject its handlers see the subject's data at most this much longer." },
  ...KAFKA_SECURITY_SETTINGS,
} satisfies Record<string, Setting<unknown>>;

/** Every setting a consumer process reads. */
export const CONSUMER_SETTINGS = { ...STORAGE_SETTINGS, ...CONSUMER_OWN_SETTINGS, ...PROCESS_SETTINGS, ...ORIGIN_SETTINGS } satisfies Record<string, Setting<unknown>>;

/** A consumer process's parsed configuration. */
export type ConsumerConfig = ReturnType<typeof loadConsumerConfig>;

/**
 * Parses the consumer configuration; throws ConfigError naming every bad variable, and when the
 * heartbeat is not below the lease (a holder would lose its lease between two heartbeats).
 */
export function loadConsumerConfig(env: Readonly<Record<string, string | undefined>> = process.env) {
  const config = parseSettings(CONSUMER_SETTINGS, env);
  checkTiming(config);
  return config;
}

/**
 * Throws ConfigError naming each missing variable when a consumer must reach the real services
 * (PostgreSQL for the registry, Kafka for the events): a standalone consumer process, or any
 * consumer not given an in-process database and message source.
 */
export function requireServices(config: { readonly pgUrl: string; readonly kafkaBrokers: readonly string[] }, needs: { database: boolean; kafka: boolean } = { database: true, kafka: true }): void {
  const missing: string[] = [];
  if (needs.database && config.pgUrl === "") missing.push("TIDEMARK_PG_URL is required: the registry, the read model and the commit log live in PostgreSQL");
  if (needs.kafka && config.kafkaBrokers.length === 0) missing.push("TIDEMARK_KAFKA_BROKERS is required: a standalone consumer reads the events the relay publishes to Kafka");
  if (missing.length > 0) {
    throw new ConfigError(`invalid configuration:\n  ${missing.join("\n  ")}\n  (with no services at all, \`tidemark start\` runs the consumers in process on the embedded storage)`);
  }
}

/** Throws when the heartbeat is not below the lease; also used on configs built in code. */
export function checkTiming(config: { readonly leaseMs: number; readonly heartbeatMs: number }): void {
  if (config.heartbeatMs >= config.leaseMs) {
    throw new ConfigError(
      `invalid configuration: the heartbeat (${config.heartbeatMs / 1000} s, TIDEMARK_CONSUMER_HEARTBEAT_SECONDS) must be below the lease (${config.leaseMs / 1000} s, TIDEMARK_CONSUMER_LEASE_SECONDS)`,
    );
  }
}

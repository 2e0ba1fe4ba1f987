/**
 * The Kafka side of the relay, over kafkajs: an idempotent producer (acks=all) and topic creation.
 * kafkajs rolls an idempotent producer's sequence numbers back when a send fails, so the broker
 * would silently drop a *different* batch that reuses them; a producer therefore only ever retries
 * the identical batch, and is replaced before anything else is sent after an unacknowledged one.
 */
import { Partitioners, type Admin, type Kafka, type Producer } from "kafkajs";
import { createKafka, DeadlineExceededError, type KafkaSecurity, type Logger, withDeadline } from "../core/index.js";

/** A message routed to its topic. */
export interface RoutedMessage {
  readonly topic: string;
  readonly key: string;
  readonly value: string;
  readonly headers: Readonly<Record<string, string>>;
}

/** One produce request: `id` identifies it across retries (the same id must carry the same messages). */
export interface PublishBatch {
  readonly id: string;
  readonly messages: readonly RoutedMessage[];
}

/** What the relay needs from Kafka. */
export interface Publisher {
  /** Longest time one `publish` call can take before it settles, in ms (enforced: past it the call fails). */
  readonly maxSendMs: number;
  /** Resolves once Kafka acknowledged every message (acks=all); throws otherwise. */
  publish(batch: PublishBatch): Promise<void>;
  /** Disconnects the producer; the next publish connects a new one (a new producer id). */
  reset(): Promise<void>;
}

/** How topics are created. */
export interface TopicSpec {
  readonly topics: readonly string[];
  readonly partitions: number;
  readonly replication: number;
  readonly retentionMs: number;
}

/** Connection settings of the Kafka client. */
export interface KafkaSettings {
  readonly brokers: readonly string[];
  readonly clientId: string;
  /** Client-side timeout of one request (default 2 000). */
  readonly requestTimeoutMs?: number;
  /** Timeout of a TCP connection (default 1 000). */
  readonly connectionTimeoutMs?: number;
  /** TLS and SASL to the brokers. */
  readonly security?: KafkaSecurity;
}

// kafkajs retries inside one publish; kept short so a publish settles within maxSendMs, and the
// relay retries the same batch itself.
const PRODUCER_RETRY = { retries: 1, initialRetryTime: 100, maxRetryTime: 300 } as const;

/** Longest wait for a producer or admin client to disconnect; past it the client is left behind. */
const DISCONNECT_MS = 5000;

/** Longest one attempt at creating the topics may take (the relay retries a failed attempt). */
const TOPICS_DEADLINE_MS = 60_000;

/** Disconnects a kafkajs client within {@link DISCONNECT_MS}; rejects when it failed or hung. */
function disconnect(client: Producer | Admin): Promise<void> {
  return withDeadline(client.disconnect(), DISCONNECT_MS, "a Kafka client disconnect");
}

/** Producer errors after which the producer's id or sequence state is unusable: replace it. */
const PRODUCER_STATE_ERRORS = new Set([
  "OUT_OF_ORDER_SEQUENCE_NUMBER",
  "UNKNOWN_PRODUCER_ID",
  "INVALID_PRODUCER_EPOCH",
  "INVALID_PRODUCER_ID_MAPPING",
  "DUPLICATE_SEQUENCE_NUMBER",
  "PRODUCER_FENCED",
]);

/** The relay's kafkajs client: request timeouts enforced, kafkajs's own retries short (see PRODUCER_RETRY). */
export function createRelayKafka(settings: KafkaSettings, log: Logger): Kafka {
  return createKafka(
    {
      brokers: settings.brokers,
      clientId: settings.clientId,
      requestTimeoutMs: settings.requestTimeoutMs ?? 2000,
      connectionTimeoutMs: settings.connectionTimeoutMs ?? 1000,
      enforceRequestTimeout: true,
      retry: PRODUCER_RETRY,
      ...(settings.security === undefined ? {} : { security: settings.security }),
    },
    log,
  );
}

/** The relay's idempotent producer. */
export class KafkaPublisher implements Publisher {
  readonly maxSendMs: number;
  private producer: Producer | undefined;
  /** A producer whose connect is under way (given up, and disconnected, by a reset meanwhile). */
  private connecting: Producer | undefined;
  /** Id of the batch the current producer sent without an acknowledgement. */
  private unacknowledged: string | undefined;

  constructor(
    private readonly kafka: Kafka,
    private readonly settings: KafkaSettings,
    private readonly log: Logger,
  ) {
    const request = settings.requestTimeoutMs ?? 2000;
    const connect = settings.connectionTimeoutMs ?? 1000;
    // Each kafkajs attempt may connect, refresh metadata and produce; then its own short backoff.
    this.maxSendMs = (PRODUCER_RETRY.retries + 1) * (connect + 2 * request) + PRODUCER_RETRY.maxRetryTime;
  }

  async publish(batch: PublishBatch): Promise<void> {
    if (this.unacknowledged !== undefined && this.unacknowledged !== batch.id) await this.reset();
    try {
      // kafkajs bounds each request, yet a connect after a broker restart has hung for good: the
      // deadline turns that into a failure the relay retries, instead of a term that never ends.
      await withDeadline(this.send(batch), this.maxSendMs, "a produce call");
    } catch (e) {
      const type = errorType(e);
      if (e instanceof DeadlineExceededError) this.log.warn({ batch: batch.id, ms: e.ms }, "produce call hung past its deadline; replacing the producer");
      else if (type !== undefined && PRODUCER_STATE_ERRORS.has(type)) this.log.warn({ err: e, type }, "producer state rejected by the broker; replacing the producer");
      else throw e;
      await this.reset();
      throw e;
    }
    this.unacknowledged = undefined;
  }

  async reset(): Promise<void> {
    const producers = [this.producer, this.connecting].filter((p) => p !== undefined);
    this.producer = undefined;
    this.connecting = undefined;
    this.unacknowledged = undefined;
    await Promise.all(producers.map((p) => disconnect(p).catch((e: unknown) => this.log.debug({ err: e }, "producer disconnect failed"))));
  }

  private async send(batch: PublishBatch): Promise<void> {
    const producer = await this.connected();
    this.unacknowledged = batch.id;
    await producer.sendBatch({ acks: -1, timeout: this.settings.requestTimeoutMs ?? 2000, topicMessages: groupByTopic(batch.messages) });
  }

  private async connected(): Promise<Producer> {
    if (this.producer !== undefined) return this.producer;
    const producer = this.kafka.producer({
      idempotent: true,
      // kafkajs serialises idempotent requests per broker; one in flight keeps per-partition order.
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
      createPartitioner: Partitioners.DefaultPartitioner,
      retry: PRODUCER_RETRY,
    });
    this.connecting = producer;
    try {
      await producer.connect();
    } catch (e) {
      await disconnect(producer).catch(() => {});
      throw e;
    }
    // A connect that outlived its deadline was given up (reset ran): its producer is not used.
    if (this.connecting !== producer) {
      void disconnect(producer).catch(() => {});
      throw new Error("the producer connected after it was given up");
    }
    this.connecting = undefined;
    this.producer = producer;
    return producer;
  }
}

function groupByTopic(messages: readonly RoutedMessage[]) {
  const byTopic = new Map<string, Array<{ key: string; value: string; headers: Record<string, string> }>>();
  for (const m of messages) {
    let list = byTopic.get(m.topic);
    if (list === undefined) byTopic.set(m.topic, (list = []));
    list.push({ key: m.key, value: m.value, headers: { ...m.headers } });
  }
  return [...byTopic].map(([topic, msgs]) => ({ topic, messages: msgs }));
}

/** The kafkajs protocol error type (e.g. OUT_OF_ORDER_SEQUENCE_NUMBER) anywhere in the cause chain. */
export function errorType(e: unknown): string | undefined {
  let current = e;
  for (let depth = 0; depth < 8 && current !== null && typeof current === "object"; depth++) {
    const type = (current as { type?: unknown }).type;
    if (typeof type === "string") return type;
    current = (current as { cause?: unknown; originalError?: unknown }).cause ?? (current as { originalError?: unknown }).originalError;
  }
  return undefined;
}

/**
 * Creates the topics that are missing (partitions, replication, retention.ms); existing topics are
 * left alone, and a partition count other than the configured one is logged. Idempotent.
 */
export async function ensureTopics(kafka: Kafka, spec: TopicSpec, log: Logger): Promise<void> {
  const admin = kafka.admin();
  try {
    // Bounded as a whole, like a produce call: a hung admin call fails this attempt, the caller retries.
    await withDeadline(createMissing(admin, spec, log), TOPICS_DEADLINE_MS, "creating topics");
  } finally {
    await disconnect(admin).catch(() => {});
  }
}

async function createMissing(admin: Admin, spec: TopicSpec, log: Logger): Promise<void> {
  await admin.connect();
  const existing = new Set(await admin.listTopics());
  const missing = spec.topics.filter((t) => !existing.has(t));
  // Only missing topics are requested: with a mix, kafkajs skips waiting for the new leaders.
  const created = missing.length === 0 ? false : await admin.createTopics({
    waitForLeaders: true,
    topics: missing.map((topic) => ({
      topic,
      numPartitions: spec.partitions,
      replicationFactor: spec.replication,
      configEntries: [{ name: "retention.ms", value: String(spec.retentionMs) }],
    })),
  });
  const metadata = await admin.fetchTopicMetadata({ topics: [...spec.topics] });
  for (const t of metadata.topics) {
    if (t.partitions.length !== spec.partitions) {
      log.warn({ topic: t.name, partitions: t.partitions.length, configured: spec.partitions }, "existing topic has another partition count; left as it is");
    }
  }
  log.info({ topics: spec.topics, created: created ? missing : [] }, "topics ready");
}

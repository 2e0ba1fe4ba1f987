/**
 * Dead letters (docs/CONTRACT.md C3): a message that cannot be processed is copied unchanged (value and
 * headers, so it can be replayed), with headers naming the handler, the cause and where it came
 * from. With Kafka they go to the dead-letter topic, keyed by `{handler}/{event_id}` so all copies
 * of one event share a partition; in the embedded mode they are objects in the store.
 */
import type { Admin, IHeaders, Producer } from "kafkajs";
import { encodeKeySegment, type ObjectStore } from "../core/index.js";
import type { RawMessage } from "./decode.js";

/** Why an event was dead-lettered. */
export type DeadLetterReason = "poison" | "exhausted";

/** Headers a dead-letter message adds to the original ones. */
export const DEAD_LETTER_HEADERS = Object.freeze({
  handler: "dlq-handler",
  reason: "dlq-reason",
  cause: "dlq-cause",
  attempts: "dlq-attempts",
  eventId: "dlq-event-id",
  sourceTopic: "dlq-source-topic",
  sourcePartition: "dlq-source-partition",
  sourceOffset: "dlq-source-offset",
  failedAt: "dlq-failed-at",
});

/** What goes into one dead-letter message. */
export interface DeadLetter {
  readonly handler: string;
  readonly eventId: string;
  readonly reason: DeadLetterReason;
  /** The failure and its cause chain (see failures.ts describeFailure). */
  readonly cause: string;
  readonly attempts: number;
  readonly message: RawMessage;
}

/**
 * Where dead letters go. `publish` resolves once the letter is durable and throws when it cannot
 * be stored (the runtime then treats it as an outage and tries again); a letter may be published
 * more than once (a crash before the registry row says dead_lettered repeats it), never lost.
 */
export interface DeadLetterSink {
  /** For logs, e.g. "kafka topic tidemark.dead-letter". */
  readonly where: string;
  publish(letter: DeadLetter): Promise<void>;
}

/** Dead letters to `topic` through `producer` (acks=all). */
export function kafkaDeadLetters(producer: Producer, topic: string): DeadLetterSink {
  return { where: `kafka topic ${topic}`, publish: (letter) => publishDeadLetter(producer, topic, letter) };
}

/** Prefix of dead-letter objects in the embedded mode. */
export const DEAD_LETTER_PREFIX = "dead-letters";

/**
 * Dead letters as JSON objects in the object store (the embedded mode has no Kafka), at
 * `dead-letters/{handler}/{event_id}/{attempts}.json` (segments encoded like aggregate ids). The
 * body holds the same headers a Kafka dead letter carries, plus the original value as text. The
 * conditional create makes a repeated letter of the same attempt a no-op.
 */
export function storeDeadLetters(objects: ObjectStore): DeadLetterSink {
  return {
    where: `object store ${DEAD_LETTER_PREFIX}/`,
    async publish(letter) {
      const key = `${DEAD_LETTER_PREFIX}/${encodeKeySegment(letter.handler)}/${encodeKeySegment(letter.eventId)}/${String(letter.attempts).padStart(6, "0")}.json`;
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(deadLetterHeaders(letter))) headers[name] = headerString(value);
      const body = JSON.stringify({ headers, value: letter.message.value?.toString("utf8") ?? null }, null, 2);
      await objects.createIfAbsent(key, `${body}\n`, "application/json");
    },
  };
}

function headerString(value: IHeaders[string]): string {
  const first = Array.isArray(value) ? value[0] : value;
  if (first === undefined) return "";
  return typeof first === "string" ? first : first.toString("utf8");
}

/** The original headers plus the dead-letter headers. */
function deadLetterHeaders(letter: DeadLetter): IHeaders {
  const headers: IHeaders = {};
  for (const [name, value] of Object.entries(letter.message.headers ?? {})) {
    if (value !== undefined) headers[name] = value as IHeaders[string];
  }
  headers[DEAD_LETTER_HEADERS.handler] = letter.handler;
  headers[DEAD_LETTER_HEADERS.reason] = letter.reason;
  // Header values are bytes; keep the cause bounded so one message stays small.
  headers[DEAD_LETTER_HEADERS.cause] = letter.cause.slice(0, 4000);
  headers[DEAD_LETTER_HEADERS.attempts] = String(letter.attempts);
  headers[DEAD_LETTER_HEADERS.eventId] = letter.eventId;
  headers[DEAD_LETTER_HEADERS.sourceTopic] = letter.message.topic;
  headers[DEAD_LETTER_HEADERS.sourcePartition] = String(letter.message.partition);
  headers[DEAD_LETTER_HEADERS.sourceOffset] = letter.message.offset;
  headers[DEAD_LETTER_HEADERS.failedAt] = new Date().toISOString();
  return headers;
}

/** Produces one dead-letter message and waits for the broker's acknowledgement (acks=all). */
export async function publishDeadLetter(producer: Producer, topic: string, letter: DeadLetter): Promise<void> {
  const headers = deadLetterHeaders(letter);
  await producer.send({
    topic,
    acks: -1,
    messages: [{ key: `${letter.handler}/${letter.eventId}`, value: letter.message.value, headers }],
  });
}

/** Creates `topic` when it does not exist (topics are never auto-created in Tidemark). */
export async function ensureTopic(admin: Admin, topic: string, partitions: number, replicationFactor: number): Promise<void> {
  const existing = await admin.listTopics();
  if (existing.includes(topic)) return;
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: partitions, replicationFactor }], waitForLeaders: true });
  } catch (e) {
    // Another process created it between the listing and the creation.
    if ((e as { type?: string }).type !== "TOPIC_ALREADY_EXISTS" && !(await admin.listTopics()).includes(topic)) throw e;
  }
}

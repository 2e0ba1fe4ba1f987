/**
 * The dead-letter topic (CONTRACT.md C3): a message that cannot be processed is copied there
 * unchanged (value and headers, so it can be replayed), with headers naming the handler, the cause
 * and where it came from. Keyed by `{handler}/{event_id}`, so all copies of one event share a
 * partition.
 */
import type { Admin, IHeaders, Producer } from "kafkajs";
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

/** Produces one dead-letter message and waits for the broker's acknowledgement (acks=all). */
export async function publishDeadLetter(producer: Producer, topic: string, letter: DeadLetter): Promise<void> {
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

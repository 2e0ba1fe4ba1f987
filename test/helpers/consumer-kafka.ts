/**
 * Kafka helpers of consumer tests: topics, a producer that writes envelopes exactly as the relay
 * does (key, headers, protobuf JSON), a collector for the dead-letter topic, committed offsets, and
 * a small test relay that publishes what the server committed. Real broker, no mocks.
 */
import { Kafka, logLevel, type Admin, type Consumer, type Producer } from "kafkajs";
import { encodeEnvelope, ENVELOPE_CONTENT_TYPE, type EventEnvelope } from "../../core/envelope.js";
import { committedAfter } from "../../core/event-log.js";
import type { ObjectStore } from "../../core/object-store.js";
import { readCommittedEvent } from "../../core/commit-log-reader.js";
import type { Kysely } from "kysely";
import type { WriteSideTables } from "../../core/db/schema.js";
import { stackBrokers, uniqueId } from "./test-server.js";
import { waitFor } from "./wait-for.js";

/** A quiet kafkajs client on the stack's brokers. */
export function testKafka(clientId = "consumer-test"): Kafka {
  return new Kafka({
    clientId,
    brokers: stackBrokers(),
    logLevel: logLevel.NOTHING,
    retry: { initialRetryTime: 200, maxRetryTime: 2000, retries: 30 },
  });
}

/** Kafka pieces one test file uses; `close` disconnects them. */
export interface TestKafka {
  readonly kafka: Kafka;
  readonly admin: Admin;
  readonly producer: Producer;
  createTopic(topic: string, partitions?: number): Promise<void>;
  /** Produces envelopes like the relay: key = ordering_key or `{type}/{id}`, the R3 headers. */
  produce(topic: string, envelopes: readonly EventEnvelope[], partition?: number): Promise<void>;
  /** Produces a raw value (poison messages). */
  produceRaw(topic: string, key: string, value: string, headers?: Record<string, string>, partition?: number): Promise<void>;
  /** The committed offset of `groupId` on each partition of `topic` (-1 when none). */
  committed(groupId: string, topic: string): Promise<number[]>;
  close(): Promise<void>;
}

/**
 * Connects an admin client and an idempotent producer. `close` deletes the topics it created and
 * every topic whose name starts with `prefix` (dead-letter topics the consumers created).
 */
export async function openTestKafka(prefix?: string): Promise<TestKafka> {
  const kafka = testKafka();
  const admin = kafka.admin();
  await admin.connect();
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
  await producer.connect();
  const topics: string[] = [];
  // A topic created a moment ago may not be served by the broker yet; that error is transient.
  const sendWithRetry = async (record: Parameters<Producer["send"]>[0]) => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await producer.send(record);
      } catch (e) {
        if (attempt >= 10 || !/does not host this topic-partition|leader/i.test((e as Error).message)) throw e;
        await new Promise((r) => setTimeout(r, 100 * attempt));
      }
    }
  };
  return {
    kafka,
    admin,
    producer,
    async createTopic(topic, partitions = 1) {
      await admin.createTopics({ topics: [{ topic, numPartitions: partitions, replicationFactor: 1 }], waitForLeaders: true });
      topics.push(topic);
      await waitFor(async () => {
        const { topics: [meta] } = await admin.fetchTopicMetadata({ topics: [topic] });
        return meta?.partitions.length === partitions && meta.partitions.every((p) => p.leader >= 0);
      }, { what: `topic ${topic} to have leaders` });
    },
    async produce(topic, envelopes, partition) {
      await sendWithRetry({
        topic,
        acks: -1,
        messages: envelopes.map((e) => ({
          key: e.metadata["ordering_key"] ?? `${e.aggregateType}/${e.aggregateId}`,
          value: encodeEnvelope(e),
          ...(partition === undefined ? {} : { partition }),
          headers: {
            event_id: e.eventId,
            event_type: e.eventType,
            aggregate_type: e.aggregateType,
            aggregate_id: e.aggregateId,
            sequence_number: String(e.sequenceNumber),
            "content-type": ENVELOPE_CONTENT_TYPE,
          },
        })),
      });
    },
    async produceRaw(topic, key, value, headers = {}, partition) {
      await sendWithRetry({ topic, acks: -1, messages: [{ key, value, headers, ...(partition === undefined ? {} : { partition }) }] });
    },
    async committed(groupId, topic) {
      const [offsets] = await admin.fetchOffsets({ groupId, topics: [topic] });
      return (offsets?.partitions ?? []).sort((a, b) => a.partition - b.partition).map((p) => Number(p.offset));
    },
    async close() {
      await producer.disconnect().catch(() => {});
      const owned = prefix === undefined ? [] : (await admin.listTopics().catch(() => [] as string[])).filter((t) => t.startsWith(prefix));
      const all = [...new Set([...topics, ...owned])];
      if (all.length > 0) await admin.deleteTopics({ topics: all, timeout: 10_000 }).catch(() => {});
      await admin.disconnect().catch(() => {});
    },
  };
}

/** One message of a collected topic. */
export interface CollectedMessage {
  readonly key: string;
  readonly value: string;
  readonly headers: Readonly<Record<string, string>>;
}

/** Collects every message of `topic` from the beginning in a fresh consumer group. */
export async function collectTopic(kafka: Kafka, topic: string): Promise<{ messages: CollectedMessage[]; waitFor(n: number, what: string): Promise<void>; close(): Promise<void> }> {
  const consumer: Consumer = kafka.consumer({ groupId: uniqueId("collect-"), maxWaitTimeInMs: 100 });
  const messages: CollectedMessage[] = [];
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message }) => {
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(message.headers ?? {})) if (v !== undefined) headers[k] = String(v);
      messages.push({ key: message.key?.toString("utf8") ?? "", value: message.value?.toString("utf8") ?? "", headers });
    },
  });
  return {
    messages,
    waitFor: (n, what) => waitFor(() => messages.length >= n, { timeoutMs: 30_000, what }).then(() => undefined),
    close: () => consumer.disconnect(),
  };
}

/**
 * A minimal relay for tests: publishes the server's committed events after `after` (commit log +
 * S3, global_position set) to `topic`, like relay/ does. Returns the last position published.
 */
export async function publishCommitted(db: Kysely<WriteSideTables>, objects: ObjectStore, tk: TestKafka, topic: string, after: number): Promise<number> {
  let position = after;
  for (;;) {
    const slots = await committedAfter(db, position, 500);
    if (slots.length === 0) return position;
    const envelopes: EventEnvelope[] = [];
    for (const slot of slots) {
      envelopes.push((await readCommittedEvent(objects, slot)).envelope);
    }
    await tk.produce(topic, envelopes);
    position = slots[slots.length - 1]!.globalPosition!;
  }
}

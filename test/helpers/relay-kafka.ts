/**
 * Kafka helpers for relay tests: a consumer (its own consumer group) that collects every message of
 * some topics from the beginning, and topic clean-up. Real broker, no mocks.
 */
import { Kafka, logLevel, type Consumer } from "kafkajs";
import { waitFor } from "./wait-for.js";
import { uniqueId } from "./test-server.js";

/** One consumed message, decoded. */
export interface Collected {
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
  readonly key: string;
  readonly value: string;
  readonly headers: Readonly<Record<string, string>>;
  /** The envelope JSON (proto field names). */
  readonly envelope: Record<string, any>;
  readonly eventId: string;
  readonly position: number;
}

/** A running collector. */
export interface Collector {
  readonly messages: Collected[];
  /** Waits until `check(messages)` holds. */
  waitUntil(check: (messages: readonly Collected[]) => boolean, what: string, timeoutMs?: number): Promise<void>;
  /** Waits until every event id in `ids` was received at least once. */
  waitForEvents(ids: Iterable<string>, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

function testKafka(brokers: readonly string[]): Kafka {
  return new Kafka({
    clientId: "relay-test",
    brokers: [...brokers],
    logLevel: logLevel.NOTHING,
    // Survives a broker restart in the outage test (and in parallel test files) without crashing.
    retry: { initialRetryTime: 200, maxRetryTime: 2000, retries: 60 },
  });
}

/** Subscribes a fresh consumer group to `topics` from the beginning and collects every message. */
export async function startCollector(brokers: readonly string[], topics: readonly string[]): Promise<Collector> {
  const kafka = testKafka(brokers);
  const consumer: Consumer = kafka.consumer({ groupId: uniqueId("relay-test-"), maxWaitTimeInMs: 100, retry: { initialRetryTime: 200, maxRetryTime: 2000, retries: 60 } });
  const messages: Collected[] = [];
  await consumer.connect();
  await consumer.subscribe({ topics: [...topics], fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ topic, partition, message }) => {
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(message.headers ?? {})) if (v !== undefined) headers[k] = String(v);
      const value = message.value?.toString("utf8") ?? "";
      const envelope = JSON.parse(value) as Record<string, any>;
      messages.push({
        topic,
        partition,
        offset: Number(message.offset),
        key: message.key?.toString("utf8") ?? "",
        value,
        headers,
        envelope,
        eventId: String(envelope["event_id"]),
        position: Number(envelope["global_position"]),
      });
    },
  });
  return {
    messages,
    async waitUntil(check, what, timeoutMs = 60_000) {
      await waitFor(() => check(messages), { timeoutMs, intervalMs: 50, what });
    },
    async waitForEvents(ids, timeoutMs = 60_000) {
      const wanted = new Set(ids);
      await waitFor(
        () => {
          const seen = new Set(messages.map((m) => m.eventId));
          for (const id of wanted) if (!seen.has(id)) return false;
          return true;
        },
        { timeoutMs, intervalMs: 50, what: `${wanted.size} events on Kafka` },
      );
    },
    async close() {
      await consumer.disconnect().catch(() => {});
    },
  };
}

/** Deletes test topics (best effort). */
export async function deleteTopics(brokers: readonly string[], topics: readonly string[]): Promise<void> {
  const admin = testKafka(brokers).admin();
  try {
    await admin.connect();
    const existing = new Set(await admin.listTopics());
    const mine = topics.filter((t) => existing.has(t));
    if (mine.length > 0) await admin.deleteTopics({ topics: mine, timeout: 10_000 });
  } catch {
    // Clean-up only: a broker that is down leaves the topics behind.
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

/** Partitions and retention.ms of a topic as the broker reports them. */
export async function describeTopic(brokers: readonly string[], topic: string): Promise<{ partitions: number; retentionMs: string | undefined }> {
  const admin = testKafka(brokers).admin();
  await admin.connect();
  try {
    const meta = await admin.fetchTopicMetadata({ topics: [topic] });
    const configs = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: 2, name: topic, configNames: ["retention.ms"] }] });
    const retention = configs.resources[0]?.configEntries.find((e) => e.configName === "retention.ms")?.configValue;
    return { partitions: meta.topics[0]!.partitions.length, retentionMs: retention };
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

/** Messages grouped by event id: how many copies of each event Kafka holds. */
export function copiesByEvent(messages: readonly Collected[]): Map<string, Collected[]> {
  const out = new Map<string, Collected[]>();
  for (const m of messages) {
    const list = out.get(m.eventId);
    if (list === undefined) out.set(m.eventId, [m]);
    else list.push(m);
  }
  return out;
}

/**
 * Checks per-key order (docs/CONTRACT.md R2) as a consumer sees it: within each partition, in offset
 * order, the first copy of each event of a key comes after every earlier event of that key
 * (higher global position); later copies are duplicates. Returns the violations found.
 */
export function orderViolations(messages: readonly Collected[]): string[] {
  const violations: string[] = [];
  const partitionsOfKey = new Map<string, Set<string>>();
  const byPartition = new Map<string, Collected[]>();
  for (const m of messages) {
    const p = `${m.topic}/${m.partition}`;
    (byPartition.get(p) ?? byPartition.set(p, []).get(p)!).push(m);
    const keyTopic = `${m.topic}|${m.key}`;
    (partitionsOfKey.get(keyTopic) ?? partitionsOfKey.set(keyTopic, new Set()).get(keyTopic)!).add(p);
  }
  for (const [key, partitions] of partitionsOfKey) if (partitions.size > 1) violations.push(`key ${key} spans partitions ${[...partitions].join(",")}`);
  for (const [p, list] of byPartition) {
    list.sort((a, b) => a.offset - b.offset);
    const lastPositionOfKey = new Map<string, number>();
    const seen = new Set<string>();
    for (const m of list) {
      if (seen.has(m.eventId)) continue;
      seen.add(m.eventId);
      const last = lastPositionOfKey.get(m.key) ?? 0;
      if (m.position <= last) violations.push(`${p} offset ${m.offset}: key ${m.key} position ${m.position} after ${last}`);
      lastPositionOfKey.set(m.key, Math.max(last, m.position));
    }
  }
  return violations;
}

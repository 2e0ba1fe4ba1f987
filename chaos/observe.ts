/**
 * Reads what a user can read, for the checker: every stream through gRPC (GetStreamHead,
 * ReadStream), the bucket (list and get), the event topic from its beginning (a kafkajs consumer
 * of its own), the dead-letter topic's size, the effect log, and the instances' read model
 * (EVENTUAL reads). Nothing of Tidemark's code and no table of Tidemark's.
 */
import type { S3Client } from "@aws-sdk/client-s3";
import type { Kafka } from "kafkajs";
import type pg from "pg";
import { EventStoreService } from "../gen/tidemark/v1/event_store_pb.js";
import { InstanceService, ReadConsistency } from "../gen/tidemark/v1/instance_pb.js";
import { readSlotObjects, type SlotObject } from "./bucket.js";
import type { InstanceObservation, KafkaRecord, StreamObservation } from "./checker.js";
import { readEffects, type EffectRow } from "./effects.js";
import { delay } from "./child.js";
import { codeOf, grpc, type GrpcClient } from "./grpc-client.js";
import { mapLimit } from "./map-limit.js";

/** Where to read. */
export interface ObserveSources {
  readonly client: GrpcClient;
  readonly s3: S3Client;
  readonly bucket: string;
  readonly kafka: Kafka;
  readonly topic: string;
  readonly deadLetterTopic: string;
  readonly db: pg.Pool;
  /** GETs of earlier rounds (objects never change, W2; a changed ETag is fetched again). */
  readonly objectCache: Map<string, SlotObject[]>;
}

/** What was read. */
export interface Observed {
  readonly streams: StreamObservation[];
  readonly objects: SlotObject[];
  readonly kafka: KafkaRecord[];
  readonly deadLetters: number;
  readonly effects: EffectRow[];
  readonly instances: InstanceObservation[];
}

/** Reads everything; `aggregates` are the streams the clients wrote, to which the bucket's are added. */
export async function observe(sources: ObserveSources, aggregates: readonly { type: string; id: string }[]): Promise<Observed> {
  const objects = await readSlotObjects(sources.s3, sources.bucket, sources.objectCache);
  const all = new Map(aggregates.map((a) => [`${a.type}\u0000${a.id}`, a]));
  for (const o of objects) if (o.slot !== undefined) all.set(`${o.slot.aggregateType}\u0000${o.slot.aggregateId}`, { type: o.slot.aggregateType, id: o.slot.aggregateId });
  const streams = await mapLimit([...all.values()], 8, (a) => persist(() => readStream(sources.client, a.type, a.id)));
  const instances = await mapLimit(
    streams.filter((s) => s.aggregateType === "Instance" && s.events.length > 0),
    8,
    (s) => persist(() => readModelVersion(sources.client, s.aggregateId)),
  );
  const [kafka, deadLetters, effects] = await Promise.all([readTopic(sources.kafka, sources.topic), topicSize(sources.kafka, sources.deadLetterTopic), readEffects(sources.db)]);
  return { streams, objects, kafka, deadLetters, effects, instances };
}

/**
 * Retries a read the server could not answer yet (a server restarted after a round that did not
 * converge may still be starting): UNAVAILABLE and DEADLINE_EXCEEDED, for up to two minutes.
 */
async function persist<T>(read: () => Promise<T>): Promise<T> {
  const until = Date.now() + 120_000;
  for (;;) {
    try {
      return await read();
    } catch (e) {
      const code = codeOf(e);
      if ((code !== grpc.status.UNAVAILABLE && code !== grpc.status.DEADLINE_EXCEEDED) || Date.now() > until) throw e;
      await delay(500);
    }
  }
}

async function readStream(client: GrpcClient, type: string, id: string): Promise<StreamObservation> {
  const request = { aggregateType: type, aggregateId: id };
  try {
    const head = await client.unary(EventStoreService.method.getStreamHead, request, 30_000);
    const messages = await client.collect(EventStoreService.method.readStream, request, 120_000);
    return {
      aggregateType: type,
      aggregateId: id,
      head: Number(head.head),
      allocated: Number(head.allocated),
      events: messages.map(({ event }) => ({
        eventId: event!.eventId,
        eventType: event!.eventType,
        seq: Number(event!.sequenceNumber),
        position: Number(event!.globalPosition),
        commandId: event!.metadata["command_id"],
      })),
    };
  } catch (e) {
    if (codeOf(e) === grpc.status.NOT_FOUND) return { aggregateType: type, aggregateId: id, head: 0, allocated: 0, events: [] };
    throw e;
  }
}

async function readModelVersion(client: GrpcClient, aggregateId: string): Promise<InstanceObservation> {
  const [database, className, instanceId] = splitInstanceId(aggregateId);
  try {
    const out = await client.unary(InstanceService.method.getInstance, { database, className, instanceId, consistency: ReadConsistency.EVENTUAL }, 30_000);
    return { aggregateId, eventualVersion: Number(out.instance!.version) };
  } catch (e) {
    if (codeOf(e) === grpc.status.NOT_FOUND) return { aggregateId, eventualVersion: undefined };
    throw e;
  }
}

function splitInstanceId(aggregateId: string): [string, string, string] {
  const [database = "", className = "", ...rest] = aggregateId.split("/");
  return [database, className, rest.join("/")];
}

/** Every message of `topic` from the beginning to the end offsets seen at the start (none when it does not exist). */
export async function readTopic(kafka: Kafka, topic: string): Promise<KafkaRecord[]> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const topics = await admin.listTopics();
    if (!topics.includes(topic)) return [];
    const ends = await admin.fetchTopicOffsets(topic);
    const remaining = new Map(ends.filter((p) => Number(p.high) > Number(p.low)).map((p) => [p.partition, Number(p.high)]));
    const out: KafkaRecord[] = [];
    if (remaining.size === 0) return out;
    const groupId = `chaos-checker-${Date.now()}-${Math.floor(Math.random() * 1e9)}`;
    const consumer = kafka.consumer({ groupId, sessionTimeout: 10_000, maxBytes: 32 * 1024 * 1024 });
    await consumer.connect();
    try {
      await consumer.subscribe({ topic, fromBeginning: true });
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`reading ${topic} timed out; partitions left: ${[...remaining.keys()].join(",")}`)), 180_000);
        consumer
          .run({
            autoCommit: false,
            eachBatch: async ({ batch }) => {
              for (const m of batch.messages) {
                const offset = Number(m.offset);
                const v = decodeValue(m.value);
                out.push({ partition: batch.partition, offset, ...v });
                if (offset + 1 >= (remaining.get(batch.partition) ?? Infinity)) remaining.delete(batch.partition);
              }
              if (remaining.size === 0) {
                clearTimeout(timer);
                resolve();
              }
            },
          })
          .catch(reject);
      });
    } finally {
      await consumer.disconnect();
      await admin.deleteGroups([groupId]).catch(() => {});
    }
    return out;
  } finally {
    await admin.disconnect();
  }
}

function decodeValue(value: Buffer | null): Omit<KafkaRecord, "partition" | "offset"> {
  try {
    const o = JSON.parse(value?.toString("utf8") ?? "") as Record<string, unknown>;
    return { eventId: String(o["event_id"] ?? ""), aggregateType: String(o["aggregate_type"] ?? ""), aggregateId: String(o["aggregate_id"] ?? ""), seq: Number(o["sequence_number"] ?? 0) };
  } catch {
    return { eventId: "", aggregateType: "", aggregateId: "", seq: 0 };
  }
}

/** Messages held by `topic` (0 when it does not exist). */
export async function topicSize(kafka: Kafka, topic: string): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    if (!(await admin.listTopics()).includes(topic)) return 0;
    return (await admin.fetchTopicOffsets(topic)).reduce((n, p) => n + Number(p.high) - Number(p.low), 0);
  } finally {
    await admin.disconnect();
  }
}

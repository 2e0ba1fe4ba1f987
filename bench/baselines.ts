/**
 * The floors: the same work each part of Tidemark does, without Tidemark. A raw conditional-create
 * PUT of the same bytes (core/s3-object-store.ts, the adapter the server uses), the allocation
 * transaction of reserveSlots written out by hand, a kafkajs produce with the relay's settings, and
 * a trivial unary gRPC call to the same server process.
 */
import { randomUUID } from "node:crypto";
import { Partitioners, type Kafka, type Producer } from "kafkajs";
import { sql, type Kysely } from "kysely";
import type { S3ObjectStore, WriteSideTables } from "../core/index.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { createClient } from "../server/index.js";
import { closedLoop, type LoadResult } from "./load.js";
import { BENCH_AGGREGATE_TYPE, BENCH_EVENT_TYPE, envelopeBody, ENVELOPE_CONTENT_TYPE } from "./workload.js";

/** Raw `PUT If-None-Match: *` of envelope-sized JSON at `concurrency`; each key is new. */
export async function s3PutBaseline(store: S3ObjectStore, concurrency: number, durationMs: number, warmupMs: number): Promise<LoadResult> {
  const run = randomUUID().slice(0, 8);
  const body = envelopeBody("raw-put", 1);
  return closedLoop({
    concurrency,
    durationMs,
    warmupMs,
    op: async (worker, i) => {
      const outcome = await store.createIfAbsent(`raw/${run}/${worker}/${String(i).padStart(20, "0")}.json`, body, ENVELOPE_CONTENT_TYPE);
      if (outcome !== "created") throw new Error("raw PUT found an existing key");
    },
  });
}

/**
 * Raw GETs of existing objects at `concurrency` (the relay reads every event's object before it
 * produces it): `keys` are cycled. Units are objects.
 */
export async function s3GetBaseline(store: S3ObjectStore, keys: readonly string[], concurrency: number, durationMs: number, warmupMs: number): Promise<LoadResult> {
  if (keys.length === 0) throw new Error("no objects to read");
  let next = 0;
  return closedLoop({
    concurrency,
    durationMs,
    warmupMs,
    op: async () => {
      const body = await store.get(keys[next++ % keys.length]!);
      if (body === undefined) throw new Error("raw GET found no object");
    },
  });
}

/**
 * The allocation transaction of core/event-log.ts reserveSlots, by hand: upsert-and-lock the head
 * row, look the event ids up, advance the head, insert the pending row (BEGIN + 4 statements +
 * COMMIT). One stream per worker with an exact expectation, as in P1's many-aggregates case.
 */
export async function pgAllocBaseline(db: Kysely<WriteSideTables>, concurrency: number, durationMs: number, warmupMs: number): Promise<LoadResult> {
  const run = randomUUID().slice(0, 8);
  const heads = new Array<number>(concurrency).fill(0);
  return closedLoop({
    concurrency,
    durationMs,
    warmupMs,
    op: async (worker) => {
      const aggregateId = `pg-${run}-${worker}`;
      const eventId = randomUUID();
      await db.transaction().execute(async (trx) => {
        const locked = await trx
          .insertInto("stream_heads")
          .values({ aggregate_type: BENCH_AGGREGATE_TYPE, aggregate_id: aggregateId, head: 0 })
          .onConflict((oc) => oc.columns(["aggregate_type", "aggregate_id"]).doUpdateSet({ head: sql`stream_heads.head` }))
          .returning("head")
          .executeTakeFirstOrThrow();
        const found = await trx.selectFrom("event_log").select(["log_id", "content_hash"]).where("event_id", "in", [eventId]).where("state", "<>", "void").execute();
        if (found.length > 0 || locked.head !== heads[worker]) throw new Error("unexpected head in the PostgreSQL baseline");
        const next = locked.head + 1;
        await trx
          .updateTable("stream_heads")
          .set({ head: next, updated_at: sql`now()` })
          .where("aggregate_type", "=", BENCH_AGGREGATE_TYPE)
          .where("aggregate_id", "=", aggregateId)
          .execute();
        await trx
          .insertInto("event_log")
          .values({
            event_id: eventId,
            aggregate_type: BENCH_AGGREGATE_TYPE,
            aggregate_id: aggregateId,
            seq: next,
            event_type: BENCH_EVENT_TYPE,
            content_hash: "0".repeat(64),
            ordering_key: null,
            batch_first_seq: next,
            batch_last_seq: next,
            state: "pending",
          })
          .returning(["log_id", "seq", "state"])
          .execute();
        heads[worker] = next;
      });
    },
  });
}

/**
 * kafkajs produce with the relay's settings (relay/kafka-publisher.ts: idempotent, acks=all, one
 * request in flight) and its batch size: one `sendBatch` of `batchSize` envelope-sized messages at
 * a time, keyed by aggregate over the topic's partitions. Units are messages; latency is per batch.
 */
export async function kafkaProduceBaseline(kafka: Kafka, topic: string, batchSize: number, durationMs: number, warmupMs: number): Promise<LoadResult> {
  const producer: Producer = kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: false,
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  await producer.connect();
  const value = envelopeBody("raw-produce", 1);
  let n = 0;
  try {
    return await closedLoop({
      concurrency: 1,
      durationMs,
      warmupMs,
      op: async () => {
        const messages = Array.from({ length: batchSize }, () => {
          n += 1;
          const aggregateId = `kafka-${n % 997}`;
          return {
            key: `${BENCH_AGGREGATE_TYPE}/${aggregateId}`,
            value,
            headers: {
              event_id: randomUUID(),
              event_type: BENCH_EVENT_TYPE,
              aggregate_type: BENCH_AGGREGATE_TYPE,
              aggregate_id: aggregateId,
              sequence_number: String(n),
              global_position: String(n),
              "content-type": ENVELOPE_CONTENT_TYPE,
            },
          };
        });
        await producer.sendBatch({ acks: -1, timeout: 10_000, topicMessages: [{ topic, messages }] });
        return batchSize;
      },
    });
  } finally {
    await producer.disconnect().catch(() => {});
  }
}

/** The standard health Check of the server under test: gRPC transport and framing, no work. */
export async function grpcBaseline(address: string, concurrency: number, durationMs: number, warmupMs: number): Promise<LoadResult> {
  const client = createClient(Health, address);
  try {
    return await closedLoop({ concurrency, durationMs, warmupMs, op: async () => void (await client.check({ service: "" })) });
  } finally {
    client.close();
  }
}

/**
 * Relay benchmark against the local stack: throughput (a backlog of events published from scratch)
 * and commit → Kafka acknowledgement latency under a steady append rate. Uses its own schema,
 * bucket and topic, and removes the schema and topic afterwards.
 *
 *   eval "$(bash scripts/stack.sh env)"
 *   node --import tsx bench/relay-bench.ts [backlog events, default 10000] [steady rate/s, default 200] [seconds, default 15]
 */
import { randomBytes } from "node:crypto";
import { sql } from "kysely";
import { Kafka, logLevel } from "kafkajs";
import { createLogger } from "../core/index.js";
import { loadRelayConfig, type ReadBatch, type RelayHandle, startRelay } from "../relay/index.js";
import { createClient, loadServerConfig, startServer } from "../server/index.js";
import { EventStoreService } from "../gen/tidemark/v1/event_store_pb.js";

const backlog = Number(process.argv[2] ?? 10_000);
const rate = Number(process.argv[3] ?? 200);
const seconds = Number(process.argv[4] ?? 15);
const id = `bench${randomBytes(4).toString("hex")}`;
const topic = `tm.${id}.events`;
const env = { TIDEMARK_AUTH: "off", ...process.env, TIDEMARK_PG_SCHEMA: id, TIDEMARK_S3_BUCKET: `tm-${id}`, TIDEMARK_GRPC_ADDR: "127.0.0.1:0", TIDEMARK_LOG_LEVEL: "warn" };
const relayEnv = { ...env, TIDEMARK_RELAY_TOPIC: topic, TIDEMARK_DEAD_LETTER_TOPIC: `${topic}.dl`, TIDEMARK_RELAY_PARTITIONS: "6" };
const log = createLogger("bench", "warn");

const server = await startServer(loadServerConfig(env), { log });
const client = createClient(EventStoreService, server.address);
const latencies: number[] = [];
const readLatencies: number[] = [];
const produceTimes: number[] = [];
const readAt = new WeakMap<ReadBatch, number>();
let measuring = false;
let clockOffsetMs = 0;
const hooks = {
  afterRead: (batch: ReadBatch) => {
    readAt.set(batch, Date.now() + clockOffsetMs);
  },
  afterProduce: (batch: ReadBatch) => {
    if (!measuring) return;
    const ackedAt = Date.now() + clockOffsetMs;
    const read = readAt.get(batch) ?? ackedAt;
    produceTimes.push(ackedAt - read);
    for (const m of batch.messages) {
      latencies.push(ackedAt - m.committedAt.getTime());
      readLatencies.push(read - m.committedAt.getTime());
    }
  },
};

async function head(): Promise<number> {
  return (await server.database.db.selectFrom("global_counter").select("position").executeTakeFirstOrThrow()).position;
}
async function waitCaughtUp(relay: RelayHandle, target: number): Promise<void> {
  while (relay.status().checkpoint < target) await new Promise((r) => setTimeout(r, 5));
}
let n = 0;
const append = (events: number) =>
  client.appendEvents({
    aggregateType: "Bench",
    aggregateId: `a${n % 97}`,
    expectation: { case: "any", value: {} },
    events: Array.from({ length: events }, () => ({ eventId: `e${n++}`, eventType: "Measured", data: { n, payload: "x".repeat(200) } as never })),
  });

try {
  // 1. Backlog: written with the relay stopped, then published from scratch.
  const writers = 8;
  await Promise.all(Array.from({ length: writers }, async () => {
    for (let i = 0; i < backlog / writers / 10; i++) await append(10);
  }));
  const target = await head();
  const started = performance.now();
  const relay = await startRelay(loadRelayConfig(relayEnv), { log, hooks });
  await waitCaughtUp(relay, target);
  const elapsed = (performance.now() - started) / 1000;
  console.log(`throughput: ${target} events in ${elapsed.toFixed(2)} s (incl. lease + topic creation) = ${Math.round(target / elapsed)} events/s`);

  // 2. Steady load: single-event appends at `rate`/s from 8 concurrent callers.
  const offset = await sql<{ now: Date }>`select clock_timestamp() as now`.execute(server.database.db);
  clockOffsetMs = offset.rows[0]!.now.getTime() - Date.now();
  measuring = true;
  const end = Date.now() + seconds * 1000;
  const interval = 1000 / rate;
  let next = Date.now();
  const inFlight = new Set<Promise<unknown>>();
  while (Date.now() < end) {
    next += interval;
    const p = append(1).finally(() => inFlight.delete(p));
    inFlight.add(p);
    if (inFlight.size >= 8) await Promise.race(inFlight);
    const wait = next - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  await Promise.all(inFlight);
  await waitCaughtUp(relay, await head());
  measuring = false;
  const q = (list: number[], p: number) => {
    const sorted = [...list].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
  };
  const summary = (list: number[]) => `p50 ${q(list, 0.5)} ms, p90 ${q(list, 0.9)} ms, p99 ${q(list, 0.99)} ms, max ${q(list, 1)} ms`;
  console.log(`latency commit -> Kafka ack over ${latencies.length} events (${Math.round(latencies.length / seconds)}/s achieved, ${rate}/s asked): ${summary(latencies)}`);
  console.log(`  of which commit -> batch read from log and S3: ${summary(readLatencies)}`);
  console.log(`  of which produce (read -> ack), per batch of ${produceTimes.length}: ${summary(produceTimes)}`);
  await relay.stop();
} finally {
  client.close();
  await server.stop(1000);
  const admin = new Kafka({ clientId: "bench", brokers: loadRelayConfig(relayEnv).kafkaBrokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  await admin.deleteTopics({ topics: [topic, `${topic}.dl`] }).catch(() => {});
  await admin.disconnect();
  const { createDatabase } = await import("../core/index.js");
  const database = createDatabase({ url: process.env["TIDEMARK_PG_URL"]!, schema: id, poolSize: 1 });
  await sql`drop schema if exists ${sql.id(id)} cascade`.execute(database.db);
  await database.close();
}

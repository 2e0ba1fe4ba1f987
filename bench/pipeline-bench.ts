/**
 * P2–P4 and the soak, on one server with its own schema, bucket and topic: a backlog of instance
 * events appended while no relay runs; the relay's drain of it (its maximum rate) beside a raw
 * kafkajs produce; commit → Kafka latency at half load; the projection's drain of the same
 * backlog; command OK → read model visible at half load; and, with --soak, memory over a long
 * half-load run.
 */
import { randomUUID } from "node:crypto";
import { sql, type Kysely } from "kysely";
import type { Consumer, Kafka } from "kafkajs";
import { createDatabase, S3ObjectStore } from "../core/index.js";
import { EventStoreService } from "../gen/tidemark/v1/event_store_pb.js";
import { InstanceService } from "../gen/tidemark/v1/instance_pb.js";
import { createClient, type ClientOf } from "../server/index.js";
import { RELAY_SETTINGS } from "../relay/index.js";
import { kafkaProduceBaseline, s3GetBaseline } from "./baselines.js";
import { mergeResults } from "./append-bench.js";
import type { NodeChild } from "./child-process.js";
import { Histogram, median } from "./histogram.js";
import { closedLoop, openLoop, sleep, waitUntil, type LoadResult } from "./load.js";
import type { MemorySampler } from "./memory.js";
import { analyzeSchema } from "./analyze.js";
import { cpuPerUnit, cpuSnapshot, cpuUsedSince } from "./cpu-time.js";
import { startProjectionProcess, startRelayProcess, startServerProcess } from "./processes.js";
import { s3Extra, scrapeRequests } from "./s3-requests.js";
import { compare, figureOf, type Figure } from "./report.js";
import type { BenchResources } from "./resources.js";
import type { StackEnv } from "./stack-env.js";
import { appendRequest, eventData } from "./workload.js";

type EventsClient = ClientOf<typeof EventStoreService>;
type InstancesClient = ClientOf<typeof InstanceService>;

/** Settings of the pipeline benchmarks. */
export interface PipelineOptions {
  readonly stack: StackEnv;
  readonly resources: BenchResources;
  readonly memory: MemorySampler;
  /**
   * The half load in events/s; default: half of the maximum rate measured in place, with the
   * relay (P2) and the projection (P4) running on the same machine.
   */
  readonly halfRateOverride: number | undefined;
  /** Window of the in-place maximum-rate measurements that set the half loads. */
  readonly maxMeasureMs: number;
  /** Instance events appended as the backlog the relay and the projection drain. */
  readonly backlogEvents: number;
  /** Window of each half-load measurement. */
  readonly halfLoadMs: number;
  /** Window of the raw produce floor (split in two, around the relay drain). */
  readonly kafkaMeasureMs: number;
  readonly warmupMs: number;
  /** Longest wait for a drain before the figure is reported as incomplete. */
  readonly drainTimeoutMs: number;
  /** Soak length (0 = no soak). */
  readonly soakMs: number;
  readonly serverNodeArgs: readonly string[];
  /** Node flags of the relay child and of the projection child (--profile). */
  readonly relayNodeArgs: readonly string[];
  readonly projectionNodeArgs: readonly string[];
  readonly log: (message: string) => void;
}

/** What the pipeline benchmarks found. */
export interface PipelineResult {
  readonly figures: Figure[];
  /** The half loads used (events/s, commands/s). */
  readonly halfRates: { readonly p2?: number; readonly p4?: number };
  readonly soak?: SoakResult;
}

/** Memory over the soak, per process. */
export interface SoakResult {
  readonly durationMs: number;
  readonly rate: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly errors: number;
  /** Per process: median RSS of the reference minute and of the last minute, and the growth. */
  readonly processes: Array<{ process: string; referenceMiB: number; endMiB: number; growth: number }>;
  /** Tolerance of "flat": end ≤ reference × (1 + tolerance). */
  readonly tolerance: number;
}

const RELAY_NAME = "bench";
/** Name of the pipeline's server in the memory figures (the soak's flatness target reads it). */
export const SERVER_ROLE = "server (P2-P4)";
const RELAY_BATCH = RELAY_SETTINGS.batchSize.default;
const RELAY_PARTITIONS = RELAY_SETTINGS.partitions.default;
const RELAY_READ_CONCURRENCY = RELAY_SETTINGS.readConcurrency.default;
const INSTANCE_DB = "bench";
/** Concurrency of the in-place maximum-rate measurements. */
const MAX_CONCURRENCY = 32;
const INSTANCE_CLASS = "Item";
/** Events per backlog instance (one InstanceCreated then InstanceUpdated ones). */
const BACKLOG_BATCH = 10;
/** A stream of events is "flat" when its end RSS is within this fraction of the reference. */
export const SOAK_TOLERANCE = 0.1;

/**
 * Whether an open loop kept up with its target rate (within 10 %, nothing dropped). When it did
 * not, the latencies measured under it include queueing of an overloaded machine.
 */
function sustained(result: LoadResult, rate: number): Readonly<Record<string, number | string>> {
  return { targetRate: Math.round(rate), sustained: result.dropped === 0 && result.rate >= 0.9 * rate ? "yes" : "no", dropped: result.dropped };
}

/** Runs P2–P4 (and the soak when `soakMs` > 0). */
export async function runPipelineBench(o: PipelineOptions): Promise<PipelineResult> {
  const figures: Figure[] = [];
  const names = o.resources.allocate("pipe");
  const floorNames = o.resources.allocate("kafka");
  const kafka = o.resources.kafka("tidemark-bench");
  await createTopics(kafka, [names.topic, floorNames.topic]);

  const server = await startServerProcess(o.stack, names, { memory: o.memory, nodeArgs: o.serverNodeArgs, role: SERVER_ROLE });
  const events = createClient(EventStoreService, server.address);
  const instances = createClient(InstanceService, server.address);
  const database = createDatabase<any>({ url: o.stack.pgUrl, schema: names.schema, poolSize: 3 });
  const children: NodeChild[] = [server.child];
  let latencyConsumer: Consumer | undefined;
  let soak: SoakResult | undefined;
  const halfRates: { p2?: number; p4?: number } = {};
  const notMeasured = (ids: ReadonlyArray<readonly [string, Figure["group"], string, string]>, why: string) => {
    for (const [id, group, name, unit] of ids) if (!figures.some((f) => f.id === id)) figures.push({ id, group, name, unit, notMeasured: why });
  };
  const P2_DRAIN = ["p2.drain", "P2", "relay drain (max throughput)", "events/s"] as const;
  const P2_DRAIN_BATCHED = ["p2.drain.batched", "P2", "relay drain of a backlog written 10/call (max throughput)", "events/s"] as const;
  const P2_LATENCY = ["p2.latency", "P2", "commit → Kafka at half load", "events/s"] as const;
  const P3_DRAIN = ["p3.drain", "P3", "projection drain (registry)", "events/s"] as const;
  const P4_LATENCY = ["p4.latency", "P4", "command OK → read model at half load", "commands/s"] as const;
  const reason = (e: unknown) => `not measured: ${(e instanceof Error ? e.message : String(e)).split("\n")[0]!.slice(0, 120)}`;
  try {
    o.log(`P2: backlog of ${o.backlogEvents} instance events (no relay running)`);
    const backlog = await appendBacklog(instances, o.backlogEvents);
    const head = await headPosition(database.db);
    await analyzeSchema(database.db, names.schema);

    let relayRunning = false;
    let relayChild: NodeChild | undefined;
    try {
      o.log("P2: raw S3 GET and kafkajs produce floors, relay drain, floors again");
      const store = new S3ObjectStore({
        endpoint: o.stack.s3Endpoint,
        bucket: names.bucket,
        region: o.stack.s3Region,
        accessKeyId: o.stack.s3AccessKey,
        secretAccessKey: o.stack.s3SecretKey,
      });
      const keys = await store.list("segments/");
      const half = Math.round(o.kafkaMeasureMs / 2);
      const getBefore = await s3GetBaseline(store, keys, RELAY_READ_CONCURRENCY, half, o.warmupMs);
      const produceBefore = await kafkaProduceBaseline(kafka, floorNames.topic, RELAY_BATCH, half, o.warmupMs);
      const relayStarted = performance.now();
      const { child: relay, metricsAddress: relayMetrics } = await startRelayProcess(o.stack, names, { memory: o.memory, nodeArgs: o.relayNodeArgs });
      children.push(relay);
      relayChild = relay;
      relayRunning = true;
      const drainCpuBefore = cpuSnapshot({ relay: relay.pid });
      const drain = await measureDrain(() => checkpoint(database.db), head, o.drainTimeoutMs);
      const drainCpu = cpuPerUnit(cpuUsedSince(drainCpuBefore, { relay: relay.pid }), drain.events);
      // The relay's counters start at zero with the process and it has done nothing but this
      // drain: its totals are the drain's requests (the backlog's events up to drain.events).
      const drainRequests = await scrapeRequests([relayMetrics]).catch((e: unknown) => {
        o.log(`S3 request counts of the relay not read: ${String(e)}`);
        return undefined;
      });
      const produceAfter = await kafkaProduceBaseline(kafka, floorNames.topic, RELAY_BATCH, half, o.warmupMs);
      const getAfter = await s3GetBaseline(store, keys, RELAY_READ_CONCURRENCY, half, o.warmupMs);
      store.close();
      const produce = figureOf({ id: "floor.kafka", group: "baseline", name: `raw kafkajs produce (batch ${RELAY_BATCH}, idempotent, acks=all)`, unit: "msgs/s" }, mergeResults(produceBefore, produceAfter));
      const get = figureOf({ id: "floor.s3get", group: "baseline", name: "raw S3 GET of the backlog's segments", concurrency: RELAY_READ_CONCURRENCY, unit: "GETs/s" }, mergeResults(getBefore, getAfter));
      figures.push(get, produce);
      // The relay reads every object and produces every message: its floor is the slower of the two.
      const floor = (get.rate ?? Infinity) < (produce.rate ?? Infinity) ? get : produce;
      figures.push(
        compare(
          {
            id: "p2.drain",
            group: "P2",
            name: `relay drain of ${drain.events} events (max throughput)`,
            unit: "events/s",
            rate: drain.rate,
            ...(drain.complete ? {} : { errors: 1, errorSamples: [`drain incomplete after ${o.drainTimeoutMs} ms`] }),
            extra: {
              events: drain.events,
              drainMs: Math.round(drain.ms),
              startToFirstPublishMs: Math.round(drain.firstAt - relayStarted),
              vsKafkaProduce: drain.rate / (produce.rate || Number.NaN),
              vsS3Get: drain.rate / (get.rate || Number.NaN),
              cpuMsPerUnit: drainCpu,
              ...s3Extra(drainRequests, drain.events),
            },
          },
          floor,
          { rate: true, p99: false },
        ),
      );
    } catch (e) {
      o.log(`P2 relay drain failed: ${String(e)}`);
      notMeasured([P2_DRAIN], reason(e));
    }

    // The relay again, on segments written the way the append maximum writes them (10 events per
    // call at c64: many calls per segment), by a fresh relay child: the append maximum is that
    // workload's rate, and a relay's cost is set by the events per segment. Like the appends (P1
    // warms its server up before measuring), the relay is measured warm: it first drains a warm-up
    // backlog of the same shape, and the figure is its rate over the backlog after that. The
    // warm-up's own (cold) rate is reported beside it.
    if (relayRunning && relayChild !== undefined) {
      try {
        await relayChild.stop();
        children.splice(children.indexOf(relayChild), 1);
        relayRunning = false;
        const from = await headPosition(database.db);
        const measured = 2 * o.backlogEvents;
        o.log(`P2: backlogs of ${o.backlogEvents} (warm-up) and ${measured} events written 10 per call at c${BATCHED_BACKLOG_CONCURRENCY} (no relay running), then a drain of both by a new relay`);
        await appendBatchedBacklog(events, o.backlogEvents);
        const warmedAt = await headPosition(database.db);
        await appendBatchedBacklog(events, measured);
        const to = await headPosition(database.db);
        const relayStarted = performance.now();
        // Its events go to the floor's topic, so the projection (P3) never sees them.
        const routes = { TIDEMARK_RELAY_ROUTES: `${BATCHED_BACKLOG_TYPE}=${floorNames.topic}` };
        const { child: relay, metricsAddress: relayMetrics } = await startRelayProcess(o.stack, names, { memory: o.memory, env: routes });
        children.push(relay);
        relayChild = relay;
        relayRunning = true;
        const warmUp = await measureDrain(() => checkpoint(database.db), warmedAt, o.drainTimeoutMs, from);
        const cpuWarm = cpuSnapshot({ relay: relay.pid });
        const drain = await measureDrain(() => checkpoint(database.db), to, o.drainTimeoutMs, warmedAt);
        const drained = drain.events - warmedAt;
        o.log(`P2: the new relay drained the warm-up at ${Math.round(warmUp.rate)} events/s (from its first publish, ${Math.round(warmUp.firstAt - relayStarted)} ms after its start), then ${Math.round(drain.rate)} events/s`);
        const cpu = cpuPerUnit(cpuUsedSince(cpuWarm, { relay: relay.pid }), drained);
        // Both backlogs have one shape of segments, so the relay's requests over its whole life
        // (it did nothing else) divided by all it drained are the requests per event of either.
        const requests = await scrapeRequests([relayMetrics]).catch((e: unknown) => {
          o.log(`S3 request counts of the relay not read: ${String(e)}`);
          return undefined;
        });
        figures.push({
          id: "p2.drain.batched",
          group: "P2",
          name: `relay drain of ${drained} events written 10/call at c${BATCHED_BACKLOG_CONCURRENCY}, warm (max throughput)`,
          unit: "events/s",
          rate: drain.rate,
          ...(warmUp.complete && drain.complete ? {} : { errors: 1, errorSamples: [`drain incomplete after ${o.drainTimeoutMs} ms`] }),
          extra: {
            events: drained,
            drainMs: Math.round(drain.ms),
            warmUpEvents: warmUp.events - from,
            warmUpRate: warmUp.rate,
            startToFirstPublishMs: Math.round(warmUp.firstAt - relayStarted),
            cpuMsPerUnit: cpu,
            ...s3Extra(requests, drain.events - from),
          },
        });
      } catch (e) {
        o.log(`P2 drain of the batched backlog failed: ${String(e)}`);
        notMeasured([P2_DRAIN_BATCHED], reason(e));
      }
    } else notMeasured([P2_DRAIN_BATCHED], "not measured: the relay did not start");

    if (!relayRunning) {
      notMeasured([P2_LATENCY, P3_DRAIN, P4_LATENCY], "not measured: the relay did not start");
    } else {
      try {
        o.log("P2: maximum append rate with the relay running (sets the half load)");
        const run = randomUUID().slice(0, 6);
        const max = await closedLoop({
          concurrency: MAX_CONCURRENCY,
          durationMs: o.maxMeasureMs,
          warmupMs: o.warmupMs,
          op: (w, i) => events.appendEvents(appendRequest(`max-${run}-${w}-${i}`, { exact: 0 }, 1, i), { deadlineMs: 30_000 }).then(() => 1),
        });
        figures.push(figureOf({ id: "p2.max", group: "P2", name: `append max with the relay running (1 event/call, c${MAX_CONCURRENCY})`, concurrency: MAX_CONCURRENCY, unit: "events/s" }, max));
        const rate = o.halfRateOverride ?? max.rate / 2;
        halfRates.p2 = rate;
        o.log(`P2: commit → Kafka latency at half load (${Math.round(rate)} events/s)`);
        const measured = await commitToKafka(events, kafka, names.topic, `${names.groupPrefix}latency`, rate, o, (c) => (latencyConsumer = c));
        o.resources.ownGroup(`${names.groupPrefix}latency`);
        figures.push(...measured);
      } catch (e) {
        o.log(`P2 latency failed: ${String(e)}`);
        notMeasured([P2_LATENCY], reason(e));
      } finally {
        await latencyConsumer?.disconnect().catch(() => {});
        latencyConsumer = undefined;
      }

      let projectionRunning = false;
      try {
        o.log(`P3: projection drain of ${backlog.events} instance events`);
        const projectionStarted = performance.now();
        const projection = await startProjectionProcess(o.stack, names, { memory: o.memory, nodeArgs: o.projectionNodeArgs });
        children.push(projection);
        projectionRunning = true;
        const projectionCpuBefore = cpuSnapshot({ projection: projection.pid });
        const projected = await measureDrain(() => appliedEvents(database.db), backlog.events, o.drainTimeoutMs);
        const projectionCpu = cpuPerUnit(cpuUsedSince(projectionCpuBefore, { projection: projection.pid }), projected.events);
        figures.push({
          id: "p3.drain",
          group: "P3",
          name: `projection drain of ${projected.events} instance events (registry)`,
          unit: "events/s",
          rate: projected.rate,
          ...(projected.complete ? {} : { errors: 1, errorSamples: [`drain incomplete after ${o.drainTimeoutMs} ms`] }),
          extra: { events: projected.events, drainMs: Math.round(projected.ms), startToFirstAppliedMs: Math.round(projected.firstAt - projectionStarted), cpuMsPerUnit: projectionCpu },
        });
      } catch (e) {
        o.log(`P3 failed: ${String(e)}`);
        notMeasured([P3_DRAIN], reason(e));
      }
      if (!projectionRunning) {
        notMeasured([P4_LATENCY], "not measured: the projection did not start");
      } else {
        try {
          o.log("P4: maximum CreateInstance rate with the relay and the projection running (sets the half load)");
          const run = randomUUID().slice(0, 6);
          const max = await closedLoop({
            concurrency: MAX_CONCURRENCY,
            durationMs: o.maxMeasureMs,
            warmupMs: o.warmupMs,
            op: (w, i) =>
              instances
                .createInstance({ database: INSTANCE_DB, className: INSTANCE_CLASS, instanceId: `max-${run}-${w}-${i}`, properties: eventData(i), commandId: randomUUID(), actor: "bench" }, { deadlineMs: 30_000 })
                .then(() => 1),
          });
          figures.push(figureOf({ id: "p4.max", group: "P4", name: `CreateInstance max, relay and projection running (c${MAX_CONCURRENCY})`, concurrency: MAX_CONCURRENCY, unit: "commands/s" }, max));
          const rate = o.halfRateOverride ?? max.rate / 2;
          halfRates.p4 = rate;
          o.log(`P4: command OK → read model visible at half load (${Math.round(rate)} commands/s)`);
          const visible = await readModelLatency(instances, database.db, rate, o.halfLoadMs);
          figures.push(visible.commands, visible.visible);
        } catch (e) {
          o.log(`P4 failed: ${String(e)}`);
          notMeasured([P4_LATENCY], reason(e));
        }
      }
    }

    if (o.soakMs > 0 && halfRates.p2 === undefined) {
      o.log("soak skipped: no half load was measured (the relay did not run)");
    } else if (o.soakMs > 0) {
      const minutes = Number((o.soakMs / 60_000).toFixed(1));
      o.log(`soak: ${minutes} min at half load, sampling memory`);
      soak = await runSoak(events, halfRates.p2!, o);
      figures.push({ id: "soak.append", group: "soak", name: `append at half load for ${minutes} min`, unit: "events/s", rate: soak.rate, p50Ms: soak.p50Ms, p99Ms: soak.p99Ms, errors: soak.errors });
    }
  } finally {
    await latencyConsumer?.disconnect().catch(() => {});
    events.close();
    instances.close();
    for (const child of children.reverse()) await child.stop();
    await database.close();
  }
  return { figures, halfRates, ...(soak === undefined ? {} : { soak }) };
}

async function createTopics(kafka: Kafka, topics: readonly string[]): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.createTopics({ waitForLeaders: true, topics: topics.map((topic) => ({ topic, numPartitions: RELAY_PARTITIONS, replicationFactor: 1 })) });
  } finally {
    await admin.disconnect();
  }
}

/**
 * Appends `total` instance events through InstanceService (generic appends cannot write Instance
 * streams): per instance one CreateInstance then BACKLOG_BATCH - 1 UpdateInstance commands, 32
 * instances at a time, so the projection has real work to do.
 */
async function appendBacklog(instances: InstancesClient, total: number): Promise<{ events: number; instances: number }> {
  const count = Math.ceil(total / BACKLOG_BATCH);
  const run = randomUUID().slice(0, 6);
  let next = 0;
  await Promise.all(
    Array.from({ length: MAX_CONCURRENCY }, async () => {
      for (let i = next++; i < count; i = next++) {
        const address = { database: INSTANCE_DB, className: INSTANCE_CLASS, instanceId: `backlog-${run}-${i}` };
        const options = { deadlineMs: 60_000 };
        await instances.createInstance({ ...address, properties: eventData(i), commandId: `${run}-${i}-0`, actor: "bench" }, options);
        for (let j = 1; j < BACKLOG_BATCH; j++) {
          await instances.updateInstance({ ...address, properties: { n: j, note: `update ${j}` }, expectedSeq: BigInt(j), commandId: `${run}-${i}-${j}`, actor: "bench" }, options);
        }
      }
    }),
  );
  return { events: count * BACKLOG_BATCH, instances: count };
}

/** Writers of the batched backlog: the concurrency of the append maximum's workload. */
const BATCHED_BACKLOG_CONCURRENCY = 64;
/** Aggregate type of the batched backlog (routed to a topic of its own). */
const BATCHED_BACKLOG_TYPE = "BenchBacklog";

/** Appends `total` generic events, 10 per call, each of 64 writers to its own stream with exact expectations. */
async function appendBatchedBacklog(events: EventsClient, total: number): Promise<void> {
  const run = randomUUID().slice(0, 6);
  let calls = Math.ceil(total / 10);
  await Promise.all(
    Array.from({ length: BATCHED_BACKLOG_CONCURRENCY }, async (_, w) => {
      for (let seq = 0; calls > 0; seq += 10) {
        calls -= 1;
        await events.appendEvents({ ...appendRequest(`backlog-${run}-${w}`, { exact: seq }, 10, seq), aggregateType: BATCHED_BACKLOG_TYPE }, { deadlineMs: 60_000 });
      }
    }),
  );
}

async function headPosition(db: Kysely<any>): Promise<number> {
  const { rows } = await sql<{ position: number }>`select position from global_counter where id = 1`.execute(db);
  return Number(rows[0]?.position ?? 0);
}

async function checkpoint(db: Kysely<any>): Promise<number> {
  try {
    const { rows } = await sql<{ position: number }>`select position from relay_checkpoints where name = ${RELAY_NAME}`.execute(db);
    return Number(rows[0]?.position ?? 0);
  } catch {
    return 0; // the relay has not migrated its tables yet
  }
}

async function appliedEvents(db: Kysely<any>): Promise<number> {
  try {
    const { rows } = await sql<{ n: string | null }>`select sum(version) as n from instances where database = ${INSTANCE_DB}`.execute(db);
    return Number(rows[0]?.n ?? 0);
  } catch {
    return 0;
  }
}

/**
 * Polls `progress` until it reaches `target`; the rate counts from the first progress seen, so a
 * process's start-up is not part of it (it is reported separately).
 */
async function measureDrain(progress: () => Promise<number>, target: number, timeoutMs: number, from = 0): Promise<{ rate: number; events: number; ms: number; firstAt: number; complete: boolean }> {
  const started = performance.now();
  let first: { t: number; value: number } | undefined;
  let last = { t: started, value: from };
  for (;;) {
    const value = await progress();
    const t = performance.now();
    if (value > from && first === undefined) first = { t, value };
    if (value > last.value) last = { t, value };
    if (value >= target || t - started > timeoutMs) break;
    await sleep(25);
  }
  if (first === undefined) return { rate: 0, events: 0, ms: 0, firstAt: started, complete: false };
  const ms = last.t - first.t;
  const events = last.value - first.value;
  return { rate: ms > 0 ? (events * 1000) / ms : 0, events: last.value, ms, firstAt: first.t, complete: last.value >= target };
}

/** A group consumer on `topic` that notes when each event id arrives (from `latest`). */
async function startLatencyConsumer(kafka: Kafka, topic: string, groupId: string, arrivals: Map<string, number>, log: (m: string) => void): Promise<Consumer> {
  const consumer = kafka.consumer({ groupId, sessionTimeout: 10_000, heartbeatInterval: 1000, maxWaitTimeInMs: 100 });
  consumer.on(consumer.events.CRASH, (e) => log(`latency consumer crashed: ${String(e.payload.error)}`));
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: false });
  // No offset commits: kafkajs otherwise commits after every partition's batch, and the next
  // fetch waits for each commit (about 6 ms apiece under the half load), so the measurement
  // measured the consumer's own bookkeeping. The group starts at the latest offset and is deleted
  // at the end; nothing needs its committed position.
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch }) => {
      const now = performance.now();
      for (const m of batch.messages) {
        const id = m.headers?.["event_id"];
        if (id !== undefined) arrivals.set(id.toString(), now);
      }
    },
  });
  return consumer;
}

/** Appends probe events until one reaches the consumer: its group has joined and got its offsets. */
async function probe(events: EventsClient, arrivals: Map<string, number>): Promise<void> {
  const run = randomUUID().slice(0, 6);
  await waitUntil(
    async () => {
      const out = await events.appendEvents(appendRequest(`probe-${run}`, "any", 1, 0));
      await sleep(500);
      return arrivals.has(out.events[0]!.eventId) ? true : undefined;
    },
    "the latency consumer to receive a probe event",
    60_000,
    0,
  );
  arrivals.clear();
}

/**
 * P2 latency: single-event appends to new streams at half load, each OK timed; a group consumer
 * in this process notes when each event arrives on Kafka. Returns the append and the latency figures.
 */
async function commitToKafka(
  events: EventsClient,
  kafka: Kafka,
  topic: string,
  groupId: string,
  rate: number,
  o: PipelineOptions,
  started: (consumer: Consumer) => void,
): Promise<Figure[]> {
  const arrivals = new Map<string, number>();
  const consumer = await startLatencyConsumer(kafka, topic, groupId, arrivals, o.log);
  started(consumer);
  await probe(events, arrivals);
  const acks = new Map<string, number>();
  const run = randomUUID().slice(0, 6);
  const halfLoad = await openLoop({
    rate,
    durationMs: o.halfLoadMs,
    op: async (_w, i) => {
      const out = await events.appendEvents(appendRequest(`half-${run}-${i}`, { exact: 0 }, 1, i), { deadlineMs: 30_000 });
      acks.set(out.events[0]!.eventId, performance.now());
    },
  });
  await waitUntil(() => ([...acks.keys()].every((id) => arrivals.has(id)) ? true : undefined), "every half-load event on Kafka", 20_000).catch(() => {});
  const toKafka = new Histogram();
  let missing = 0;
  for (const [id, ackedAt] of acks) {
    const arrived = arrivals.get(id);
    if (arrived === undefined) missing += 1;
    // The consumer can see a message before the client has processed its OK: that is 0 ms.
    else toKafka.record(Math.max(0, arrived - ackedAt));
  }
  const s = toKafka.summary();
  return [
    { ...figureOf({ id: "p2.append-half", group: "P2", name: "append latency at half load (open loop)", unit: "events/s" }, halfLoad), extra: sustained(halfLoad, rate) },
    {
      extra: sustained(halfLoad, rate),
      id: "p2.latency",
      group: "P2",
      name: "commit (client OK) → Kafka consumer, half load",
      unit: "events/s",
      rate: halfLoad.rate,
      p50Ms: s.p50,
      p99Ms: s.p99,
      samples: s.count,
      errors: missing,
      ...(missing > 0 ? { errorSamples: [`${missing} acknowledged events not seen on Kafka within 20 s`] } : {}),
    },
  ];
}

/**
 * P4: CreateInstance commands at `rate`, and how long after each OK the read model holds the
 * instance at that version; one query per poll covers every outstanding command.
 */
async function readModelLatency(instances: InstancesClient, db: Kysely<any>, rate: number, durationMs: number): Promise<{ commands: Figure; visible: Figure }> {
  const run = randomUUID().slice(0, 6);
  const pending = new Map<string, { at: number; version: number }>();
  const visible = new Histogram();
  let polling = true;
  const poller = (async () => {
    while (polling || pending.size > 0) {
      if (pending.size > 0) {
        const ids = [...pending.keys()].slice(0, 1000);
        const { rows } = await sql<{ instance_id: string; version: number }>`
          select instance_id, version from instances
           where database = ${INSTANCE_DB} and class_name = ${INSTANCE_CLASS} and instance_id = any(${ids}::text[])`.execute(db);
        const now = performance.now();
        for (const row of rows) {
          const p = pending.get(row.instance_id);
          if (p !== undefined && Number(row.version) >= p.version) {
            visible.record(now - p.at);
            pending.delete(row.instance_id);
          }
        }
        if (!polling && now - Math.min(...[...pending.values()].map((p) => p.at)) > 20_000) break;
      }
      await sleep(5);
    }
  })();
  const commands = await openLoop({
    rate,
    durationMs,
    op: async (_w, i) => {
      const instanceId = `p4-${run}-${i}`;
      const out = await instances.createInstance(
        { database: INSTANCE_DB, className: INSTANCE_CLASS, instanceId, properties: eventData(i), commandId: randomUUID(), actor: "bench" },
        { deadlineMs: 30_000 },
      );
      pending.set(instanceId, { at: performance.now(), version: Number(out.result!.sequenceNumber) });
    },
  });
  polling = false;
  await poller;
  const lost = pending.size;
  const s = visible.summary();
  return {
    commands: { ...figureOf({ id: "p4.commands", group: "P4", name: "CreateInstance latency at half load (open loop)", unit: "commands/s" }, commands), extra: sustained(commands, rate) },
    visible: {
      extra: sustained(commands, rate),
      id: "p4.latency",
      group: "P4",
      name: "command OK → read model visible, half load",
      unit: "commands/s",
      rate: commands.rate,
      p50Ms: s.p50,
      p99Ms: s.p99,
      samples: s.count,
      errors: lost,
      ...(lost > 0 ? { errorSamples: [`${lost} commands not visible within 20 s`] } : {}),
    },
  };
}

/** Half-load appends for `soakMs`, then each process's RSS: reference minute vs last minute. */
async function runSoak(events: EventsClient, rate: number, o: PipelineOptions): Promise<SoakResult> {
  const run = randomUUID().slice(0, 6);
  const startedAt = o.memory.now();
  const load: LoadResult = await openLoop({
    rate,
    durationMs: o.soakMs,
    op: (_w, i) => events.appendEvents(appendRequest(`soak-${run}-${i}`, { exact: 0 }, 1, i), { deadlineMs: 30_000 }).then(() => 1),
  });
  const endedAt = o.memory.now();
  // The first minute warms caches (the event cache, pools, JIT); the second is the reference.
  const refFrom = startedAt + Math.min(60_000, o.soakMs / 5);
  const refTo = refFrom + Math.min(60_000, o.soakMs / 5);
  const endFrom = endedAt - Math.min(60_000, o.soakMs / 5);
  const processes = o.memory
    .all()
    .filter((p) => p.name !== "bench")
    .map((p) => {
      const referenceMiB = median(p.timeline.filter(([t]) => t >= refFrom && t < refTo).map(([, v]) => v));
      const endMiB = median(p.timeline.filter(([t]) => t >= endFrom && t <= endedAt).map(([, v]) => v));
      return { process: p.name, referenceMiB, endMiB, growth: endMiB / referenceMiB - 1 };
    })
    .filter((p) => Number.isFinite(p.growth));
  const s = load.latency.summary();
  return { durationMs: o.soakMs, rate: load.rate, p50Ms: s.p50, p99Ms: s.p99, errors: load.errors, processes, tolerance: SOAK_TOLERANCE };
}


/**
 * P1: appends per second and latency over gRPC against the server child, at several
 * concurrencies, for one event per call, batches, and one hot aggregate; with the floors measured
 * at the same concurrency in between (raw conditional PUT before and after, gRPC health Check,
 * the allocation transaction) and the peer store (Emmett on the same PostgreSQL), so every ratio
 * compares figures taken under the same noise. Each workload also reports the server's S3
 * requests per acknowledged event.
 */
import { randomUUID } from "node:crypto";
import { createDatabase, migrateToLatest, S3ObjectStore, type WriteSideTables } from "../core/index.js";
import { create } from "@bufbuild/protobuf";
import { AppendEventsRequestSchema, EventStoreService } from "../gen/tidemark/v1/event_store_pb.js";
import { createClient, type ClientOf } from "../server/index.js";
import { analyzeSchema } from "./analyze.js";
import { grpcBaseline, pgAllocBaseline, s3PutBaseline } from "./baselines.js";
import { Histogram } from "./histogram.js";
import { cpuPerUnit, cpuSnapshot, cpuUsedSince } from "./cpu-time.js";
import { openEmmettPeer } from "./emmett-peer.js";
import { closedLoop, type LoadResult } from "./load.js";
import type { MemorySampler } from "./memory.js";
import { startServerProcess } from "./processes.js";
import { compare, figureOf, type Figure } from "./report.js";
import type { BenchResources } from "./resources.js";
import { countRequests, s3Extra, type RequestCounts } from "./s3-requests.js";
import type { StackEnv } from "./stack-env.js";
import type { ChartSeries } from "./svg-chart.js";
import { appendRequest, type ExpectationShape } from "./workload.js";

/** Settings of the P1 sweep. */
export interface AppendBenchOptions {
  readonly stack: StackEnv;
  readonly resources: BenchResources;
  readonly memory: MemorySampler;
  readonly concurrencies: readonly number[];
  /** Measured window of each P1 workload; each floor gets half of it (the raw PUT twice). */
  readonly measureMs: number;
  readonly warmupMs: number;
  /** Events per call of the batch workload. */
  readonly batchSize: number;
  /** Server node flags (e.g. --cpu-prof). */
  readonly serverNodeArgs: readonly string[];
  readonly log: (message: string) => void;
}

/** What P1 found. */
export interface AppendBenchResult {
  readonly figures: Figure[];
  readonly chart: ChartSeries[];
  /** Best events/s of one event per call, many aggregates (half load is half of it). */
  readonly maxSingleRate: number;
  /** Best events/s of any P1 workload ("the append maximum"). */
  readonly maxAppendRate: number;
}

/** Name of the peer's figures. */
const EMMETT_NAME = "Emmett PostgreSQL appendToStream, 1 event/call, many streams";

/** A workload of P1. */
export interface Workload {
  readonly key: "single" | "batch" | "hot" | "trio" | "multi";
  readonly name: string;
}

/** The concurrency at which AppendToStreams is measured against AppendEvents (bench/TARGETS.md, W8). */
export const MULTI_CONCURRENCY = 32;
/** Streams (and events) per AppendToStreams call, and events per call of its AppendEvents baseline. */
const MULTI_STREAMS = 3;
const MULTI_WORKLOADS: readonly Workload[] = [
  { key: "trio", name: `append ${MULTI_STREAMS} events/call to one stream, many aggregates` },
  { key: "multi", name: `AppendToStreams ${MULTI_STREAMS} streams/call (1 event each), many aggregates` },
];

/** Runs the P1 sweep and the floors, interleaved per concurrency. */
export async function runAppendBench(o: AppendBenchOptions): Promise<AppendBenchResult> {
  const names = o.resources.allocate("append");
  const floor = o.resources.allocate("floor");
  const server = await startServerProcess(o.stack, names, { memory: o.memory, nodeArgs: o.serverNodeArgs, role: "server (P1)" });
  const client = createClient(EventStoreService, server.address);
  const store = new S3ObjectStore({
    endpoint: o.stack.s3Endpoint,
    bucket: floor.bucket,
    region: o.stack.s3Region,
    accessKeyId: o.stack.s3AccessKey,
    secretAccessKey: o.stack.s3SecretKey,
  });
  await store.ensureReady();
  // Same pool size as the server's default (TIDEMARK_PG_POOL_SIZE 10).
  const database = createDatabase<WriteSideTables>({ url: o.stack.pgUrl, schema: floor.schema, poolSize: 10 });
  await migrateToLatest(database.db, database.schema);

  const peer = await openEmmettPeer(o.resources);
  if ("unavailable" in peer) o.log(`P1: the Emmett peer is not measured: ${peer.unavailable}`);
  const workloads: Workload[] = [
    { key: "single", name: "append 1 event/call, many aggregates" },
    { key: "batch", name: `append ${o.batchSize} events/call, many aggregates` },
    { key: "hot", name: "append 1 event/call, one hot aggregate (any)" },
  ];
  const figures: Figure[] = [];
  const chart = new Map<string, ChartSeries & { points: Array<ChartSeries["points"][number]> }>();
  const plot = (series: string, f: Figure) => {
    let s = chart.get(series);
    if (s === undefined) chart.set(series, (s = { name: series, points: [] }));
    if (f.rate && f.p50Ms && f.p99Ms) s.points.push({ x: f.rate, p50: f.p50Ms, p99: f.p99Ms, label: `c${f.concurrency}` });
  };
  const half = Math.max(500, Math.round(o.measureMs / 2));
  const run = randomUUID().slice(0, 6);
  let maxSingleRate = 0;
  let maxAppendRate = 0;
  try {
    // A fresh server runs its first thousands of calls through the interpreter and the baseline
    // compilers: measured cold, the first workload came out at two thirds of its warm rate. Every
    // workload runs once, unmeasured, before the sweep; then the tables get statistics (analyze.ts).
    const warmC = Math.max(...o.concurrencies);
    o.log(`P1: warming the server up (each workload at concurrency ${warmC}, ${half} ms, not measured)`);
    const multiToo = o.concurrencies.includes(MULTI_CONCURRENCY);
    for (const w of [...workloads, ...(multiToo ? MULTI_WORKLOADS : [])]) await appendLoad(client, w, warmC, { ...o, measureMs: half }, `${run}-warm-${w.key}`);
    await analyzeSchema(database.db, names.schema);
    if (!("unavailable" in peer)) {
      // The same unmeasured pass and statistics as Tidemark's, so both are measured warm.
      o.log(`P1: warming the Emmett peer up (concurrency ${warmC}, ${half} ms, not measured)`);
      await peer.load(warmC, half, o.warmupMs, `${run}-warm`);
      await peer.analyze();
    }
    for (const c of o.concurrencies) {
      o.log(`P1 at concurrency ${c}: raw PUT, gRPC, PostgreSQL floors, the Emmett peer and three workloads`);
      const putBefore = await withCpu(() => s3PutBaseline(store, c, half, o.warmupMs));
      const grpc = figureOf({ id: `floor.grpc.c${c}`, group: "baseline", name: "gRPC unary (health Check)", concurrency: c, unit: "calls/s" }, await grpcBaseline(server.address, c, half, o.warmupMs));
      const pg = figureOf({ id: `floor.pg.c${c}`, group: "baseline", name: "PG allocation txn (reserveSlots shape)", concurrency: c, unit: "txn/s" }, await pgAllocBaseline(database.db, c, half, o.warmupMs));
      // Right before Tidemark's workloads: the peer's rate and P1's are taken seconds apart.
      const emmett: Figure =
        "unavailable" in peer
          ? { id: `peer.emmett.c${c}`, group: "peer", name: EMMETT_NAME, concurrency: c, unit: "events/s", notMeasured: `not measured: ${peer.unavailable}` }
          : await (async () => {
              const { result, cpu } = await withCpu(() => peer.load(c, o.measureMs, o.warmupMs, `${run}-c${c}`));
              if (result.errors > 0) o.log(`  Emmett c${c}: ${result.errors} errors, e.g. ${result.errorSamples[0]}`);
              return {
                ...figureOf({ id: `peer.emmett.c${c}`, group: "peer", name: EMMETT_NAME, concurrency: c, unit: "events/s" }, result),
                // Emmett runs in this process: `bench` is the store's CPU (and the load loop's).
                extra: { cpuMsPerUnit: cpuPerUnit(cpu, result.totalUnits) },
              };
            })();
      figures.push(emmett);
      plot(EMMETT_NAME, emmett);
      const measured: Array<[Workload, LoadResult, Record<string, number>, RequestCounts | undefined]> = [];
      for (const w of workloads) {
        const { value, requests } = await countRequests([server.metricsAddress], () => withCpu(() => appendLoad(client, w, c, o, `${run}-${w.key}-c${c}`), server.child.pid), o.log);
        measured.push([w, value.result, value.cpu, requests]);
      }
      const putAfter = await withCpu(() => s3PutBaseline(store, c, half, o.warmupMs));
      const putResult = mergeResults(putBefore.result, putAfter.result);
      const putCpu = Object.fromEntries(
        [...new Set([...Object.keys(putBefore.cpu), ...Object.keys(putAfter.cpu)])].map((k) => [k, (putBefore.cpu[k] ?? 0) + (putAfter.cpu[k] ?? 0)]),
      );
      const put: Figure = {
        ...figureOf({ id: `floor.s3put.c${c}`, group: "baseline", name: "raw S3 PUT If-None-Match:*", concurrency: c, unit: "PUTs/s" }, putResult),
        // The S3 client's own CPU per PUT (this process ran only the PUT loop), to set against the server's per event.
        extra: { cpuMsPerUnit: cpuPerUnit(putCpu, putResult.totalUnits) },
      };
      figures.push(put, grpc, pg);
      plot("raw S3 conditional PUT", put);
      for (const [w, result, cpu, requests] of measured) {
        let f = figureOf({ id: `p1.${w.key}.c${c}`, group: "P1", name: w.name, concurrency: c, unit: "events/s" }, result);
        f = compare(f, put);
        f = {
          ...f,
          extra: {
            vsPgAlloc: (f.rate ?? 0) / (pg.rate || Number.NaN),
            callsPerSecondVsGrpc: (result.ops * 1000) / result.windowMs / (grpc.rate || Number.NaN),
            ...(w.key === "single" && emmett.rate ? { vsEmmett: (f.rate ?? 0) / emmett.rate } : {}),
            cpuMsPerUnit: cpuPerUnit(cpu, result.totalUnits),
            // Over the warm-up and the window alike, as the CPU: requests ÷ every acknowledged event.
            ...s3Extra(requests, result.totalUnits),
          },
        };
        figures.push(f);
        plot(w.name, f);
        if (w.key === "single") maxSingleRate = Math.max(maxSingleRate, f.rate ?? 0);
        maxAppendRate = Math.max(maxAppendRate, f.rate ?? 0);
        if (result.errors > 0) o.log(`  ${w.key} c${c}: ${result.errors} errors, e.g. ${result.errorSamples[0]}`);
      }
      if (c === MULTI_CONCURRENCY) figures.push(...(await multiStreamFigures(client, c, o, `${run}-c${c}`, server.child.pid)));
    }
  } finally {
    client.close();
    store.close();
    await database.close();
    if (!("unavailable" in peer)) await peer.close();
    await server.child.stop();
  }
  return { figures, chart: [...chart.values()], maxSingleRate, maxAppendRate };
}

/**
 * AppendToStreams with three streams per call against AppendEvents with the same three events per
 * call to one stream, in the same server: the baseline just before and just after (merged), so
 * both see the same noise. The multi-stream figure's rateRatio is against that baseline.
 */
async function multiStreamFigures(client: ClientOf<typeof EventStoreService>, c: number, o: AppendBenchOptions, prefix: string, serverPid: number | undefined): Promise<Figure[]> {
  o.log(`P1 at concurrency ${c}: AppendToStreams ${MULTI_STREAMS} streams/call against AppendEvents ${MULTI_STREAMS} events/call`);
  const [trio, multi] = MULTI_WORKLOADS as [Workload, Workload];
  const before = await withCpu(() => appendLoad(client, trio, c, o, `${prefix}-trio-a`), serverPid);
  const measured = await withCpu(() => appendLoad(client, multi, c, o, `${prefix}-multi`), serverPid);
  const after = await withCpu(() => appendLoad(client, trio, c, o, `${prefix}-trio-b`), serverPid);
  const both = mergeMeasured(before, after);
  // CPU per event by process beside each, so the CPU table says where a multi-stream call costs more.
  const baseline: Figure = {
    ...figureOf({ id: `p1.trio.c${c}`, group: "P1", name: trio.name, concurrency: c, unit: "events/s" }, both.result),
    extra: { cpuMsPerUnit: cpuPerUnit(both.cpu, both.result.totalUnits) },
  };
  const figure: Figure = {
    ...compare(figureOf({ id: `p1.multi.c${c}`, group: "P1", name: multi.name, concurrency: c, unit: "events/s" }, measured.result), baseline),
    extra: { cpuMsPerUnit: cpuPerUnit(measured.cpu, measured.result.totalUnits) },
  };
  for (const [w, r] of [[trio, both.result], [multi, measured.result]] as const) {
    if (r.errors > 0) o.log(`  ${w.key} c${c}: ${r.errors} errors, e.g. ${r.errorSamples[0]}`);
  }
  return [baseline, figure];
}

/**
 * One P1 workload at concurrency `c`. Many aggregates: each worker owns a stream and appends
 * with the exact expected head, so optimistic concurrency is on the measured path. Hot: every
 * worker appends to one stream with `any`, so appends queue on that stream's head row.
 */
export async function appendLoad(
  client: ClientOf<typeof EventStoreService>,
  w: Workload,
  c: number,
  o: Pick<AppendBenchOptions, "measureMs" | "warmupMs" | "batchSize">,
  prefix: string,
): Promise<LoadResult> {
  const perCall = w.key === "batch" ? o.batchSize : w.key === "trio" || w.key === "multi" ? MULTI_STREAMS : 1;
  const heads = new Array<number>(c).fill(0);
  const generation = new Array<number>(c).fill(0);
  return closedLoop({
    concurrency: c,
    durationMs: o.measureMs,
    warmupMs: o.warmupMs,
    op: async (worker, i) => {
      const aggregateId = w.key === "hot" ? `${prefix}-hot` : `${prefix}-w${worker}-g${generation[worker]}`;
      const expectation: ExpectationShape = w.key === "hot" ? "any" : { exact: heads[worker]! };
      try {
        if (w.key === "multi") {
          // The worker's own three streams, always written together, so they share one head.
          const streams = Array.from({ length: MULTI_STREAMS }, (_, k) => {
            const { aggregateType, aggregateId: id, expectation: e, events } = create(AppendEventsRequestSchema, appendRequest(`${aggregateId}-s${k}`, expectation, 1, i * MULTI_STREAMS + k));
            return { aggregateType, aggregateId: id, expectation: e, events };
          });
          const out = await client.appendToStreams({ streams, actor: "bench" }, { deadlineMs: 30_000 });
          heads[worker] = Number(out.streams[0]!.events[0]!.sequenceNumber);
        } else {
          const out = await client.appendEvents(appendRequest(aggregateId, expectation, perCall, i), { deadlineMs: 30_000 });
          heads[worker] = Number(out.events[out.events.length - 1]!.sequenceNumber);
        }
      } catch (e) {
        // Start a fresh stream rather than guess the head after a failure.
        generation[worker]! += 1;
        heads[worker] = 0;
        throw e;
      }
      return perCall;
    },
  });
}

/**
 * Runs `fn` and reports the CPU time (ms) each process used meanwhile: this one (`bench`: the
 * load's client side), the server when given, and the stack's services. Over the warm-up and the
 * measured window alike, so per-unit figures divide by all units completed.
 */
export async function withCpu(fn: () => Promise<LoadResult>, serverPid?: number): Promise<{ result: LoadResult; cpu: Record<string, number> }> {
  const pids = { server: serverPid };
  const before = cpuSnapshot(pids);
  const result = await fn();
  return { result, cpu: cpuUsedSince(before, pids) };
}

/** Two measured runs of one load (withCpu) as one: results merged, CPU times added. */
export function mergeMeasured(
  a: { result: LoadResult; cpu: Record<string, number> },
  b: { result: LoadResult; cpu: Record<string, number> },
): { result: LoadResult; cpu: Record<string, number> } {
  const cpu = Object.fromEntries([...new Set([...Object.keys(a.cpu), ...Object.keys(b.cpu)])].map((k) => [k, (a.cpu[k] ?? 0) + (b.cpu[k] ?? 0)]));
  return { result: mergeResults(a.result, b.result), cpu };
}

/** Two runs of one load as one: units over the sum of windows, latencies together. */
export function mergeResults(a: LoadResult, b: LoadResult): LoadResult {
  const windowMs = a.windowMs + b.windowMs;
  return {
    ops: a.ops + b.ops,
    units: a.units + b.units,
    errors: a.errors + b.errors,
    dropped: a.dropped + b.dropped,
    totalUnits: a.totalUnits + b.totalUnits,
    errorSamples: [...a.errorSamples, ...b.errorSamples].slice(0, 5),
    windowMs,
    rate: windowMs > 0 ? ((a.units + b.units) * 1000) / windowMs : 0,
    latency: new Histogram().merge(a.latency).merge(b.latency),
  };
}

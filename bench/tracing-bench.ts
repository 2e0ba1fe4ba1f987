/**
 * P1 traced: what OpenTelemetry costs the write path. Two server children of the same code, one
 * untraced and one exporting every span over OTLP (`OTEL_TRACES_SAMPLER=always_on`) to a sink in
 * this process that accepts and counts the requests; 1 event/call, many aggregates, closed loop.
 * Rounds of one window each, alternating which server goes first; the ratio of the median rates is
 * the figure, so drift and a passing stall of the machine are shared rather than landing on one.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { createDatabase } from "../core/index.js";
import { EventStoreService } from "../gen/tidemark/v1/event_store_pb.js";
import { createClient } from "../server/index.js";
import { analyzeSchema } from "./analyze.js";
import { appendLoad, mergeMeasured, withCpu, type Workload } from "./append-bench.js";
import type { LoadResult } from "./load.js";
import { median } from "./histogram.js";
import { cpuPerUnit } from "./cpu-time.js";
import type { MemorySampler } from "./memory.js";
import { startServerProcess, type ServerProcess } from "./processes.js";
import { compare, figureOf, type Figure } from "./report.js";
import type { BenchResources } from "./resources.js";
import type { StackEnv } from "./stack-env.js";

/** Settings of P1 traced. */
export interface TracingBenchOptions {
  readonly stack: StackEnv;
  readonly resources: BenchResources;
  readonly memory: MemorySampler;
  /** Appends in flight (closed loop). */
  readonly concurrency: number;
  /** Each measured window (one per server and round). */
  readonly measureMs: number;
  /** Rounds of one untraced and one traced window, alternating which goes first. */
  readonly rounds: number;
  readonly warmupMs: number;
  readonly serverNodeArgs: readonly string[];
  readonly log: (message: string) => void;
}

const SINGLE: Workload = { key: "single", name: "append 1 event/call, many aggregates" };

type Measured = { result: LoadResult; cpu: Record<string, number> };

/** Per-round rates as a report's extra (`{ "1": …, "2": … }`, events/s). */
function ratesByRound(rates: readonly number[]): Record<string, number> {
  return Object.fromEntries(rates.map((rate, i) => [String(i + 1), Math.round(rate)]));
}

function mergeAll(runs: readonly Measured[]): Measured {
  return runs.slice(1).reduce((merged, run) => mergeMeasured(merged, run), runs[0]!);
}

/** An OTLP/HTTP receiver that takes every export and answers success (an empty response message). */
async function startOtlpSink(): Promise<{ endpoint: string; requests: () => number; bytes: () => number; close: () => Promise<void> }> {
  let requests = 0;
  let bytes = 0;
  const server = http.createServer((req, res) => {
    req.on("data", (chunk: Buffer) => (bytes += chunk.length));
    req.on("end", () => {
      requests += 1;
      res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests: () => requests,
    bytes: () => bytes,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** Runs P1 traced on two server children of its own. */
export async function runTracingBench(o: TracingBenchOptions): Promise<Figure[]> {
  const sink = await startOtlpSink();
  const plainNames = o.resources.allocate("plain");
  const tracedNames = o.resources.allocate("traced");
  const servers: ServerProcess[] = [];
  const clients: Array<{ close(): void }> = [];
  const c = o.concurrency;
  const timing = { measureMs: o.measureMs, warmupMs: o.warmupMs, batchSize: 1 };
  try {
    const plain = await startServerProcess(o.stack, plainNames, { memory: o.memory, nodeArgs: o.serverNodeArgs, role: "server (untraced)" });
    servers.push(plain);
    const traced = await startServerProcess(o.stack, tracedNames, {
      memory: o.memory,
      nodeArgs: o.serverNodeArgs,
      role: "server (traced)",
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: sink.endpoint, OTEL_TRACES_SAMPLER: "always_on", OTEL_SERVICE_NAME: "tidemark-bench" },
    });
    servers.push(traced);
    const plainClient = createClient(EventStoreService, plain.address);
    const tracedClient = createClient(EventStoreService, traced.address);
    clients.push(plainClient, tracedClient);
    for (const [names, client, label] of [[plainNames, plainClient, "untraced"], [tracedNames, tracedClient, "traced"]] as const) {
      o.log(`P1 traced: warming the ${label} server up (${o.measureMs} ms at concurrency ${c}, not measured)`);
      await appendLoad(client, SINGLE, c, timing, `tr-warm-${label}`);
      const database = createDatabase<any>({ url: o.stack.pgUrl, schema: names.schema, poolSize: 1 });
      try {
        await analyzeSchema(database.db, names.schema);
      } finally {
        await database.close();
      }
    }
    // Rounds alternate which server goes first, so drift and a stall of the machine land on both;
    // the figure is the ratio of the median rates (one window per server and round).
    const sides = {
      untraced: { client: plainClient, server: plain, runs: [] as Measured[] },
      traced: { client: tracedClient, server: traced, runs: [] as Measured[] },
    };
    const exportsBefore = sink.requests();
    for (let round = 0; round < o.rounds; round++) {
      for (const label of round % 2 === 0 ? (["untraced", "traced"] as const) : (["traced", "untraced"] as const)) {
        const side = sides[label];
        const measured = await withCpu(() => appendLoad(side.client, SINGLE, c, timing, `tr-${label}-${round}`), side.server.child.pid);
        side.runs.push(measured);
        o.log(`P1 traced: round ${round + 1}/${o.rounds} ${label}: ${measured.result.rate.toFixed(0)} events/s`);
      }
    }
    const plainRuns = sides.untraced.runs;
    const tracedRuns = sides.traced.runs;
    const baselineRun = mergeAll(plainRuns);
    const tracedRun = mergeAll(tracedRuns);
    const plainRates = plainRuns.map((r) => r.result.rate);
    const tracedRates = tracedRuns.map((r) => r.result.rate);
    const baseline: Figure = {
      ...figureOf({ id: `p1.untraced.c${c}`, group: "P1", name: "append 1 event/call, untraced server", concurrency: c, unit: "events/s" }, baselineRun.result),
      rate: median(plainRates),
      extra: { cpuMsPerUnit: cpuPerUnit(baselineRun.cpu, baselineRun.result.totalUnits), roundRates: ratesByRound(plainRates) },
    };
    const figure = compare(
      {
        ...figureOf({ id: `p1.traced.c${c}`, group: "P1", name: "append 1 event/call, traced server (100 % sampled)", concurrency: c, unit: "events/s" }, tracedRun.result),
        rate: median(tracedRates),
      },
      baseline,
    );
    return [
      baseline,
      {
        ...figure,
        extra: {
          cpuMsPerUnit: cpuPerUnit(tracedRun.cpu, tracedRun.result.totalUnits),
          roundRates: ratesByRound(tracedRates),
          otlpExports: sink.requests() - exportsBefore,
          otlpBytesTotal: sink.bytes(),
        },
      },
    ];
  } finally {
    for (const client of clients) client.close();
    for (const server of servers) await server.child.stop();
    await sink.close();
  }
}

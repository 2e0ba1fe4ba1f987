/**
 * P5: what live subscribers cost the write path. Append p50 (1 event/call, many aggregates) on the
 * server child with no subscriber, then with N live `Subscribe` streams (from_end, consumed as fast
 * as they arrive) taking one event per message, then with N taking batches (max_batch), then with
 * none again; the two subscriber-free windows are merged into the baseline, so drift between them
 * is shared. Every stream must receive every event appended while
 * it was open: the figure says whether they did.
 */
import http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { createDatabase } from "../core/index.js";
import { EventStoreService, SubscribeRequestSchema, SubscribeResponseSchema } from "../gen/tidemark/v1/event_store_pb.js";
import { createClient } from "../server/index.js";
import { analyzeSchema } from "./analyze.js";
import { appendLoad, mergeMeasured, withCpu, type Workload } from "./append-bench.js";
import { cpuPerUnit } from "./cpu-time.js";
import { waitUntil } from "./load.js";
import type { MemorySampler } from "./memory.js";
import { startServerProcess } from "./processes.js";
import { compare, figureOf, type Figure } from "./report.js";
import type { BenchResources } from "./resources.js";
import type { StackEnv } from "./stack-env.js";

/** Settings of P5. */
export interface SubscriberBenchOptions {
  readonly stack: StackEnv;
  readonly resources: BenchResources;
  readonly memory: MemorySampler;
  /** Live Subscribe streams of the loaded window. */
  readonly subscribers: number;
  /** Appends in flight (closed loop). */
  readonly concurrency: number;
  /** Each measured window (three of them). */
  readonly measureMs: number;
  readonly warmupMs: number;
  readonly serverNodeArgs: readonly string[];
  readonly log: (message: string) => void;
}

/** What P5 found. */
export interface SubscriberBenchResult {
  readonly figures: Figure[];
}

/** Streams per client connection: a real deployment spreads subscribers over many connections. */
const STREAMS_PER_CONNECTION = 30;
/** Longest wait, after the load, for every stream to have received every event. */
const DELIVERY_TIMEOUT_MS = 60_000;

const SINGLE: Workload = { key: "single", name: "append 1 event/call, many aggregates" };

/** max_batch of the batched subscribers (reported beside the P5 target). */
export const BATCH = 100;

/** One window with live subscribers. */
interface LiveWindow {
  readonly maxBatch: number;
  readonly live: Awaited<ReturnType<typeof withCpu>>;
  readonly expected: number;
  readonly delivered: boolean;
  readonly drainMs: number;
  readonly counts: { readonly min: number; readonly max: number; readonly errors: number; readonly messages: number };
}

/** Runs P5 on its own server child. */
export async function runSubscriberBench(o: SubscriberBenchOptions): Promise<SubscriberBenchResult> {
  const names = o.resources.allocate("subs");
  const server = await startServerProcess(o.stack, names, { memory: o.memory, nodeArgs: o.serverNodeArgs, role: "server (P5)" });
  const client = createClient(EventStoreService, server.address);
  const database = createDatabase<any>({ url: o.stack.pgUrl, schema: names.schema, poolSize: 1 });
  const c = o.concurrency;
  const timing = { measureMs: o.measureMs, warmupMs: o.warmupMs, batchSize: 1 };
  let subscribers: Subscribers | undefined;
  try {
    o.log(`P5: warming the server up (${o.measureMs} ms at concurrency ${c}, not measured)`);
    await appendLoad(client, SINGLE, c, timing, "p5-warm");
    await analyzeSchema(database.db, names.schema);

    o.log(`P5: append at concurrency ${c} with no subscriber`);
    const before = await withCpu(() => appendLoad(client, SINGLE, c, timing, "p5-none-a"), server.child.pid);
    // The same number of subscribers twice: one event per message (the default, the target's), then
    // batches of up to BATCH events (max_batch), to show what batching changes under this load.
    const windows: LiveWindow[] = [];
    for (const maxBatch of [0, BATCH]) {
      const how = maxBatch === 0 ? "one event per message" : `max_batch ${maxBatch}`;
      o.log(`P5: opening ${o.subscribers} Subscribe streams (from_end, ${how}) and waiting until each is caught up`);
      subscribers = await openSubscribers(server.address, o.subscribers, maxBatch);
      o.log(`P5: append at concurrency ${c} with ${o.subscribers} live subscribers (${how})`);
      const live = await withCpu(() => appendLoad(client, SINGLE, c, timing, maxBatch === 0 ? "p5-live" : "p5-batched"), server.child.pid);
      const loadEnded = performance.now();
      // Every append that completed (inside the window or not) committed while every stream was open.
      const expected = live.result.totalUnits;
      const all = subscribers;
      const delivered = await waitUntil(() => (all.minEvents() >= expected ? true : undefined), "every subscriber to receive every event", DELIVERY_TIMEOUT_MS).then(
        () => true,
        () => false,
      );
      const drainMs = performance.now() - loadEnded;
      windows.push({ maxBatch, live, expected, delivered, drainMs, counts: { min: all.minEvents(), max: all.maxEvents(), errors: all.errors, messages: all.messages() } });
      subscribers.close();
      subscribers = undefined;
    }
    o.log(`P5: append at concurrency ${c} with no subscriber (again)`);
    const after = await withCpu(() => appendLoad(client, SINGLE, c, timing, "p5-none-b"), server.child.pid);

    const { result: noneResult, cpu: noneCpu } = mergeMeasured(before, after);
    const none: Figure = {
      ...figureOf({ id: `p5.none.c${c}`, group: "P5", name: "append 1 event/call, no subscriber", concurrency: c, unit: "events/s" }, noneResult),
      extra: { cpuMsPerUnit: cpuPerUnit(noneCpu, noneResult.totalUnits) },
    };
    const withSubs = windows.map(({ maxBatch, live, expected, delivered, drainMs, counts }) => {
      const id = maxBatch === 0 ? `p5.live.c${c}` : `p5.batched.c${c}`;
      const name = `append 1 event/call, ${o.subscribers} live subscribers${maxBatch === 0 ? "" : ` (max_batch ${maxBatch})`}`;
      const figure = compare(figureOf({ id, group: "P5", name, concurrency: c, unit: "events/s" }, live.result), none);
      const result: Figure = {
        ...figure,
        extra: {
          p50Ratio: (figure.p50Ms ?? Number.NaN) / (none.p50Ms ?? Number.NaN),
          subscribers: o.subscribers,
          maxBatch,
          // Each stream got exactly the events appended while it was open (no loss, no repeat).
          deliveredAll: delivered && counts.min === expected && counts.max === expected && counts.errors === 0 ? "yes" : "no",
          expectedPerSubscriber: expected,
          minReceived: counts.min,
          maxReceived: counts.max,
          streamErrors: counts.errors,
          // Events per message, over every stream: 1 without max_batch.
          eventsPerMessage: counts.messages === 0 ? 0 : Math.round((counts.min * o.subscribers * 100) / counts.messages) / 100,
          drainAfterLoadMs: Math.round(drainMs),
          cpuMsPerUnit: cpuPerUnit(live.cpu, live.result.totalUnits),
        },
      };
      if (result.extra?.["deliveredAll"] !== "yes") o.log(`  P5: delivery incomplete (${name}): expected ${expected} per stream, got ${counts.min}–${counts.max}, ${counts.errors} stream errors`);
      return result;
    });
    return { figures: [none, ...withSubs] };
  } finally {
    subscribers?.close();
    client.close();
    await database.close();
    await server.child.stop();
  }
}

/** Live Subscribe streams whose events are counted, not decoded. */
interface Subscribers {
  minEvents(): number;
  maxEvents(): number;
  /** Messages received after the caught-up markers, over every stream. */
  messages(): number;
  readonly errors: number;
  close(): void;
}

const SUBSCRIBE_PATH = `/${EventStoreService.typeName}/${EventStoreService.method.subscribe.name}`;

/**
 * Opens `n` from_end streams asking for `maxBatch` (0: one event per message) and resolves once
 * each has sent its caught-up marker. The streams are plain HTTP/2 requests that count events by
 * walking the message's fields without decoding them: a real subscriber decodes on its own
 * machine, and here every client cycle is taken from the two cores the server runs on (a grpc-js
 * client costs about as much per message as the server does).
 */
async function openSubscribers(address: string, n: number, maxBatch: number): Promise<Subscribers> {
  const body = toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, { start: { case: "fromEnd", value: {} }, maxBatch }));
  const request = Buffer.alloc(5 + body.length);
  request.writeUInt32BE(body.length, 1);
  request.set(body, 5);
  const sessions: http2.ClientHttp2Session[] = [];
  const streams: http2.ClientHttp2Stream[] = [];
  const events = new Array<number>(n).fill(0);
  let messages = 0;
  let caughtUp = 0;
  let errors = 0;
  let closing = false;
  for (let i = 0; i < n; i++) {
    if (i % STREAMS_PER_CONNECTION === 0) {
      const session = http2.connect(`http://${address}`, { settings: { initialWindowSize: 8 << 20 } });
      session.on("connect", () => session.setLocalWindowSize(32 << 20));
      session.on("error", () => {
        if (!closing) errors += 1;
      });
      sessions.push(session);
    }
    const stream = sessions[sessions.length - 1]!.request({ ":method": "POST", ":path": SUBSCRIBE_PATH, "content-type": "application/grpc", te: "trailers" });
    stream.end(request);
    let first = true;
    const counter = new MessageSplitter((message) => {
      if (first) {
        first = false;
        if (fromBinary(SubscribeResponseSchema, message).message.case !== "caughtUp") errors += 1;
        caughtUp += 1;
        return;
      }
      messages += 1;
      events[i]! += eventsIn(message);
    });
    stream.on("data", (chunk: Buffer) => counter.push(chunk));
    stream.on("trailers", (trailers) => {
      if (!closing && trailers["grpc-status"] !== "0") errors += 1;
    });
    stream.on("error", () => {
      if (!closing) errors += 1;
    });
    streams.push(stream);
  }
  await waitUntil(() => (caughtUp >= n ? true : errors > 0 ? Promise.reject(new Error(`${errors} subscribe streams failed`)) : undefined), `${n} subscribers to catch up`, 60_000, 20);
  return {
    minEvents: () => events.reduce((a, b) => Math.min(a, b), Number.POSITIVE_INFINITY),
    maxEvents: () => events.reduce((a, b) => Math.max(a, b), 0),
    messages: () => messages,
    get errors() {
      return errors;
    },
    close() {
      closing = true;
      for (const stream of streams) stream.close(http2.constants.NGHTTP2_CANCEL);
      for (const session of sessions) session.close();
    },
  };
}

/**
 * The events in an encoded SubscribeResponse, found by its field tags alone: one for `event` (1),
 * the entries of `events` (5), none for a marker or checkpoint.
 */
function eventsIn(message: Uint8Array): number {
  const reader = new BinaryReader(message);
  let count = 0;
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1) {
      count += 1;
      reader.skip(wireType);
    } else if (field === 5) {
      const batch = new BinaryReader(reader.bytes());
      while (batch.pos < batch.len) {
        const [inner, innerType] = batch.tag();
        if (inner === 1) count += 1;
        batch.skip(innerType);
      }
    } else {
      reader.skip(wireType);
    }
  }
  return count;
}

/** Splits a gRPC response body into its length-prefixed messages. */
class MessageSplitter {
  private readonly header = Buffer.alloc(5);
  private headerBytes = 0;
  private remaining = 0;
  private parts: Buffer[] = [];

  constructor(private readonly onMessage: (message: Buffer) => void) {}

  push(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.remaining === 0) {
        const take = Math.min(5 - this.headerBytes, chunk.length - at);
        chunk.copy(this.header, this.headerBytes, at, at + take);
        this.headerBytes += take;
        at += take;
        if (this.headerBytes < 5) return;
        this.headerBytes = 0;
        this.remaining = this.header.readUInt32BE(1);
        if (this.remaining === 0) this.done();
        continue;
      }
      const take = Math.min(this.remaining, chunk.length - at);
      this.parts.push(chunk.subarray(at, at + take));
      this.remaining -= take;
      at += take;
      if (this.remaining === 0) this.done();
    }
  }

  private done(): void {
    const parts = this.parts;
    this.parts = [];
    this.onMessage(parts.length === 1 ? parts[0]! : Buffer.concat(parts));
  }
}

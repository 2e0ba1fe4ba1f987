/**
 * OpenTelemetry end to end (docs/CONTRACT.md A4, docs/OPERATIONS.md "Traces"): a server, a relay and a consumer, each
 * its own `tidemark` process against the real PostgreSQL, S3Proxy and Kafka, export spans over
 * OTLP to a real Jaeger. One AppendEvents call with a client's `traceparent` must come back as one
 * trace: the gRPC call with validation, reservation, the segment's flush with its S3 PUT and the
 * commit, the relay's read and produce, and the consumer's claim, handler and done — each step
 * under the one it follows from.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventStoreService } from "../../gen/tidemark/v1/event_store_pb.js";
import { createClient, type ClientOf } from "../../server/grpc/client.js";
import { background, type Background, cleanEnv, freePort, ROOT } from "../helpers/cli-process.js";
import { startJaeger, type Jaeger, type JaegerSpan, type JaegerTrace } from "../helpers/jaeger.js";
import { dropProcessTestData, processTestEnv } from "../helpers/process-env.js";
import { uniqueId } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";

const id = uniqueId("otel");
let jaeger: Jaeger | undefined;
let dir: string;
let env: Record<string, string>;
const processes: Background[] = [];
let events: ClientOf<typeof EventStoreService>;

function tidemark(args: string[], extra: Record<string, string> = {}): Background {
  const child = background(process.execPath, ["--import", "tsx", path.join(ROOT, "cli/main.ts"), ...args], { ...env, ...extra });
  processes.push(child);
  return child;
}

beforeAll(async () => {
  jaeger = await startJaeger();
  dir = mkdtempSync(path.join(tmpdir(), "tidemark-otel-"));
  const handlerModule = path.join(dir, "traced-handler.mjs");
  writeFileSync(handlerModule, `export default { name: "traced", aggregateTypes: ["Order"], async handle() {} };\n`);
  const grpcPort = await freePort();
  env = cleanEnv(
    processTestEnv(id, {
      TIDEMARK_GRPC_ADDR: `127.0.0.1:${grpcPort}`,
      TIDEMARK_LOG_LEVEL: "warn",
      OTEL_EXPORTER_OTLP_ENDPOINT: jaeger.otlpEndpoint,
      OTEL_TRACES_SAMPLER: "parentbased_always_on",
      OTEL_BSP_SCHEDULE_DELAY: "200",
    }),
  );
  const server = tidemark(["server"]);
  await server.waitFor(/running {3}server/, "the server to serve");
  // The consumer subscribes to the topic the relay creates.
  const relay = tidemark(["relay"], { TIDEMARK_LOG_LEVEL: "info" });
  await relay.waitFor(/"msg":"topics ready"/, "the relay to create its topics");
  const consumer = tidemark(["consumer", handlerModule]);
  await consumer.waitFor(/running/, "the consumer to start");
  events = createClient(EventStoreService, `127.0.0.1:${grpcPort}`);
}, 45 * 60_000); // the first run on a machine builds Jaeger

afterAll(async () => {
  events?.close();
  for (const child of processes.reverse()) await child.stop("SIGTERM", 10_000);
  await jaeger?.stop();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  if (env !== undefined) await dropProcessTestData(id);
});

/** The one span named `name` (or matching it), failing with what the trace holds otherwise. */
function only(trace: JaegerTrace, name: string | RegExp): JaegerSpan {
  const found = trace.spans.filter((s) => (typeof name === "string" ? s.operationName === name : name.test(s.operationName)));
  expect(found.map((s) => s.operationName), `one ${String(name)} in ${trace.spans.map((s) => s.operationName).join(", ")}`).toHaveLength(1);
  return found[0]!;
}

function parentOf(span: JaegerSpan): string | undefined {
  return span.references.find((r) => r.refType === "CHILD_OF")?.spanID;
}

/** True when `ancestor` is `span`'s parent, grandparent, … */
function descends(trace: JaegerTrace, span: JaegerSpan, ancestor: JaegerSpan): boolean {
  const byId = new Map(trace.spans.map((s) => [s.spanID, s]));
  for (let at = parentOf(span); at !== undefined; at = parentOf(byId.get(at)!)) {
    if (at === ancestor.spanID) return true;
    if (!byId.has(at)) return false;
  }
  return false;
}

describe("OpenTelemetry traces over OTLP", () => {
  it("records one command as one trace from the client's call to the handler, every step under the one it follows (A4)", async () => {
    const traceId = randomBytes(16).toString("hex");
    const clientSpan = randomBytes(8).toString("hex");
    await events.appendEvents(
      { aggregateType: "Order", aggregateId: `${id}-1`, expectation: { case: "expectedSeq", value: 0n }, events: [{ eventId: `${id}-e1`, eventType: "Placed", data: { total: 3 } }] },
      { metadata: { traceparent: `00-${traceId}-${clientSpan}-01` } },
    );
    let last: JaegerTrace | undefined;
    const trace = await waitFor(
      async () => {
        last = await jaeger!.trace(traceId);
        return last !== undefined && last.spans.some((s) => s.operationName === "tidemark.done") ? last : undefined;
      },
      { what: "the handler's spans in Jaeger", timeoutMs: 60_000, intervalMs: 250 },
    ).catch((e: unknown) => {
      throw new Error(`${(e as Error).message}; the trace holds: ${last?.spans.map((s) => `${last!.serviceOf(s)}:${s.operationName}`).join(", ") ?? "nothing"}\n${processes.map((p) => p.stderr().slice(-2000)).join("\n")}`);
    });

    // The server: the gRPC call (instrumentation-grpc) continues the client's span.
    const call = only(trace, "grpc.tidemark.v1.EventStoreService/AppendEvents");
    expect(parentOf(call)).toBe(clientSpan);
    expect(trace.serviceOf(call)).toBe("tidemark-server");
    const validate = only(trace, "tidemark.validate");
    const reserve = only(trace, "tidemark.reserve");
    const write = only(trace, "tidemark.segment.write");
    for (const step of [validate, write]) expect(parentOf(step)).toBe(call.spanID);
    const flush = only(trace, "tidemark.segment.flush");
    expect(parentOf(flush)).toBe(write.spanID);
    // The flush reserves its appends' slots together (reserve_segment).
    expect(parentOf(reserve)).toBe(flush.spanID);
    // The segment PUT (instrumentation-aws-sdk) and the commit, with their PostgreSQL queries (instrumentation-pg).
    const put = only(trace, "S3.PutObject");
    expect(descends(trace, put, flush)).toBe(true);
    const commit = only(trace, "tidemark.commit");
    expect(parentOf(commit)).toBe(flush.spanID);
    expect(trace.spans.some((s) => s.operationName.startsWith("pg.query") && descends(trace, s, reserve))).toBe(true);
    expect(trace.spans.some((s) => s.operationName.startsWith("pg.query") && descends(trace, s, commit))).toBe(true);

    // The relay continues from the event's stored trace context: the gRPC call.
    const read = only(trace, "tidemark.relay.read");
    const produce = only(trace, "tidemark.relay.produce");
    for (const step of [read, produce]) {
      expect(parentOf(step)).toBe(call.spanID);
      expect(trace.serviceOf(step)).toBe("tidemark-relay");
    }

    // The consumer continues from the Kafka header, which names the produce span.
    const consume = only(trace, "tidemark.consume");
    expect(parentOf(consume)).toBe(produce.spanID);
    expect(trace.serviceOf(consume)).toBe("tidemark-consumer");
    const claim = only(trace, "tidemark.claim");
    const handle = only(trace, "tidemark.handle");
    const done = only(trace, "tidemark.done");
    for (const step of [claim, handle, done]) expect(parentOf(step)).toBe(consume.spanID);
    // In that order (a span's start is taken from Date.now(), so it may read up to 1 ms early).
    expect(handle.startTime).toBeGreaterThanOrEqual(claim.startTime + claim.duration - 1000);
    expect(done.startTime).toBeGreaterThanOrEqual(handle.startTime + handle.duration - 1000);
    expect(trace.spans.every((s) => s.traceID === traceId)).toBe(true);
  }, 120_000);

  it("records the embedded all-in-one process's trace too: the consumer continues the stored context (A4)", async () => {
    const grpcPort = await freePort();
    const dataDir = path.join(dir, "embedded");
    const handlerModule = path.join(dir, "traced-handler.mjs");
    const all = background(process.execPath, ["--import", "tsx", path.join(ROOT, "cli/main.ts"), "start", "--consumer", handlerModule], cleanEnv({
      TIDEMARK_DATA_DIR: dataDir,
      TIDEMARK_GRPC_ADDR: `127.0.0.1:${grpcPort}`,
      TIDEMARK_LOG_LEVEL: "warn",
      OTEL_EXPORTER_OTLP_ENDPOINT: jaeger!.otlpEndpoint,
      OTEL_BSP_SCHEDULE_DELAY: "200",
    }));
    processes.push(all);
    await all.waitFor(/tidemark: .*traced.* running|running {3}server, .*traced/, "the all-in-one process to run the handler");
    const client = createClient(EventStoreService, `127.0.0.1:${grpcPort}`);
    const traceId = randomBytes(16).toString("hex");
    try {
      await client.appendEvents(
        { aggregateType: "Order", aggregateId: `${id}-embedded`, expectation: { case: "expectedSeq", value: 0n }, events: [{ eventId: `${id}-embedded-e1`, eventType: "Placed", data: { total: 1 } }] },
        { metadata: { traceparent: `00-${traceId}-${randomBytes(8).toString("hex")}-01` } },
      );
    } finally {
      client.close();
    }
    const trace = await waitFor(
      async () => {
        const got = await jaeger!.trace(traceId);
        return got !== undefined && got.spans.some((s) => s.operationName === "tidemark.done") ? got : undefined;
      },
      { what: "the embedded process's handler spans in Jaeger", timeoutMs: 60_000, intervalMs: 250 },
    );
    const call = only(trace, "grpc.tidemark.v1.EventStoreService/AppendEvents");
    expect(trace.serviceOf(call)).toBe("tidemark-start");
    const flush = only(trace, "tidemark.segment.flush");
    expect(parentOf(flush)).toBe(only(trace, "tidemark.segment.write").spanID);
    expect(parentOf(only(trace, "tidemark.commit"))).toBe(flush.spanID);
    const consume = only(trace, "tidemark.consume");
    expect(parentOf(consume)).toBe(call.spanID);
    for (const step of ["tidemark.claim", "tidemark.handle", "tidemark.done"]) expect(parentOf(only(trace, step))).toBe(consume.spanID);
  }, 120_000);
});

/**
 * `tidemark start` in the services mode, in process: the server, the Kafka relay and the consumers
 * against the real PostgreSQL, S3Proxy and Kafka, with one metrics endpoint. Proves the W3C trace
 * context end to end — gRPC `traceparent` metadata → envelope metadata → Kafka header → the
 * handler's context and its log lines — and read-your-writes through the real relay. Without
 * TIDEMARK_KAFKA_BROKERS the server runs alone and says why the relay and projection do not.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ConsumedEvent, defineHandler } from "../../consumers/index.js";
import { InstanceService, ReadConsistency } from "../../gen/tidemark/v1/instance_pb.js";
import { startProcess, type TidemarkProcess } from "../../cli/process.js";
import { createClient, type ClientOf } from "../../server/grpc/client.js";
import { dropProcessTestData, processTestEnv, processTopics } from "../helpers/process-env.js";
import { captureLog } from "../helpers/relay-test.js";
import { uniqueId } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";
import { INSTANCES_PROJECTION_HANDLER } from "../../core/index.js";

const id = uniqueId("aio");
const { topic } = processTopics(id);
let env: Record<string, string>;
let proc: TidemarkProcess | undefined;
let instances: ClientOf<typeof InstanceService>;
const capture = captureLog("all-in-one");
const seen = new Map<string, { event: ConsumedEvent; contextTraceparent: string | undefined }>();

const TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

const tracer = defineHandler({
  name: "tracer",
  aggregateTypes: ["Instance"],
  async handle(event, _tx, context) {
    seen.set(event.eventId, { event, contextTraceparent: context.traceparent });
    context.log.info("traced handler ran");
  },
});

beforeAll(async () => {
  env = processTestEnv(id, { TIDEMARK_GRPC_ADDR: "127.0.0.1:0", TIDEMARK_METRICS_ADDR: "127.0.0.1:0", TIDEMARK_RELAY_PARTITIONS: "3" });
  proc = await startProcess(env, { server: true, relay: "if-kafka", projection: true, handlers: [tracer] }, { log: capture.log });
  instances = createClient(InstanceService, proc.grpcAddress!);
});

afterAll(async () => {
  instances?.close();
  await proc?.stop();
  await dropProcessTestData(id);
});

describe("all in one with the real services", () => {
  it("runs the server, the Kafka relay and the consumers in one process", () => {
    expect(proc!.mode).toBe("services");
    expect(proc!.components).toEqual(["server", `relay (${id} → Kafka ${env["TIDEMARK_KAFKA_BROKERS"]})`, INSTANCES_PROJECTION_HANDLER, "tracer"]);
    expect(proc!.warnings).toEqual([]);
  });

  it("carries the trace context from the gRPC call through Kafka to the handler and its logs", async () => {
    const created = await instances.createInstance(
      { database: "acme", className: "Person", instanceId: "traced", properties: { n: 1 }, commandId: `${id}-traced` },
      { metadata: { traceparent: TRACEPARENT } },
    );
    const eventId = created.result!.eventId;
    const got = await waitFor(() => seen.get(eventId), { what: "the handler to see the event", timeoutMs: 30_000 });
    // It came through Kafka: the relay's topic, and the traceparent as a header (R3).
    expect(got.event.topic).toBe(topic);
    expect(got.event.traceparent).toBe(TRACEPARENT);
    expect(got.contextTraceparent).toBe(TRACEPARENT);
    expect(got.event.metadata["traceparent"]).toBe(TRACEPARENT);
    const line = capture.lines.find((l) => l["msg"] === "traced handler ran" && l["eventId"] === eventId);
    expect(line).toMatchObject({ handler: "tracer", traceId: "0af7651916cd43dd8448eb211c80319c", traceparent: TRACEPARENT });
  });

  it("reads its own writes through the relay, Kafka and the projection", async () => {
    const created = await instances.createInstance({ database: "acme", className: "Person", instanceId: "ryw", properties: { v: 1 }, commandId: `${id}-ryw` });
    const got = await instances.getInstance(
      { database: "acme", className: "Person", instanceId: "ryw", consistency: ReadConsistency.AT_LEAST_POSITION, minPosition: created.result!.globalPosition },
      { deadlineMs: 15_000 },
    );
    expect(got.instance).toMatchObject({ version: 1n, properties: { v: 1 } });
  });

  it("serves server, relay and consumer metrics on one endpoint", async () => {
    await waitFor(async () => /tidemark_relay_published_total\{topic="[^"]+"\} [1-9]/.test(await (await fetch(`http://${proc!.metricsAddress}/metrics`)).text()), { what: "published events in the metrics" });
    const body = await (await fetch(`http://${proc!.metricsAddress}/metrics`)).text();
    for (const name of ["tidemark_grpc_calls_total", "tidemark_relay_lag_seconds", "tidemark_relay_active 1", "tidemark_consumer_events_processed_total", "tidemark_process_cpu_seconds_total"]) {
      expect(body, name).toContain(name);
    }
  });

  it("without Kafka runs the server alone and says what the relay and projection need", async () => {
    const { TIDEMARK_KAFKA_BROKERS: _kafka, ...withoutKafka } = env;
    const alone = await startProcess({ ...withoutKafka, TIDEMARK_METRICS_ADDR: "" }, { server: true, relay: "if-kafka", projection: true, handlers: [] }, { log: captureLog("alone", "warn").log });
    try {
      expect(alone.components).toEqual(["server"]);
      expect(alone.warnings.join("\n")).toMatch(/relay and projection are NOT running: .*need Kafka \(set TIDEMARK_KAFKA_BROKERS\)/);
    } finally {
      await alone.stop();
    }
  });
});

/**
 * The all-in-one process in the services mode serves as soon as its write path is ready, whatever
 * Kafka does (issue #11): started with Kafka unreachable (the process's brokers are a TCP proxy of
 * this test that refuses connections), it answers AppendEvents and reports the server SERVING while
 * the relay's and the projection's health entries say NOT_SERVING; once the proxy lets Kafka
 * through, both turn SERVING (a Watch sees it) and the event reaches the projection. A process
 * whose parts are still starting stops gracefully.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { EventStoreService } from "../../gen/tidemark/v1/event_store_pb.js";
import { InstanceService, ReadConsistency } from "../../gen/tidemark/v1/instance_pb.js";
import { startProcess, type TidemarkProcess } from "../../cli/process.js";
import { createClient, type ClientOf } from "../../server/grpc/client.js";
import { dropProcessTestData, processTestEnv } from "../helpers/process-env.js";
import { captureLog } from "../helpers/relay-test.js";
import { startTcpProxy, type TcpProxy } from "../helpers/tcp-proxy.js";
import { stackBrokers, uniqueId } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";
import { INSTANCES_PROJECTION_HANDLER } from "../../core/index.js";

const id = uniqueId("bg");
// The documented names (docs/OPERATIONS.md), spelled out: they are what operators probe.
const RELAY_HEALTH = "tidemark.relay";
const PROJECTION_HEALTH = "tidemark.consumer.projection:instances";
let kafka: TcpProxy;
let env: Record<string, string>;
let proc: TidemarkProcess | undefined;
let health: ClientOf<typeof Health>;
let events: ClientOf<typeof EventStoreService>;
let instances: ClientOf<typeof InstanceService>;
const capture = captureLog("background-start");
let earlyPosition = 0n;

/** `promise`, or a rejection naming `what` after `ms`: the old startProcess never returned while Kafka was down. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms))),
  ]);
}

async function status(service: string): Promise<ServingStatus> {
  return (await health.check({ service })).status;
}

beforeAll(async () => {
  const [host, port] = stackBrokers()[0]!.split(":");
  kafka = await startTcpProxy(host!, Number(port));
  kafka.down();
  env = processTestEnv(id, { TIDEMARK_KAFKA_BROKERS: `127.0.0.1:${kafka.port}`, TIDEMARK_GRPC_ADDR: "127.0.0.1:0", TIDEMARK_METRICS_ADDR: "" });
});

afterAll(async () => {
  health?.close();
  events?.close();
  instances?.close();
  await proc?.stop();
  await kafka?.close();
  await dropProcessTestData(id);
});

describe("the all-in-one process with Kafka unreachable at start", () => {
  it("serves appends at once and reports the relay and the projection as still starting", async () => {
    proc = await within(
      startProcess(env, { server: true, relay: "if-kafka", projection: true, handlers: [] }, { log: capture.log }),
      20_000,
      "startProcess returning while Kafka is unreachable",
    );
    health = createClient(Health, proc.grpcAddress!);
    events = createClient(EventStoreService, proc.grpcAddress!);
    instances = createClient(InstanceService, proc.grpcAddress!);

    const appended = await events.appendEvents({
      aggregateType: "Order",
      aggregateId: "o-1",
      expectation: { case: "noStream", value: {} },
      events: [{ eventId: `${id}-order-1`, eventType: "Placed", data: { n: 1 } }],
    });
    expect(appended.events[0]!.sequenceNumber).toBe(1n);
    const early = await instances.createInstance({ database: "acme", className: "Person", instanceId: "early", properties: { v: 1 }, commandId: `${id}-early` });
    earlyPosition = early.result!.globalPosition;

    expect(await status("")).toBe(ServingStatus.SERVING);
    expect(await status(EventStoreService.typeName)).toBe(ServingStatus.SERVING);
    expect(await status(InstanceService.typeName)).toBe(ServingStatus.SERVING);
    // Kafka is still refused: neither part can be up, whatever time has passed.
    expect(await status(RELAY_HEALTH)).toBe(ServingStatus.NOT_SERVING);
    expect(await status(PROJECTION_HEALTH)).toBe(ServingStatus.NOT_SERVING);
    expect(proc.components).toEqual(["server", `relay (${id} → Kafka 127.0.0.1:${kafka.port})`, INSTANCES_PROJECTION_HANDLER]);
    const relay = `relay (${id} → Kafka 127.0.0.1:${kafka.port})`;
    expect(proc.starting()).toEqual([relay, INSTANCES_PROJECTION_HANDLER]);
    expect(proc.parts()).toEqual([
      { component: relay, health: RELAY_HEALTH, state: "starting" },
      { component: INSTANCES_PROJECTION_HANDLER, health: PROJECTION_HEALTH, state: "starting" },
    ]);
    expect(proc.consumers).toBeUndefined();
    const started = capture.lines.find((l) => l["msg"] === "tidemark started");
    expect(started).toMatchObject({ components: proc.components, starting: [relay, INSTANCES_PROJECTION_HANDLER] });
  });

  it("turns the relay and the projection SERVING once Kafka is reachable, and the event reaches the projection", { timeout: 120_000 }, async () => {
    const watched: ServingStatus[] = [];
    const watch = new AbortController();
    const watching = (async () => {
      try {
        for await (const update of health.watch({ service: PROJECTION_HEALTH }, { signal: watch.signal })) watched.push(update.status);
      } catch {
        // cancelled at the end of the test
      }
    })();
    await waitFor(() => watched.length > 0, { what: "the Watch stream's first status" });
    expect(watched).toEqual([ServingStatus.NOT_SERVING]);

    kafka.up();
    await waitFor(async () => (await status(RELAY_HEALTH)) === ServingStatus.SERVING, { what: "the relay SERVING", timeoutMs: 60_000 });
    await waitFor(async () => (await status(PROJECTION_HEALTH)) === ServingStatus.SERVING, { what: "the projection SERVING", timeoutMs: 60_000 });
    await waitFor(() => watched.includes(ServingStatus.SERVING), { what: "the Watch stream to see SERVING" });
    expect(watched).toEqual([ServingStatus.NOT_SERVING, ServingStatus.SERVING]);
    watch.abort();
    await watching;

    // The instance created while Kafka was down went relay → Kafka → projection.
    const got = await instances.getInstance(
      { database: "acme", className: "Person", instanceId: "early", consistency: ReadConsistency.AT_LEAST_POSITION, minPosition: earlyPosition },
      { deadlineMs: 30_000 },
    );
    expect(got.instance).toMatchObject({ version: 1n, properties: { v: 1 } });
    await waitFor(() => proc!.starting().length === 0, { what: "every part running" });
    expect(proc!.consumers).toBeDefined();
    await proc!.ready;
    expect(proc!.parts().every((p) => p.state === "running")).toBe(true);
  });
});

describe("a process whose parts are still starting", () => {
  it("stops gracefully, aborting the starts", { timeout: 60_000 }, async () => {
    kafka.down();
    const lines = captureLog("background-stop");
    const stuck = await within(
      startProcess({ ...env, TIDEMARK_PG_SCHEMA: id }, { server: true, relay: "if-kafka", projection: true, handlers: [] }, { log: lines.log }),
      20_000,
      "startProcess returning while Kafka is unreachable",
    );
    expect(stuck.starting()).toContain(INSTANCES_PROJECTION_HANDLER);
    await stuck.stop();
    expect(stuck.parts().map((p) => p.state)).toEqual(["stopped", "stopped"]);
    await stuck.ready;
    expect(lines.lines.some((l) => l["msg"] === "consumers started")).toBe(false);
    expect(lines.lines.some((l) => l["msg"] === "tidemark stopped")).toBe(true);
    kafka.up();
  });
});

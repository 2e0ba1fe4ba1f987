/**
 * The embedded all-in-one process (`tidemark start` with no services): server, the relay's role in
 * process and consumers on one PGlite database and one object store. The consumer contract where it
 * does not name Kafka: every event applied exactly once and in per-aggregate order (C1, C2),
 * read-your-writes through the projection (C6), retries and dead letters (C3), offsets durable
 * across a restart (C5, R4); W3C trace context from the gRPC call to the handler and its logs; one
 * metrics endpoint for the whole process; one process per data directory.
 */
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { sql } from "kysely";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DataDirInUseError, openBackends } from "../../core/backends.js";
import { migrateToLatest } from "../../core/db/database.js";
import { DEAD_LETTER_PREFIX, defineHandler, PoisonError } from "../../consumers/index.js";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { EventStoreService } from "../../gen/tidemark/v1/event_store_pb.js";
import { InstanceService, ReadConsistency } from "../../gen/tidemark/v1/instance_pb.js";
import { ProcessingService, ProcessingState } from "../../gen/tidemark/v1/processing_pb.js";
import { startProcess, type TidemarkProcess } from "../../cli/process.js";
import { loadServerConfig } from "../../server/config.js";
import { createClient, type ClientOf } from "../../server/grpc/client.js";
import { cleanEnv, tidemark, withoutStoreClients } from "../helpers/cli-process.js";
import { createEffectsTable, recordEffect } from "../helpers/consumer-effects.js";
import { effectCounts, effectOrder, registryRow } from "../helpers/consumer-env.js";
import { waitFor } from "../helpers/wait-for.js";
import { type ConsumerDatabase, INSTANCES_PROJECTION_HANDLER } from "../../core/index.js";

let dir: string;
let env: Record<string, string>;
let proc: TidemarkProcess;
let instances: ClientOf<typeof InstanceService>;
let events: ClientOf<typeof EventStoreService>;
let processing: ClientOf<typeof ProcessingService>;
const logLines: Array<Record<string, unknown>> = [];
const traced = new Map<string, { fromContext: string | undefined; fromEvent: string | undefined }>();

const TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";

/** Records every event once per application, in the registry's transaction (rolled back with it). */
const effects = defineHandler({
  name: "effects",
  async handle(event, tx) {
    await recordEffect(tx, "effects", event.eventId, event.seq, event.aggregateId);
  },
});

/** Sees the trace context, and logs through the context's logger. */
const tracer = defineHandler({
  name: "tracer",
  aggregateTypes: ["Instance"],
  async handle(event, _tx, context) {
    traced.set(event.eventId, { fromContext: context.traceparent, fromEvent: event.traceparent });
    context.log.info({ eventType: event.eventType }, "traced handler ran");
  },
});

/** Fails `Flaky` events twice (retried with backoff), and `Poison` events for good (dead letter). */
const flaky = defineHandler({
  name: "flaky",
  aggregateTypes: ["Flaky", "Poison"],
  async handle(event, _tx, context) {
    if (event.aggregateType === "Poison") throw new PoisonError("this event can never be applied");
    if (context.attempt < 3) throw new Error(`transient failure on attempt ${context.attempt}`);
  },
});

async function start(): Promise<void> {
  const stream = { write: (line: string) => void logLines.push(JSON.parse(line) as Record<string, unknown>) };
  proc = await startProcess(env, { server: true, relay: "if-kafka", projection: true, handlers: [effects, tracer, flaky] }, { log: pino({ level: "info" }, stream) });
  instances = createClient(InstanceService, proc.grpcAddress!);
  events = createClient(EventStoreService, proc.grpcAddress!);
  processing = createClient(ProcessingService, proc.grpcAddress!);
}

async function stop(): Promise<void> {
  instances?.close();
  events?.close();
  processing?.close();
  await proc?.stop();
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "tidemark-aio-"));
  env = {
    TIDEMARK_DATA_DIR: dir,
    TIDEMARK_GRPC_ADDR: "127.0.0.1:0",
    TIDEMARK_METRICS_ADDR: "127.0.0.1:0",
    TIDEMARK_CONSUMER_LEASE_SECONDS: "5",
    TIDEMARK_CONSUMER_HEARTBEAT_SECONDS: "1",
    TIDEMARK_CONSUMER_RETRY_BASE_MS: "100",
    TIDEMARK_CONSUMER_RETRY_MAX_MS: "500",
    TIDEMARK_CONSUMER_MAX_ATTEMPTS: "5",
    TIDEMARK_SHUTDOWN_GRACE_MS: "1000",
  };
  // The side-effect table, made before the process opens the data directory.
  const backends = await openBackends(loadServerConfig(env));
  await migrateToLatest(backends.database.db, backends.database.schema);
  await createEffectsTable(backends.database.db);
  await backends.close();
  await start();
});

afterAll(async () => {
  await stop();
  await rm(dir, { recursive: true, force: true });
});

// The one embedded database, through the server: the consumers may still be starting in the background.
const db = () => proc.server!.database.db as unknown as import("kysely").Kysely<ConsumerDatabase>;
const addr = (instanceId: string) => ({ database: "acme", className: "Person", instanceId });

describe("embedded all-in-one", () => {
  it("runs the server, the relay's role and the consumers on the embedded storage", () => {
    expect(proc.mode).toBe("embedded");
    expect(proc.dataDir).toBe(dir);
    expect(proc.components).toEqual(["server", "relay (in process: commit log → consumers)", INSTANCES_PROJECTION_HANDLER, "effects", "tracer", "flaky"]);
    expect(proc.warnings).toEqual([]);
  });

  it("reports the relay's role and every consumer in the health service once they run", async () => {
    const health = createClient(Health, proc.grpcAddress!);
    try {
      expect((await health.check({ service: "" })).status).toBe(ServingStatus.SERVING);
      for (const service of ["tidemark.relay", ...[INSTANCES_PROJECTION_HANDLER, "effects", "tracer", "flaky"].map((h) => `tidemark.consumer.${h}`)]) {
        await waitFor(async () => (await health.check({ service })).status === ServingStatus.SERVING, { what: `${service} SERVING` });
      }
      await proc.ready;
      expect(proc.starting()).toEqual([]);
      expect(proc.parts().map((p) => [p.component, p.health, p.state])).toEqual([
        ["relay (in process: commit log → consumers)", "tidemark.relay", "running"],
        [INSTANCES_PROJECTION_HANDLER, `tidemark.consumer.${INSTANCES_PROJECTION_HANDLER}`, "running"],
        ["effects", "tidemark.consumer.effects", "running"],
        ["tracer", "tidemark.consumer.tracer", "running"],
        ["flaky", "tidemark.consumer.flaky", "running"],
      ]);
      expect(proc.consumers?.handlers).toEqual([INSTANCES_PROJECTION_HANDLER, "effects", "tracer", "flaky"]);
    } finally {
      health.close();
    }
  });

  it("applies every command exactly once, in per-aggregate order, and the read model shows it", async () => {
    const ids = Array.from({ length: 8 }, (_, i) => `p${i}`);
    // Instances in parallel, each one's commands in sequence: the source interleaves aggregates.
    await Promise.all(
      ids.map(async (id) => {
        await instances.createInstance({ ...addr(id), properties: { n: 0 }, commandId: `${id}-c0` });
        for (let v = 1; v <= 4; v++) await instances.updateInstance({ ...addr(id), properties: { n: v }, expectedSeq: BigInt(v), commandId: `${id}-c${v}` });
      }),
    );
    const eventIds: string[] = [];
    for (const id of ids) {
      for await (const r of events.readStream({ aggregateType: "Instance", aggregateId: `acme/Person/${id}` })) eventIds.push(r.event!.eventId);
    }
    expect(eventIds).toHaveLength(40);
    await waitFor(async () => (await effectCounts(db(), "effects")).size >= 40, { what: "every event applied", timeoutMs: 30_000 });
    const counts = await effectCounts(db(), "effects");
    for (const id of eventIds) expect(counts.get(id), id).toBe(1);
    for (const id of ids) expect(await effectOrder(db(), "effects", `acme/Person/${id}`)).toEqual([1, 2, 3, 4, 5]);
    for (const id of eventIds) expect((await registryRow(db(), "effects", id))?.state).toBe("done");
    for (const id of ids) {
      const eventual = await waitFor(async () => {
        const got = await instances.getInstance({ ...addr(id), consistency: ReadConsistency.EVENTUAL });
        return got.instance?.version === 5n ? got.instance : undefined;
      }, { what: `read model of ${id}` });
      const strong = (await instances.getInstance(addr(id))).instance!;
      expect(eventual.properties).toEqual(strong.properties);
      expect(eventual.properties).toEqual({ n: 4 });
    }
  });

  it("reads its own writes through the projection (AT_LEAST_POSITION)", async () => {
    for (let i = 0; i < 5; i++) {
      const created = await instances.createInstance({ ...addr(`ryw${i}`), properties: { i }, commandId: `ryw-${i}` });
      const got = await instances.getInstance({
        ...addr(`ryw${i}`),
        consistency: ReadConsistency.AT_LEAST_POSITION,
        minPosition: created.result!.globalPosition,
      });
      expect(got.instance).toMatchObject({ version: 1n, properties: { i } });
    }
  });

  it("carries the W3C trace context from the gRPC call to the handler and its logs", async () => {
    const created = await instances.createInstance({ ...addr("traced"), properties: {}, commandId: "traced-1" }, { metadata: { traceparent: TRACEPARENT } });
    const eventId = created.result!.eventId;
    const seen = await waitFor(() => traced.get(eventId), { what: "the traced handler" });
    expect(seen).toEqual({ fromContext: TRACEPARENT, fromEvent: TRACEPARENT });
    const line = logLines.find((l) => l["msg"] === "traced handler ran" && l["eventId"] === eventId);
    expect(line).toMatchObject({ handler: "tracer", traceId: TRACE_ID, traceparent: TRACEPARENT, component: "consumers" });
    // The envelope keeps it too (the server copied the call's metadata).
    const stored = [];
    for await (const r of events.readStream({ aggregateType: "Instance", aggregateId: "acme/Person/traced" })) stored.push(r.event!);
    expect(stored[0]!.metadata["traceparent"]).toBe(TRACEPARENT);
  });

  it("retries a failing handler with backoff and dead-letters poison into the object store", async () => {
    const flakyEvent = "flaky-event-1";
    const poisonEvent = "poison-event-1";
    await events.appendEvents({ aggregateType: "Flaky", aggregateId: "f1", expectation: { case: "noStream", value: {} }, events: [{ eventId: flakyEvent, eventType: "Happened", data: {} }] });
    await events.appendEvents({ aggregateType: "Poison", aggregateId: "x1", expectation: { case: "noStream", value: {} }, events: [{ eventId: poisonEvent, eventType: "Happened", data: {} }] });
    const done = await waitFor(async () => {
      const row = await registryRow(db(), "flaky", flakyEvent);
      return row?.state === "done" ? row : undefined;
    }, { what: "the flaky event done", timeoutMs: 30_000 });
    expect(done.attempts).toBe(3);
    const dead = await waitFor(async () => {
      const row = await registryRow(db(), "flaky", poisonEvent);
      return row?.state === "dead_lettered" ? row : undefined;
    }, { what: "the poison event dead-lettered" });
    expect(dead.last_error).toMatch(/can never be applied/);
    const letters = await proc.server!.objects.list(`${DEAD_LETTER_PREFIX}/flaky/`);
    expect(letters).toEqual([`${DEAD_LETTER_PREFIX}/flaky/poison-event-1/000001.json`]);
    const letter = JSON.parse((await proc.server!.objects.get(letters[0]!))!) as { headers: Record<string, string>; value: string };
    expect(letter.headers).toMatchObject({ "dlq-handler": "flaky", "dlq-reason": "poison", "dlq-event-id": poisonEvent, event_id: poisonEvent });
    expect(JSON.parse(letter.value)).toMatchObject({ event_id: poisonEvent, aggregate_type: "Poison" });
    const status = await processing.getProcessingStatus({ key: { case: "eventId", value: poisonEvent } });
    expect(status.events[0]!.handlers.find((h) => h.handler === "flaky")?.state).toBe(ProcessingState.DEAD_LETTERED);

    // What an operator sees and does with it: `tidemark dead-letters`, a separate process that
    // talks gRPC and loads no client of the store.
    const cli = withoutStoreClients(cleanEnv({ TIDEMARK_GRPC_ADDR: proc.grpcAddress! }));
    const list = await tidemark(["dead-letters", "list", "flaky"], cli);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/^flaky: 1 dead-lettered, 0 parked, 0 replay requested$/m);
    expect(list.stdout).toMatch(/^flaky {2}Poison\/x1#1 {2}dead_lettered +attempts 1 {2}last failure \S+ {2}event_id=poison-event-1 {2}cause: .*can never be applied/m);
    const show = await tidemark(["dead-letters", "show", "flaky", poisonEvent, "--json"], cli);
    expect(show.code, show.stderr).toBe(0);
    expect(JSON.parse(show.stdout)).toMatchObject({ dead_letter: { event_id: poisonEvent, handler: "flaky", state: "PROCESSING_STATE_DEAD_LETTERED" } });
    expect(JSON.parse(Buffer.from((JSON.parse(show.stdout) as { message_value: string }).message_value, "base64").toString("utf8"))).toMatchObject({ event_id: poisonEvent });
    const discard = await tidemark(["dead-letters", "discard", "flaky", poisonEvent, "--reason", "cannot be applied, by design"], cli);
    expect(discard.code, discard.stderr).toBe(0);
    expect(discard.stdout).toBe(`${poisonEvent}\n`);
    expect((await tidemark(["dead-letters", "list", "flaky"], cli)).stdout).toMatch(/^flaky: 0 dead-lettered, 0 parked, 0 replay requested$/m);
  });

  it("serves the metrics of every part on one endpoint", async () => {
    const body = await (await fetch(`http://${proc.metricsAddress}/metrics`)).text();
    for (const name of [
      "tidemark_grpc_calls_total",
      "tidemark_grpc_call_seconds_bucket",
      "tidemark_append_conflicts_total",
      "tidemark_committed_events_total",
      "tidemark_consumer_events_processed_total",
      "tidemark_consumer_retries_total",
      "tidemark_consumer_dead_letters_total",
      "tidemark_consumer_lease_takeovers_total",
      "tidemark_relay_embedded_delivered_total",
      "tidemark_relay_embedded_lag_positions",
      "tidemark_relay_embedded_lag_seconds",
      "tidemark_process_cpu_seconds_total",
    ]) {
      expect(body, name).toContain(name);
    }
    expect(body).toMatch(/tidemark_consumer_retries_total\{handler="flaky"\} 2/);
    expect(body).toMatch(/tidemark_consumer_dead_letters_total\{handler="flaky",reason="poison"\} 1/);
  });

  it("lets one process only open the data directory", async () => {
    await expect(openBackends(loadServerConfig(env))).rejects.toThrow(DataDirInUseError);
    await expect(openBackends(loadServerConfig(env))).rejects.toThrow(new RegExp(`in use by process ${process.pid}`));
  });

  it("keeps data and consumer offsets across a restart", async () => {
    const before = await effectCounts(db(), "effects");
    const total = [...before.values()].reduce((a, b) => a + b, 0);
    const { rows } = await sql<{ name: string; position: number }>`select name, position from relay_checkpoints order by name`.execute(db());
    expect(rows.map((r) => r.name)).toContain("embedded:tidemark.effects");
    await stop();
    logLines.length = 0;
    await start();
    expect((await instances.getInstance(addr("p3"))).instance).toMatchObject({ version: 5n, properties: { n: 4 } });
    expect((await instances.getInstance({ ...addr("p3"), consistency: ReadConsistency.EVENTUAL })).instance?.version).toBe(5n);
    const next = await instances.createInstance({ ...addr("after-restart"), properties: {}, commandId: "after-restart" });
    await waitFor(async () => (await registryRow(db(), "effects", next.result!.eventId))?.state === "done", { what: "the new event applied" });
    // Each group resumed at its checkpoint: nothing was delivered again, nothing applied twice.
    const after = await effectCounts(db(), "effects");
    expect([...after.values()].reduce((a, b) => a + b, 0)).toBe(total + 1);
    expect([...after.values()].every((n) => n === 1)).toBe(true);
    const body = await (await fetch(`http://${proc.metricsAddress}/metrics`)).text();
    expect(body).not.toMatch(/outcome="duplicate"/);
  });
});

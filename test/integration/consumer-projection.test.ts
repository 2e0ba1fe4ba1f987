/**
 * The instances projection end to end (docs/CONTRACT.md C2, C6): commands through the real server, a
 * test relay publishing the commit log to real Kafka, the projection applying it. Reads with each
 * consistency level, read-your-writes, a rebuild from the store (S3 + commit log) that equals the
 * live projection and is resumable, and the processing-status call over gRPC.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sql } from "kysely";
import { CommitListener } from "../../core/commit-listener.js";
import { createDatabase, type Database } from "../../core/db/database.js";
import { createLogger } from "../../core/log.js";
import { type Instance, ReadConsistency } from "../../gen/tidemark/v1/instance_pb.js";
import { ProcessingService, ProcessingState } from "../../gen/tidemark/v1/processing_pb.js";
import { createClient, type ClientOf } from "../../server/grpc/client.js";
import { type ProjectionHandle, pruneDone, rebuildInstances, type RebuildProgress, startProjection } from "../../consumers/index.js";
import { consumerTestConfig, consumerTestId, registryRow, testEnvelope } from "../helpers/consumer-env.js";
import { openTestKafka, publishCommitted, type TestKafka } from "../helpers/consumer-kafka.js";
import { expectStatus, grpc } from "../helpers/grpc-errors.js";
import { startTestServer, stackEnv, testServerConfig, type TestServer } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";
import { type ConsumerDatabase, createInstanceReadModel, INSTANCES_PROJECTION_HANDLER } from "../../core/index.js";

const id = consumerTestId("cprj");
let t: TestServer;
let tk: TestKafka;
let database: Database<ConsumerDatabase>;
let projection: ProjectionHandle;
let processing: ClientOf<typeof ProcessingService>;
const topic = `${id}.events`;

// The test relay: publishes the server's commits to Kafka in the background, as relay/ does, woken
// by the commit notifications (polling each second only as the fallback).
let published = 0;
const relaying = new AbortController();
let relayLoop: Promise<void> | undefined;
let commits: CommitListener | undefined;

beforeAll(async () => {
  const serverConfig = testServerConfig();
  database = createDatabase<ConsumerDatabase>({ url: stackEnv()["TIDEMARK_PG_URL"]!, schema: serverConfig.pgSchema, poolSize: 4 });
  // A short maximum wait, so a read that cannot be satisfied answers UNAVAILABLE quickly.
  t = await startTestServer(serverConfig, { readModel: createInstanceReadModel(database.db, { maxWaitMs: 1500 }) });
  tk = await openTestKafka(`${id}.`);
  await tk.createTopic(topic, 3);
  projection = await startProjection(consumerTestConfig(id, { TIDEMARK_PG_SCHEMA: serverConfig.pgSchema, TIDEMARK_CONSUMER_TOPICS: topic }), { housekeeping: false });
  processing = createClient(ProcessingService, t.server.address) as ClientOf<typeof ProcessingService>;
  const listener = new CommitListener(stackEnv()["TIDEMARK_PG_URL"]!, serverConfig.pgSchema, createLogger("test-relay", "fatal"));
  commits = listener;
  await listener.start();
  relayLoop = (async () => {
    while (!relaying.signal.aborted) {
      const announced = listener.lastAnnounced;
      published = await publishCommitted(t.server.database.db, t.server.objects, tk, topic, published).catch(() => published);
      if (listener.lastAnnounced === announced) await listener.wait(1000, relaying.signal);
    }
  })();
});
afterAll(async () => {
  relaying.abort();
  await relayLoop;
  await commits?.close();
  processing?.close();
  await projection?.stop();
  await tk?.close();
  await database?.close();
  await t?.close();
});

const addr = (instanceId: string, className = "Person") => ({ database: "acme", className, instanceId });

/** Waits until the projection reflects every event up to the server's current head. */
async function caughtUp(): Promise<number> {
  const { rows } = await sql<{ position: number }>`select position from global_counter`.execute(database.db);
  const head = Number(rows[0]!.position);
  const reader = createInstanceReadModel(database.db, { maxWaitMs: 30_000 });
  expect(await reader.waitForPosition(head, new AbortController().signal)).toBe(true);
  return head;
}

/** Every listed instance of a class in `acme`, two per page, page `n` read at `consistencyOf(n)`. */
async function listed(className: string, consistencyOf: (page: number) => ReadConsistency, includeDeleted = false): Promise<Instance[]> {
  const out: Instance[] = [];
  let pageToken = "";
  for (let page = 0; ; page++) {
    const answer = await t.instances.listInstances({ database: "acme", className, pageSize: 2, pageToken, includeDeleted, consistency: consistencyOf(page) });
    out.push(...answer.instances);
    pageToken = answer.nextPageToken;
    if (pageToken === "") return out;
  }
}

async function snapshot(table = "instances") {
  const { rows } = await sql<Record<string, any>>`select * from ${sql.id(table)} order by database, class_name, instance_id`.execute(database.db);
  return rows;
}

describe("reads with a consistency level", () => {
  it("serves EVENTUAL reads from the read model, equal to STRONG reads once caught up", async () => {
    for (let i = 0; i < 6; i++) await t.instances.createInstance({ ...addr(`p${i}`), properties: { n: i, tags: ["a"] }, commandId: `c-p${i}-1` });
    await t.instances.updateInstance({ ...addr("p1"), properties: { n: 10, nick: "x" }, expectedSeq: 1n, commandId: "c-p1-2" });
    await t.instances.updateInstance({ ...addr("p1"), properties: { nick: null }, expectedSeq: 2n, commandId: "c-p1-3" });
    await t.instances.deleteInstance({ ...addr("p2"), expectedSeq: 1n, commandId: "c-p2-2" });
    await caughtUp();

    for (let i = 0; i < 6; i++) {
      const strong = await t.instances.getInstance({ ...addr(`p${i}`), consistency: ReadConsistency.STRONG });
      const eventual = await t.instances.getInstance({ ...addr(`p${i}`), consistency: ReadConsistency.EVENTUAL });
      const unspecified = await t.instances.getInstance(addr(`p${i}`));
      expect(eventual.instance).toEqual(strong.instance);
      expect(unspecified.instance).toEqual(strong.instance);
    }
    expect((await t.instances.getInstance({ ...addr("p1"), consistency: ReadConsistency.EVENTUAL })).instance).toMatchObject({ version: 3n, properties: { n: 10, tags: ["a"] } });
    await expectStatus(t.instances.getInstance({ ...addr("ghost"), consistency: ReadConsistency.EVENTUAL }), grpc.status.NOT_FOUND);

    const pages = async (consistency: ReadConsistency, includeDeleted: boolean) => (await listed("Person", () => consistency, includeDeleted)).map((i) => `${i.instanceId}@${i.version}`);
    expect(await pages(ReadConsistency.EVENTUAL, false)).toEqual(await pages(ReadConsistency.STRONG, false));
    expect(await pages(ReadConsistency.EVENTUAL, true)).toEqual(await pages(ReadConsistency.STRONG, true));
    expect(await pages(ReadConsistency.EVENTUAL, false)).toEqual(["p0@1", "p1@3", "p3@1", "p4@1", "p5@1"]);
  });

  it("takes one listing's page token at either consistency: STRONG and EVENTUAL pages mixed list each id once, in code-point order", async () => {
    // Both listings order ids by code point (the strong one over stream_heads, the eventual one
    // over the read model), so a token ends a page at the same id for either: a client may switch
    // consistency between pages and still see every instance once.
    const ids = ["b", "\u{1F600}", "B", "\uFF21", "a", "é", "~"];
    for (const [i, instanceId] of ids.entries()) await t.instances.createInstance({ ...addr(instanceId, "Mixed"), properties: { i }, commandId: `c-mixed-${i}` });
    await caughtUp();
    const expected = ["B", "a", "b", "~", "é", "\uFF21", "\u{1F600}"];
    const other = (c: ReadConsistency) => (c === ReadConsistency.STRONG ? ReadConsistency.EVENTUAL : ReadConsistency.STRONG);
    for (const first of [ReadConsistency.STRONG, ReadConsistency.EVENTUAL]) {
      const seen = await listed("Mixed", (page) => (page % 2 === 0 ? first : other(first)));
      expect(seen.map((i) => i.instanceId)).toEqual(expected);
    }
  });

  it("reads its own writes with AT_LEAST_POSITION, and answers UNAVAILABLE when the model cannot get there in time", async () => {
    await t.instances.createInstance({ ...addr("ryw"), properties: { v: 0 }, commandId: "c-ryw-0" });
    for (let v = 1; v <= 5; v++) {
      const { result } = await t.instances.updateInstance({ ...addr("ryw"), properties: { v }, expectedSeq: BigInt(v), commandId: `c-ryw-${v}` });
      const read = await t.instances.getInstance({ ...addr("ryw"), consistency: ReadConsistency.AT_LEAST_POSITION, minPosition: result!.globalPosition });
      expect(read.instance).toMatchObject({ version: BigInt(v + 1), properties: { v }, globalPosition: result!.globalPosition });
      const list = await t.instances.listInstances({ database: "acme", className: "Person", consistency: ReadConsistency.AT_LEAST_POSITION, minPosition: result!.globalPosition });
      expect(list.instances.find((i) => i.instanceId === "ryw")?.version).toBe(BigInt(v + 1));
    }
    const missing = await expectStatus(t.instances.getInstance({ ...addr("ryw"), consistency: ReadConsistency.AT_LEAST_POSITION }), grpc.status.INVALID_ARGUMENT);
    expect(missing.details).toContain("min_position");
    // A position the store has not reached cannot be reflected: UNAVAILABLE after the server's maximum wait.
    await expectStatus(t.instances.getInstance({ ...addr("ryw"), consistency: ReadConsistency.AT_LEAST_POSITION, minPosition: BigInt(published + 1000) }), grpc.status.UNAVAILABLE);
  });

  it("never moves the read model back in version: an older event arriving late is skipped as stale", async () => {
    await t.instances.createInstance({ ...addr("mono"), properties: { step: 1 }, commandId: "c-mono-1" });
    await t.instances.updateInstance({ ...addr("mono"), properties: { step: 2 }, expectedSeq: 1n, commandId: "c-mono-2" });
    await t.instances.updateInstance({ ...addr("mono"), properties: { step: 3 }, expectedSeq: 2n, commandId: "c-mono-3" });
    await caughtUp();
    // A stale copy of seq 2 under another event id (e.g. from a misrouted replay) arrives after seq 3.
    const stale = testEnvelope({ eventId: `${id}-mono-stale`, aggregateType: "Instance", aggregateId: "acme/Person/mono", seq: 2, eventType: "InstanceUpdated", data: { patch: { step: 2 } } });
    await tk.produce(topic, [stale]);
    await waitFor(async () => (await registryRow(database.db, INSTANCES_PROJECTION_HANDLER, stale.eventId))?.state === "skipped_stale", { what: "the stale event to be skipped" });
    expect((await t.instances.getInstance({ ...addr("mono"), consistency: ReadConsistency.EVENTUAL })).instance).toMatchObject({ version: 3n, properties: { step: 3 } });
  });
});

describe("processing status", () => {
  it("reports each handler's state for an event id or a command id, pruned rows included", async () => {
    const { result } = await t.instances.createInstance({ ...addr("st"), properties: {}, commandId: "c-st-1" });
    await caughtUp();
    const byCommand = await processing.getProcessingStatus({ key: { case: "commandId", value: "c-st-1" } });
    expect(byCommand.events).toHaveLength(1);
    expect(byCommand.events[0]).toMatchObject({
      eventId: result!.eventId,
      eventType: "InstanceCreated",
      aggregateType: "Instance",
      aggregateId: "acme/Person/st",
      sequenceNumber: 1n,
      globalPosition: result!.globalPosition,
      handlers: [{ handler: INSTANCES_PROJECTION_HANDLER, state: ProcessingState.DONE, attempts: 1, lastError: "" }],
    });
    expect(byCommand.events[0]!.handlers[0]!.updatedAt).toBeDefined();
    const byEvent = await processing.getProcessingStatus({ key: { case: "eventId", value: result!.eventId } });
    expect(byEvent.events).toEqual(byCommand.events);

    // After housekeeping removed the row, the watermark still answers for the handler.
    await sql`update processed_events set finished_at = now() - interval '8 days' where event_id = ${result!.eventId}`.execute(database.db);
    expect(await pruneDone(database.db)).toBeGreaterThanOrEqual(1);
    const pruned = await processing.getProcessingStatus({ key: { case: "eventId", value: result!.eventId } });
    expect(pruned.events[0]!.handlers).toEqual([expect.objectContaining({ handler: INSTANCES_PROJECTION_HANDLER, state: ProcessingState.PRUNED })]);

    await expectStatus(processing.getProcessingStatus({ key: { case: "eventId", value: "no-such-event" } }), grpc.status.NOT_FOUND);
    expect((await processing.getProcessingStatus({ key: { case: "commandId", value: "no-such-command" } })).events).toEqual([]);
    const bad = await expectStatus(processing.getProcessingStatus({}), grpc.status.INVALID_ARGUMENT);
    expect(bad.details).toContain("event_id or command_id");
  });
});

describe("C6 rebuild", () => {
  it("replays the store into a fresh table equal to the live projection, and swaps it in", async () => {
    await caughtUp();
    const live = await snapshot();
    expect(live.length).toBeGreaterThan(5);
    const reports: RebuildProgress[] = [];
    const result = await rebuildInstances({ db: database.db, objects: t.server.objects, batchSize: 7, onProgress: (p) => reports.push(p) });
    expect(await snapshot()).toEqual(live);
    expect(result).toMatchObject({ resumedFrom: 0, instances: live.length });
    expect(reports.at(-1)).toMatchObject({ phase: "done", position: result.position });
    expect(reports.filter((r) => r.phase === "replay").length).toBeGreaterThan(2);
    for (let i = 1; i < reports.length; i++) expect(reports[i]!.position).toBeGreaterThanOrEqual(reports[i - 1]!.position);
    // The live projection keeps applying to the swapped-in table.
    const { result: after } = await t.instances.updateInstance({ ...addr("p0"), properties: { afterRebuild: true }, expectedSeq: 1n, commandId: "c-p0-2" });
    const read = await t.instances.getInstance({ ...addr("p0"), consistency: ReadConsistency.AT_LEAST_POSITION, minPosition: after!.globalPosition });
    expect(read.instance).toMatchObject({ version: 2n, properties: { n: 0, afterRebuild: true } });
  });

  it("resumes a stopped rebuild, loses nothing that arrives meanwhile, and ends equal to the strong reads", async () => {
    // Commands keep arriving during the whole rebuild.
    let writing = true;
    let written = 0;
    const writer = (async () => {
      while (writing) {
        const n = written++;
        await t.instances.createInstance({ ...addr(`w${n}`, "Busy"), properties: { n }, commandId: `c-w${n}` });
        await t.instances.updateInstance({ ...addr(`w${n}`, "Busy"), properties: { touched: true }, expectedSeq: 1n, commandId: `c-w${n}-u` });
      }
    })();
    try {
      await waitFor(() => written >= 5, { what: "writes under way" });

      const stop = new AbortController();
      let first: unknown;
      await rebuildInstances({ db: database.db, objects: t.server.objects, batchSize: 5, signal: stop.signal, onProgress: (p) => p.phase === "replay" && p.events >= 10 && stop.abort() }).catch((e: unknown) => (first = e));
      expect((first as Error | undefined)?.name).toBe("AbortError");
      const state = await database.db.selectFrom("projection_rebuilds").selectAll().executeTakeFirstOrThrow();
      expect(state).toMatchObject({ state: "running", table_name: "instances_next" });
      expect(state.position).toBeGreaterThan(0);

      const resumed = await rebuildInstances({ db: database.db, objects: t.server.objects, batchSize: 50 });
      expect(resumed.resumedFrom).toBe(state.position);
      const atSwap = written;
      await waitFor(() => written >= atSwap + 5, { what: "more writes after the swap" });
    } finally {
      writing = false;
      await writer;
    }
    await caughtUp();

    const rows = await snapshot();
    const busy = rows.filter((r) => r["class_name"] === "Busy");
    expect(busy).toHaveLength(written);
    for (const row of rows) {
      const strong = await t.instances.getInstance({ database: row["database"], className: row["class_name"], instanceId: row["instance_id"] });
      expect({ version: BigInt(row["version"]), properties: row["properties"], deleted: row["deleted"] }).toEqual({
        version: strong.instance!.version,
        properties: strong.instance!.properties,
        deleted: strong.instance!.deleted,
      });
    }
    expect((await database.db.selectFrom("projection_rebuilds").select("state").executeTakeFirstOrThrow()).state).toBe("swapped");
    const { rows: tables } = await sql<{ n: number }>`select count(*)::integer as n from pg_tables where schemaname = current_schema() and tablename like 'instances%'`.execute(database.db);
    expect(tables[0]!.n).toBe(1);
  });
});

/**
 * Instance snapshots (docs/CONTRACT.md W11, docs/STORAGE.md "Snapshots") against both storages:
 * commands and STRONG reads fold from the latest snapshot, and a snapshot that is missing, stale,
 * ahead of the head, of another fold version or corrupt costs a full fold, never a wrong answer.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sql } from "kysely";
import {
  INSTANCE_AGGREGATE_TYPE,
  INSTANCE_FOLD_VERSION,
  snapshotChecksum,
  type SnapshotRejection,
} from "../../core/index.js";
import { InstanceCommands } from "../../server/instances/instance-commands.js";
import { rebuildSnapshots } from "../../server/index.js";
import { startTestServer, testServerConfig, type TestServer } from "../helpers/test-server.js";

const EVERY = 5;
let t: TestServer;
beforeAll(async () => {
  t = await startTestServer(testServerConfig({ TIDEMARK_SNAPSHOT_EVERY: String(EVERY) }));
});
afterAll(async () => {
  await t?.close();
});

const addr = (instanceId: string) => ({ database: "snap", className: "Doc", instanceId });
const aggregateId = (instanceId: string) => `snap/Doc/${instanceId}`;
const db = () => t.server.database.db;

/** Creates an instance and applies `updates` updates (`n` counts them, `u{i}` marks each). */
async function grow(instanceId: string, updates: number): Promise<void> {
  await t.instances.createInstance({ ...addr(instanceId), properties: { n: 0 }, commandId: `${instanceId}-c` });
  for (let i = 1; i <= updates; i++) {
    await t.instances.updateInstance({ ...addr(instanceId), properties: { n: i, [`u${i}`]: true }, expectedSeq: BigInt(i), commandId: `${instanceId}-u${i}` });
  }
}

async function snapshotRow(instanceId: string) {
  return db()
    .selectFrom("snapshots")
    .selectAll()
    .where("aggregate_type", "=", INSTANCE_AGGREGATE_TYPE)
    .where("aggregate_id", "=", aggregateId(instanceId))
    .executeTakeFirst();
}

/** Writes a snapshot row as it is given (checksum included), replacing the stored one. */
async function putSnapshot(instanceId: string, row: { seq: number; state: string; foldVersion?: number; checksum?: string }): Promise<void> {
  const foldVersion = row.foldVersion ?? INSTANCE_FOLD_VERSION;
  const checksum = row.checksum ?? snapshotChecksum({ aggregateType: INSTANCE_AGGREGATE_TYPE, aggregateId: aggregateId(instanceId), foldVersion, seq: row.seq, state: row.state });
  await sql`delete from snapshots where aggregate_type = ${INSTANCE_AGGREGATE_TYPE} and aggregate_id = ${aggregateId(instanceId)}`.execute(db());
  await db()
    .insertInto("snapshots")
    .values({ aggregate_type: INSTANCE_AGGREGATE_TYPE, aggregate_id: aggregateId(instanceId), fold_version: foldVersion, seq: row.seq, state: row.state, checksum })
    .execute();
}

/** The instance as a fold from its first event sees it (snapshots off), to compare with. */
async function fullFold(instanceId: string) {
  const view = await new InstanceCommands(t.server.store, db(), { every: 0 }).get(addr(instanceId));
  return { properties: view.state.properties, version: view.version, deleted: view.state.deleted, globalPosition: view.state.globalPosition };
}

async function strongRead(instanceId: string) {
  const got = (await t.instances.getInstance(addr(instanceId))).instance!;
  return { properties: got.properties, version: Number(got.version), deleted: got.deleted, globalPosition: Number(got.globalPosition) };
}

/** A state JSON that a correct fold would never produce: a snapshot the fold must not trust blindly. */
function lyingState(version: number): string {
  const at = new Date(0).toISOString();
  return JSON.stringify({ exists: true, deleted: false, properties: { lie: true }, version, globalPosition: 1, createdAt: at, updatedAt: at });
}

describe("taking and using snapshots", () => {
  it("stores a snapshot once a fold applied TIDEMARK_SNAPSHOT_EVERY events, and answers as the full fold does", async () => {
    await grow("d1", 7);
    const row = await snapshotRow("d1");
    // The command deciding update 5 folded events 1..5: the snapshot holds the state after seq 5.
    expect(row).toMatchObject({ fold_version: INSTANCE_FOLD_VERSION, seq: 5 });
    expect(JSON.parse(row!.state)).toMatchObject({ exists: true, version: 5, properties: { n: 4 } });
    expect(await strongRead("d1")).toEqual(await fullFold("d1"));
    expect(await strongRead("d1")).toMatchObject({ version: 8, properties: { n: 7, u7: true } });
  });

  it("folds commands and STRONG reads from the snapshot, only the events after it", async () => {
    await grow("d2", 6);
    const row = (await snapshotRow("d2"))!;
    // A snapshot with a valid checksum but other properties: what a read shows proves where it started.
    await putSnapshot("d2", { seq: row.seq, state: lyingState(row.seq) });
    expect(await strongRead("d2")).toMatchObject({ version: 7, properties: { lie: true, n: 6, u6: true } });
    const updated = await t.instances.updateInstance({ ...addr("d2"), properties: { n: 7 }, expectedSeq: 7n, commandId: "d2-u7" });
    expect(updated.result?.sequenceNumber).toBe(8n);
  });

  it("with TIDEMARK_SNAPSHOT_EVERY=0 stores none and reads none", async () => {
    const off = new InstanceCommands(t.server.store, db(), { every: 0 });
    await grow("d3", 6);
    await putSnapshot("d3", { seq: 6, state: lyingState(6) });
    const view = await off.get(addr("d3"));
    expect(view.state.properties).toEqual({ n: 6, u1: true, u2: true, u3: true, u4: true, u5: true, u6: true });
  });
});

describe("a snapshot that cannot be used means a full fold, never a wrong answer", () => {
  const rejections: Array<[string, SnapshotRejection]> = [];
  const commands = () => new InstanceCommands(t.server.store, db(), { every: EVERY, onRejected: (id, reason) => rejections.push([id, reason]) });

  it("missing: folds from the first event", async () => {
    await grow("m1", 6);
    await sql`delete from snapshots where aggregate_id = ${aggregateId("m1")}`.execute(db());
    expect(await strongRead("m1")).toEqual(await fullFold("m1"));
    // That fold applied every event, so it took a snapshot again.
    expect(await snapshotRow("m1")).toMatchObject({ seq: 7 });
  });

  it("stale (behind the head): folds the events after it", async () => {
    await grow("s1", 6);
    const view = await commands().get(addr("s1"));
    expect(view.version).toBe(7);
    await putSnapshot("s1", { seq: 2, state: JSON.stringify({ exists: true, deleted: false, properties: { n: 1, u1: true }, version: 2, globalPosition: 0, createdAt: view.state.createdAt.toISOString(), updatedAt: view.state.createdAt.toISOString() }) });
    rejections.length = 0;
    const fromStale = await commands().get(addr("s1"));
    expect(rejections).toEqual([]);
    expect(fromStale.state.properties).toEqual((await fullFold("s1")).properties);
    expect(fromStale.version).toBe(7);
  });

  it("ahead of the head (a database restored to an older state): ignored and replaced", async () => {
    await grow("a1", 1);
    await putSnapshot("a1", { seq: 50, state: lyingState(50) });
    rejections.length = 0;
    const view = await commands().get(addr("a1"));
    expect(view).toMatchObject({ version: 2, state: { properties: { n: 1, u1: true } } });
    expect(rejections).toEqual([[aggregateId("a1"), "ahead-of-head"]]);
    expect(await snapshotRow("a1")).toMatchObject({ seq: 2 });
    // The command path refuses to decide on it as well.
    await t.instances.updateInstance({ ...addr("a1"), properties: { n: 2 }, expectedSeq: 2n, commandId: "a1-u2" });
    expect(await strongRead("a1")).toEqual(await fullFold("a1"));
  });

  it("of another fold version: never read", async () => {
    await grow("v1", 2);
    await putSnapshot("v1", { seq: 3, state: lyingState(3), foldVersion: INSTANCE_FOLD_VERSION + 1 });
    expect(await strongRead("v1")).toEqual(await fullFold("v1"));
    expect((await strongRead("v1")).properties).not.toHaveProperty("lie");
  });

  it("corrupt, bad JSON (the checksum matching it): ignored and replaced", async () => {
    await grow("j1", 6);
    await putSnapshot("j1", { seq: 7, state: '{"exists": true, "propert' });
    rejections.length = 0;
    expect((await commands().get(addr("j1"))).state.properties).toEqual((await fullFold("j1")).properties);
    expect(rejections).toEqual([[aggregateId("j1"), "unreadable"]]);
    expect(JSON.parse((await snapshotRow("j1"))!.state)).toMatchObject({ version: 7 });
  });

  it("corrupt, wrong checksum: ignored, on reads and on commands", async () => {
    await grow("k1", 6);
    const row = (await snapshotRow("k1"))!;
    await putSnapshot("k1", { seq: row.seq, state: lyingState(row.seq), checksum: row.checksum });
    rejections.length = 0;
    expect((await commands().get(addr("k1"))).state.properties).toEqual((await fullFold("k1")).properties);
    expect(rejections).toEqual([[aggregateId("k1"), "checksum"]]);
    await putSnapshot("k1", { seq: row.seq, state: lyingState(row.seq), checksum: "0".repeat(64) });
    await t.instances.updateInstance({ ...addr("k1"), properties: { n: 7 }, expectedSeq: 7n, commandId: "k1-u7" });
    expect(await strongRead("k1")).toEqual(await fullFold("k1"));
    expect((await strongRead("k1")).properties).not.toHaveProperty("lie");
  });

  it("a snapshot of a deleted instance keeps it deleted", async () => {
    await grow("x1", 5);
    await t.instances.deleteInstance({ ...addr("x1"), expectedSeq: 6n, commandId: "x1-d" });
    await putSnapshot("x1", { seq: 0, state: "{}" });
    expect(await strongRead("x1")).toMatchObject({ deleted: true, version: 7 });
  });
});

describe("tidemark rebuild snapshots", () => {
  it("drops every snapshot, corrupt and other-version ones included, and retakes them from the first event", async () => {
    await grow("r1", 6);
    await grow("r2", 1);
    await putSnapshot("r1", { seq: 7, state: lyingState(7) });
    await putSnapshot("r2", { seq: 1, state: lyingState(1), foldVersion: INSTANCE_FOLD_VERSION + 1 });
    const result = await rebuildSnapshots({ db: db(), objects: t.server.objects, every: EVERY, batchSize: 3 });
    expect(result.dropped).toBeGreaterThanOrEqual(2);
    expect(result.taken).toBeGreaterThanOrEqual(1);
    const r1 = (await snapshotRow("r1"))!;
    expect(r1.seq).toBe(7);
    expect(JSON.parse(r1.state)).toMatchObject({ properties: { n: 6, u6: true } });
    expect(JSON.parse(r1.state).properties).not.toHaveProperty("lie");
    // Two events are too few for a snapshot: none is left for r2.
    expect(await snapshotRow("r2")).toBeUndefined();
    expect(await strongRead("r1")).toEqual(await fullFold("r1"));
    // Every stream rebuilt agrees with its full fold.
    const rows = await db().selectFrom("snapshots").select(["aggregate_id", "seq", "state", "fold_version"]).execute();
    expect(rows.every((r) => r.fold_version === INSTANCE_FOLD_VERSION)).toBe(true);
    expect(rows.length).toBe(result.taken);
  });
});

/**
 * The append's SQL functions are files applied by the migrate step when they change (issue #12):
 * a fresh schema gets every function, a second migrate applies nothing, an edited file is applied
 * again, and processes migrating at once apply a change without failing; an up-to-date schema is
 * recognised without Kysely's Migrator; and what commit_slots
 * decides when a stream has void slots (R2). Both storages.
 */
import { rm } from "node:fs/promises";
import { type Migration, sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openBackends, type Backends } from "../../core/backends.js";
import { migrateToLatest } from "../../core/db/database.js";
import { MIGRATIONS } from "../../core/db/migrations/index.js";
import { applySqlFunctions, sqlFunctionFiles, type SqlFunctionFile } from "../../core/db/sql-functions.js";
import { commitSlots, reserveSlots, reserveStreams } from "../../core/event-log.js";
import { testServerConfig } from "../helpers/test-server.js";

const config = testServerConfig();
let backends: Backends;
beforeAll(async () => {
  backends = await openBackends(config);
});
afterAll(async () => {
  if (config.pgUrl !== "") await sql`drop schema if exists ${sql.id(config.pgSchema)} cascade`.execute(backends.database.db);
  await backends?.close();
  if (config.pgUrl === "") await rm(config.dataDir, { recursive: true, force: true });
});

const probe = (value: number): SqlFunctionFile => {
  const text = `create or replace function tidemark_probe() returns int language sql as $$ select ${value} $$;`;
  return { name: "tidemark_probe", sql: text, checksum: `probe-${value}` };
};

describe("SQL function files", () => {
  it("applies every file to a fresh schema once, and nothing on the next migrate", async () => {
    const files = await sqlFunctionFiles();
    expect(files.map((f) => f.name)).toEqual(["allocate_segment", "commit_slots", "reserve_segment", "reserve_slots", "reserve_streams"]);
    const first = await migrateToLatest(backends.database.db, config.pgSchema);
    expect(first).toEqual(expect.arrayContaining(["function allocate_segment", "function commit_slots", "function reserve_segment", "function reserve_slots", "function reserve_streams"]));
    const again = await migrateToLatest(backends.database.db, config.pgSchema);
    expect(again).toEqual([]);
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_proc p join pg_namespace s on s.oid = p.pronamespace where s.nspname = ${config.pgSchema} and p.proname in ('allocate_segment', 'take_slots', 'reserve_segment', 'reserve_slots', 'commit_slots', 'reserve_streams')`.execute(backends.database.db);
    expect(rows[0]!.n).toBe(6);
  });

  it("applies a file again when it changes, also when two processes migrate at once", async () => {
    const db = backends.database.db;
    expect(await applySqlFunctions(db, config.pgSchema, [probe(1)])).toEqual(["tidemark_probe"]);
    expect(await applySqlFunctions(db, config.pgSchema, [probe(1)])).toEqual([]);
    const both = await Promise.all([applySqlFunctions(db, config.pgSchema, [probe(2)]), applySqlFunctions(db, config.pgSchema, [probe(2)])]);
    expect(both.flat()).toEqual(["tidemark_probe"]);
    const { rows } = await sql<{ v: number }>`select tidemark_probe() as v`.execute(db);
    expect(rows[0]!.v).toBe(2);
  });
});

describe("migrations", () => {
  it("finds an up-to-date schema by its migration table, without Kysely's Migrator (its lock, its read of every table's columns); a missing migration still runs", async () => {
    const seen: string[] = [];
    const watched = backends.database.db.withPlugin({
      transformQuery: ({ node }) => {
        seen.push(JSON.stringify(node, (_key, value: unknown) => (typeof value === "bigint" ? String(value) : value)));
        return node;
      },
      transformResult: async ({ result }) => result,
    });
    await migrateToLatest(backends.database.db, config.pgSchema);
    expect(await migrateToLatest(watched, config.pgSchema)).toEqual([]);
    expect(seen.length).toBeGreaterThan(0);
    // The Migrator's introspection bypasses plugins; its lock table does not.
    const migratorLock = (q: string) => q.includes("kysely_migration_lock");
    expect(seen.filter(migratorLock)).toEqual([]);

    // A migration the schema lacks goes through the Migrator (its introspection and lock) and runs.
    const probe = "2099-01-01-01-probe";
    const extra: Record<string, Migration> = { ...MIGRATIONS, [probe]: { up: async (db) => db.schema.createTable("migration_probe").addColumn("x", "integer").execute() } };
    seen.length = 0;
    try {
      expect(await migrateToLatest(watched, config.pgSchema, extra)).toEqual([probe]);
      expect(seen.some(migratorLock)).toBe(true);
      expect(await migrateToLatest(watched, config.pgSchema, extra)).toEqual([]);
    } finally {
      await sql`drop table if exists ${sql.table(`${config.pgSchema}.migration_probe`)}`.execute(backends.database.db);
      await sql`delete from ${sql.table(`${config.pgSchema}.kysely_migration`)} where name = ${probe}`.execute(backends.database.db);
    }
  });
});

/** Marks slots written at some place of a segment (as a flush would), so commit_slots may commit them. */
async function markWritten(db: typeof backends.database.db, logIds: readonly number[]): Promise<void> {
  await db.updateTable("event_log").set({ segment: 1, segment_offset: 0, segment_length: 1 }).where("log_id", "in", [...logIds]).execute();
}

async function voidSlots(db: typeof backends.database.db, logIds: readonly number[]): Promise<number[]> {
  const rows = await db.updateTable("event_log").set({ state: "void" }).where("log_id", "in", [...logIds]).where("state", "=", "pending").returning("log_id").execute();
  return rows.map((r) => r.log_id);
}

const commit = (db: typeof backends.database.db, logIds: readonly number[]) => commitSlots(db, config.pgSchema, logIds.map((logId) => ({ logId })));

describe("commit_slots (R2)", () => {
  // The chaos harness saw seqs 182..191 of a stream on Kafka before 177..180: slot 181 was voided
  // while 177..180 were still pending, and a void predecessor counted as settled.
  it("does not commit past a void slot while an earlier slot of the stream is still pending", async () => {
    const db = backends.database.db;
    await migrateToLatest(db, config.pgSchema);
    const reserve = async (eventId: string) => {
      const r = await reserveSlots(db, "Task", "r2-void", { type: "any" }, [{ eventId, eventType: "Noted", contentHash: `h-${eventId}`, orderingKey: null }]);
      if (r.type !== "reserved") throw new Error(`${eventId} was not reserved`);
      return r.slots[0]!;
    };
    const [first, second, third] = [await reserve("r2-1"), await reserve("r2-2"), await reserve("r2-3")];
    await markWritten(db, [first.logId, third.logId]);
    expect([first.seq, second.seq, third.seq]).toEqual([1, 2, 3]);
    expect(await voidSlots(db, [second.logId])).toEqual([second.logId]);

    expect((await commit(db, [third.logId])).get(third.logId)).toEqual({ type: "deferred" });
    const firstCommitted = (await commit(db, [first.logId])).get(first.logId);
    expect(firstCommitted?.type).toBe("committed");
    const thirdCommitted = (await commit(db, [third.logId])).get(third.logId);
    expect(thirdCommitted?.type).toBe("committed");
    if (firstCommitted?.type !== "committed" || thirdCommitted?.type !== "committed") return;
    expect(thirdCommitted.position).toBeGreaterThan(firstCommitted.position);
  });

  it("commits past void slots back to the first, and past a void slot after one committed in the same call", async () => {
    const db = backends.database.db;
    await migrateToLatest(db, config.pgSchema);
    const reserve = async (aggregateId: string, eventId: string) => {
      const r = await reserveSlots(db, "Task", aggregateId, { type: "any" }, [{ eventId, eventType: "Noted", contentHash: `h-${eventId}`, orderingKey: null }]);
      if (r.type !== "reserved") throw new Error(`${eventId} was not reserved`);
      return r.slots[0]!;
    };
    const [a1, a2, a3] = [await reserve("r2-a", "r2a-1"), await reserve("r2-a", "r2a-2"), await reserve("r2-a", "r2a-3")];
    await markWritten(db, [a3.logId]);
    await voidSlots(db, [a1.logId, a2.logId]);
    expect((await commit(db, [a3.logId])).get(a3.logId)?.type).toBe("committed");

    const [b1, b2, b3] = [await reserve("r2-b", "r2b-1"), await reserve("r2-b", "r2b-2"), await reserve("r2-b", "r2b-3")];
    await markWritten(db, [b1.logId, b3.logId]);
    await voidSlots(db, [b2.logId]);
    const both = await commit(db, [b3.logId, b1.logId]);
    expect([both.get(b1.logId)?.type, both.get(b3.logId)?.type]).toEqual(["committed", "committed"]);
  });
});

describe("commit_slots: a multi-stream call commits whole (W8)", () => {
  it("commits none of a call while one of its slots waits for a predecessor, then all of it at contiguous positions", async () => {
    const db = backends.database.db;
    await migrateToLatest(db, config.pgSchema);
    const slot = (eventId: string) => ({ eventId, eventType: "Noted", contentHash: `h-${eventId}`, orderingKey: null });
    // w8-p's seq 1 is reserved by a single-stream append and left pending.
    const before = await reserveSlots(db, "Task", "w8-p", { type: "any" }, [slot("w8p-1")]);
    if (before.type !== "reserved") throw new Error("not reserved");
    const call = await reserveStreams(
      db,
      [
        { aggregateType: "Task", aggregateId: "w8-q", expectation: { type: "exact", seq: 0 }, events: [slot("w8q-1"), slot("w8q-2")] },
        { aggregateType: "Task", aggregateId: "w8-p", expectation: { type: "any" }, events: [slot("w8p-2")] },
      ],
      [],
    );
    if (call.type !== "reserved") throw new Error("not reserved");
    const ids = call.streams.flatMap((s) => s.slots.map((r) => r.logId));
    await markWritten(db, ids);
    // w8-q's slots could commit, but w8-p's waits: the call waits whole. Asking for one slot of a
    // call (as the sweeper's pages may) is asking for the call.
    const waiting = await commit(db, [ids[0]!]);
    expect(waiting.get(ids[0]!)).toEqual({ type: "deferred" });
    await markWritten(db, [before.slots[0]!.logId]);
    const both = await commit(db, [ids[1]!, before.slots[0]!.logId]);
    const first = both.get(before.slots[0]!.logId);
    const q2 = both.get(ids[1]!);
    if (first?.type !== "committed" || q2?.type !== "committed") throw new Error("not committed");
    const { rows } = await sql<{ log_id: number; global_position: number }>`select log_id, global_position from event_log where log_id = any(${ids}::bigint[]) order by log_id`.execute(db);
    const positions = rows.map((r) => Number(r.global_position));
    expect(positions).toEqual([first.position + 1, first.position + 2, first.position + 3]);
    expect(q2.position).toBe(positions[1]);
  });

  // The chaos harness (seed 3119) read events one position below their acknowledgement: the
  // sweeper's request for a slot and its writer's joined one group commit, the slot was counted
  // twice, its row took the first position and the answer the second.
  it("commits a slot asked for twice in one call once, at the position it answers", async () => {
    const db = backends.database.db;
    await migrateToLatest(db, config.pgSchema);
    const slot = (eventId: string) => ({ eventId, eventType: "Noted", contentHash: `h-${eventId}`, orderingKey: null });
    const single = await reserveSlots(db, "Task", "twice-s", { type: "any" }, [slot("ts-1"), slot("ts-2")]);
    const call = await reserveStreams(db, [{ aggregateType: "Task", aggregateId: "twice-c", expectation: { type: "any" }, events: [slot("tc-1")] }, { aggregateType: "Task", aggregateId: "twice-d", expectation: { type: "any" }, events: [slot("td-1")] }], []);
    if (single.type !== "reserved" || call.type !== "reserved") throw new Error("not reserved");
    const ids = [...single.slots.map((s) => s.logId), ...call.streams.flatMap((s) => s.slots.map((r) => r.logId))];
    await db.updateTable("event_log").set({ segment: 1 }).where("log_id", "in", ids).execute();
    const counter = async () => Number((await sql<{ position: string }>`select position from global_counter where id = 1`.execute(db)).rows[0]!.position);
    const before = await counter();
    // The writer's requests (with where each event is) and the sweeper's (the slot alone), interleaved.
    const written = (logId: number, eventId: string, offset: number) => ({ logId, written: { eventId, offset, length: 10 } });
    const outcomes = await commitSlots(db, config.pgSchema, [
      written(ids[0]!, "ts-1", 0),
      { logId: ids[0]! },
      written(ids[1]!, "ts-2", 10),
      { logId: ids[2]! },
      written(ids[2]!, "tc-1", 20),
      written(ids[3]!, "td-1", 30),
      { logId: ids[1]! },
      { logId: ids[3]! },
    ]);
    const { rows } = await sql<{ log_id: number; global_position: string; segment_offset: string }>`select log_id, global_position, segment_offset from event_log where log_id = any(${ids}::bigint[]) order by log_id`.execute(db);
    expect(rows.map((r) => Number(r.segment_offset))).toEqual([0, 10, 20, 30]);
    const stored = new Map(rows.map((r) => [Number(r.log_id), Number(r.global_position)]));
    expect([...stored.values()].sort((a, b) => a - b)).toEqual([before + 1, before + 2, before + 3, before + 4]);
    for (const id of ids) expect(outcomes.get(id)).toEqual({ type: "committed", position: stored.get(id) });
    expect(await counter()).toBe(before + 4);
  });
});

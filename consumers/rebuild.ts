/**
 * Rebuilds the instances read model from the store (docs/CONTRACT.md C6): the commit log in global
 * order and the event objects in S3 — not Kafka, whose retention may have dropped old events. The
 * replay fills a fresh table while the live projection keeps serving and applying; the fresh table
 * then catches up under a lock that pauses live writes and is renamed over the live one in the
 * same transaction. Progress is stored with every batch, so a stopped rebuild resumes.
 */
import { sql, type Kysely } from "kysely";
import {
  asWriteSide,
  CommitLogTailer,
  commitLogOf,
  type ConsumerDatabase,
  INSTANCE_AGGREGATE_TYPE,
  INSTANCES_PROJECTION,
  INSTANCES_TABLE,
  lastPosition,
  type Logger,
  type ObjectStore,
  CommittedEventReader,
  UnreadableEventError,
  type SlotRow,
} from "../core/index.js";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { projectInstanceEvents, type InstanceProjectionEvent } from "./projection.js";

/** The table a rebuild fills before it is swapped in. */
export const REBUILD_TABLE = "instances_next";

/** A progress report, after every batch and at the end. */
export interface RebuildProgress {
  readonly phase: "replay" | "swap" | "done";
  /** Global position replayed so far. */
  readonly position: number;
  /** The store's head when this report was made (it moves while commands arrive). */
  readonly target: number;
  /** Commit-log entries replayed (all aggregate types). */
  readonly events: number;
  /** Where this run started: 0 for a fresh rebuild, the stored position when resuming. */
  readonly resumedFrom: number;
}

/** Options of {@link rebuildInstances}. */
export interface RebuildOptions {
  readonly db: Kysely<ConsumerDatabase>;
  readonly objects: ObjectStore;
  /** Commit-log entries per batch (default 500). */
  readonly batchSize?: number;
  /** Segments fetched from S3 at once (default 16). */
  readonly parallelism?: number;
  readonly onProgress?: (progress: RebuildProgress) => void;
  /** Aborting stops after the current batch; the next run resumes there. */
  readonly signal?: AbortSignal;
  readonly log?: Logger;
}

/** The outcome of a completed rebuild. */
export interface RebuildResult {
  readonly position: number;
  readonly events: number;
  readonly resumedFrom: number;
  /** Rows in the swapped-in table. */
  readonly instances: number;
}

/**
 * Replays the store into a fresh table and swaps it in atomically. Only one rebuild per schema
 * runs at a time (an advisory lock); a second one fails at once. Resumes an unfinished rebuild.
 */
export async function rebuildInstances(options: RebuildOptions): Promise<RebuildResult> {
  const batchSize = options.batchSize ?? 500;
  const reader = new CommittedEventReader(options.objects, { wholeSegments: true, concurrency: options.parallelism ?? 16 });
  return options.db.connection().execute(async (conn) => {
    const { rows: locked } = await sql<{ ok: boolean }>`
      select pg_try_advisory_lock(hashtext(current_schema() || ':rebuild:' || ${INSTANCES_PROJECTION})) as ok`.execute(conn);
    if (locked[0]?.ok !== true) throw new Error("another rebuild of the instances projection is running");
    try {
      const start = await prepare(conn, options.log);
      let position = start.position;
      let events = start.events;
      const report = (phase: RebuildProgress["phase"], target: number) =>
        options.onProgress?.({ phase, position, target, events, resumedFrom: start.position });

      // The commit log read by position, as every tailer of it reads it; no waiting: a rebuild
      // replays up to the end it finds, and the swap below replays the rest under a lock.
      const commitLog = new CommitLogTailer(commitLogOf(asWriteSide(conn)), undefined, 0);
      for await (const slots of commitLog.toEnd(position, batchSize)) {
        options.signal?.throwIfAborted();
        const target = await commitLog.source.lastPosition();
        await conn.transaction().execute(async (tx) => {
          await projectInstanceEvents(tx, REBUILD_TABLE, await loadEvents(reader, slots));
          position = slots[slots.length - 1]!.globalPosition!;
          events += slots.length;
          await tx
            .updateTable("projection_rebuilds")
            .set({ position, events, updated_at: sql`now()` })
            .where("projection", "=", INSTANCES_PROJECTION)
            .execute();
        });
        report("replay", Math.max(target, position));
      }

      options.signal?.throwIfAborted();
      const instances = await conn.transaction().execute(async (tx) => {
        // EXCLUSIVE: live writers (whose first step is SELECT ... FOR UPDATE) wait from here to the
        // commit holding nothing on the table, so the later upgrade for DROP cannot deadlock with
        // them; plain reads go on until the rename. What they applied is committed, so the tail
        // replayed below covers it.
        await sql`lock table ${sql.id(INSTANCES_TABLE)} in exclusive mode`.execute(tx);
        report("swap", await lastPosition(asWriteSide(tx)));
        const locked = new CommitLogTailer(commitLogOf(asWriteSide(tx)), undefined, 0);
        for await (const slots of locked.toEnd(position, batchSize)) {
          await projectInstanceEvents(tx, REBUILD_TABLE, await loadEvents(reader, slots));
          position = slots[slots.length - 1]!.globalPosition!;
          events += slots.length;
        }
        await sql`drop table ${sql.id(INSTANCES_TABLE)}`.execute(tx);
        await sql`alter table ${sql.id(REBUILD_TABLE)} rename to ${sql.id(INSTANCES_TABLE)}`.execute(tx);
        await sql`alter index ${sql.id(`${REBUILD_TABLE}_pkey`)} rename to ${sql.id(`${INSTANCES_TABLE}_pkey`)}`.execute(tx);
        await tx
          .updateTable("projection_rebuilds")
          .set({ state: "swapped", position, events, updated_at: sql`now()`, finished_at: sql`now()` })
          .where("projection", "=", INSTANCES_PROJECTION)
          .execute();
        const { rows } = await sql<{ n: number }>`select count(*)::integer as n from ${sql.id(INSTANCES_TABLE)}`.execute(tx);
        return rows[0]!.n;
      });
      report("done", position);
      options.log?.info({ position, events, instances, resumedFrom: start.position }, "instances projection rebuilt and swapped in");
      return { position, events, resumedFrom: start.position, instances };
    } finally {
      await sql`select pg_advisory_unlock(hashtext(current_schema() || ':rebuild:' || ${INSTANCES_PROJECTION}))`.execute(conn).catch(() => {});
    }
  });
}

/** Resumes a running rebuild whose table still exists, or starts a fresh one. */
async function prepare(conn: Kysely<ConsumerDatabase>, log: Logger | undefined): Promise<{ position: number; events: number }> {
  const existing = await conn.selectFrom("projection_rebuilds").selectAll().where("projection", "=", INSTANCES_PROJECTION).executeTakeFirst();
  const { rows } = await sql<{ present: boolean }>`select to_regclass(${REBUILD_TABLE}) is not null as present`.execute(conn);
  if (existing?.state === "running" && existing.table_name === REBUILD_TABLE && rows[0]?.present === true) {
    log?.info({ position: existing.position }, "resuming the rebuild of the instances projection");
    return { position: existing.position, events: existing.events };
  }
  await conn.transaction().execute(async (tx) => {
    await sql`drop table if exists ${sql.id(REBUILD_TABLE)}`.execute(tx);
    // LIKE ... INCLUDING ALL keeps the rebuilt table identical in shape to the live one.
    await sql`create table ${sql.id(REBUILD_TABLE)} (like ${sql.id(INSTANCES_TABLE)} including all)`.execute(tx);
    await tx
      .insertInto("projection_rebuilds")
      .values({ projection: INSTANCES_PROJECTION, table_name: REBUILD_TABLE, state: "running", position: 0, events: 0 })
      .onConflict((oc) =>
        oc.column("projection").doUpdateSet({
          table_name: REBUILD_TABLE,
          state: "running",
          position: 0,
          events: 0,
          started_at: sql`now()`,
          updated_at: sql`now()`,
          finished_at: null,
        }),
      )
      .execute();
  });
  return { position: 0, events: 0 };
}

/** The instance events among `slots`, read from the object store (each segment once), in global order. */
async function loadEvents(reader: CommittedEventReader, slots: readonly SlotRow[]): Promise<InstanceProjectionEvent[]> {
  const wanted = slots.filter((s) => s.aggregateType === INSTANCE_AGGREGATE_TYPE);
  const results = await reader.read(wanted);
  return results.map((result, i) => {
    if (result instanceof UnreadableEventError) throw result;
    const slot = wanted[i]!;
    const e = result.envelope;
    return {
      aggregateId: slot.aggregateId,
      eventType: e.eventType,
      seq: slot.seq,
      globalPosition: slot.globalPosition!,
      occurredAt: e.occurredAt === undefined ? new Date(0) : timestampDate(e.occurredAt),
      data: e.data ?? {},
    };
  });
}

/**
 * Recovery from S3 alone (docs/OPERATIONS.md "Recovering from S3 alone"): rebuilds every table the
 * write side and the relay need — heads, the commit log, segment numbers, the counters — from the
 * segments in the bucket, after the schema was dropped or restored from an older backup. It runs
 * with no server serving the schema (the serving lock, core/db/serving-lock.ts), so nothing races
 * it, in three steps:
 *
 * 1. every segment in number order is settled into the log, one transaction each with the progress
 *    row, so a stopped recovery resumes after the last segment it settled: each event is adopted at
 *    its `(aggregate, seq)` (S3 decides, W6), streams' heads are raised past them, a void segment's
 *    number is closed;
 * 2. slots no segment accounts for are closed: reservations no writer will finish, and numbers below
 *    a head with no row at all (their segment was voided and the bucket keeps no trace of them);
 * 3. the adopted events are committed in segment order, in batches through commit_slots, so global
 *    positions follow commit order (R1) and each stream's order (R2). Positions the log already
 *    had (a restored backup) stay; new ones follow them. Relay checkpoints are lowered to the
 *    position the log had before, so the relay publishes every recovered event again.
 */
import { sql, type Kysely } from "kysely";
import {
  adoptIntoVoidSlot,
  advanceSegmentCounter,
  closeUnloggedSlots,
  commitSlots,
  decodeSegment,
  encodeVoidSegment,
  lastPosition,
  type Logger,
  markSegment,
  migrateToLatest,
  type ObjectStore,
  pendingSegments,
  type RecoveryTables,
  releaseExclusiveServingLock,
  SEGMENT_CONTENT_TYPE,
  SEGMENT_PREFIX,
  segmentKey,
  segmentOfKey,
  takeExclusiveServingLock,
  voidSegmentSlotsExcept,
  type WriteSideTables,
  writtenPendingSlots,
} from "../core/index.js";
import { adoptSegmentEvents } from "./segment-recovery.js";

/** The progress row's name (one recovery per schema). */
const RECOVERY = "segments";
/** Slots per commit transaction. */
const COMMIT_BATCH = 1000;

/** A progress report: after every segment, and after every commit batch. */
export interface RecoverProgress {
  readonly phase: "segments" | "commit" | "done";
  /** Segments settled by this run, of `total` found beyond the resume point. */
  readonly segments: number;
  readonly total: number;
  /** Events adopted by this run. */
  readonly events: number;
  /** Events committed by this run (phase `commit`). */
  readonly committed: number;
  /** The segment this run started after (0: from the first). */
  readonly resumedFrom: number;
}

/** What a recovery found and did. */
export interface RecoverResult {
  /** Segments settled by this run: with events, and void markers. */
  readonly segments: number;
  readonly voidSegments: number;
  /** Events adopted by this run, and events committed by it (with earlier runs' leftovers). */
  readonly events: number;
  readonly committed: number;
  /** Slots closed: unfinished reservations and numbers with no event in the bucket. */
  readonly closed: number;
  /** Events at a committed slot the log holds otherwise (reported, left as the log has them). */
  readonly conflicts: number;
  readonly lastSegment: number;
  /** The log's last position before and after this run: positions above `positionBefore` are new. */
  readonly positionBefore: number;
  readonly positionAfter: number;
  readonly resumedFrom: number;
  /** Relay checkpoints lowered to `positionBefore`. */
  readonly checkpointsReset: number;
}

/** What a recovery works with. */
export interface RecoverOptions {
  readonly db: Kysely<RecoveryTables>;
  readonly schema: string;
  readonly objects: ObjectStore;
  readonly log: Logger;
  readonly now?: () => Date;
  readonly onProgress?: (progress: RecoverProgress) => void;
  /** Aborting stops after the current segment; the next run resumes there. */
  readonly signal?: AbortSignal;
}

/**
 * Recovers the schema's write-side and relay tables from the bucket (see the module comment).
 * Throws ServingLockError while a server serves the schema. Resumable and idempotent: a run after
 * a finished one settles only segments the bucket gained since.
 */
export async function recoverFromObjectStore(options: RecoverOptions): Promise<RecoverResult> {
  return options.db.connection().execute(async (conn) => {
    await takeExclusiveServingLock(conn, options.schema);
    try {
      await migrateToLatest(conn, options.schema);
      return await recoverLocked(conn, options);
    } finally {
      await releaseExclusiveServingLock(conn, options.schema).catch(() => {});
    }
  });
}

async function recoverLocked(db: Kysely<RecoveryTables>, options: RecoverOptions): Promise<RecoverResult> {
  const now = options.now ?? (() => new Date());
  const ws = db as unknown as Kysely<WriteSideTables>;
  const progressRow = await db.selectFrom("store_recoveries").selectAll().where("name", "=", RECOVERY).executeTakeFirst();
  const resumedFrom = progressRow === undefined ? 0 : Number(progressRow.last_segment);
  await db
    .insertInto("store_recoveries")
    .values({ name: RECOVERY, state: "running", last_segment: 0, segments: 0, events: 0 })
    .onConflict((oc) => oc.column("name").doUpdateSet({ state: "running", updated_at: sql`now()`, finished_at: null }))
    .execute();

  const listed = new Set((await options.objects.list(SEGMENT_PREFIX, resumedFrom > 0 ? segmentKey(resumedFrom) : undefined)).map(segmentOfKey).filter((n): n is number => n !== undefined && n > resumedFrom));
  // Numbers the log holds as in flight that the bucket lacks: their writer is gone (no server
  // runs), so they are closed with the writer's own conditional create (W5).
  for (const segment of await pendingSegments(ws)) {
    if (listed.has(segment)) continue;
    const created = await options.objects.createIfAbsent(segmentKey(segment), encodeVoidSegment(segment, now(), "closed by recovery"), SEGMENT_CONTENT_TYPE);
    if (created === "exists") listed.add(segment);
    else
      await db.transaction().execute(async (tx) => {
        await markSegment(tx as unknown as Kysely<WriteSideTables>, segment, "void");
        await voidSegmentSlotsExcept(tx as unknown as Kysely<WriteSideTables>, segment, []);
      });
  }
  const numbers = [...listed].sort((a, b) => a - b);
  const total = numbers.length;
  let segments = 0;
  let voidSegments = 0;
  let events = 0;
  let conflicts = 0;
  let committed = 0;
  const report = (phase: RecoverProgress["phase"]) => options.onProgress?.({ phase, segments, total, events, committed, resumedFrom });
  report("segments");

  for (const segment of numbers) {
    options.signal?.throwIfAborted();
    const body = await options.objects.read(segmentKey(segment));
    if (body === undefined) throw new Error(`segment ${segmentKey(segment)} was listed but cannot be read`);
    const { content, events: stored } = decodeSegment(body);
    if (content.segment !== segment) throw new Error(`segment ${segmentKey(segment)} says it is segment ${content.segment}`);
    const outcome = await db.transaction().execute(async (trx) => {
      const tx = trx as unknown as Kysely<WriteSideTables>;
      if (content.type === "void") {
        await markSegment(tx, segment, "void");
        await voidSegmentSlotsExcept(tx, segment, []);
        return { adopted: 0, conflicts: 0, void: true };
      }
      const { conflicts: clashes } = await adoptSegmentEvents(tx, segment, content.bodyStart, stored, options.log, adoptIntoVoidSlot);
      return { adopted: stored.length, conflicts: clashes, void: false };
    });
    segments += 1;
    if (outcome.void) voidSegments += 1;
    events += outcome.adopted;
    conflicts += outcome.conflicts;
    await db
      .updateTable("store_recoveries")
      .set({ last_segment: segment, segments: sql`segments + 1`, events: sql`events + ${outcome.adopted}`, updated_at: sql`now()` })
      .where("name", "=", RECOVERY)
      .execute();
    report("segments");
  }
  const lastSegment = Math.max(resumedFrom, ...numbers, 0);
  if (lastSegment > 0) await advanceSegmentCounter(ws, lastSegment);

  // No writer runs: a reservation whose bytes are in no segment will never be written.
  const unfinished = await db.updateTable("event_log").set({ state: "void" }).where("state", "=", "pending").where("segment_offset", "is", null).returning("log_id").execute();
  const closed = unfinished.length + (await closeUnloggedSlots(ws));

  const positionBefore = await lastPosition(ws);
  for (;;) {
    options.signal?.throwIfAborted();
    const ids = await writtenPendingSlots(ws, COMMIT_BATCH);
    if (ids.length === 0) break;
    const outcomes = await commitSlots(ws, options.schema, ids.map((logId) => ({ logId })));
    const done = [...outcomes.values()].filter((o) => o.type === "committed").length;
    // Every predecessor is settled or in the batch after step 2, so a batch that commits nothing
    // means the log holds something this procedure does not explain.
    if (done === 0) throw new Error(`recovery cannot commit ${ids.length} slots (log ids ${ids.slice(0, 5).join(", ")}…): their stream predecessors are unresolved`);
    committed += done;
    report("commit");
  }
  const positionAfter = await lastPosition(ws);
  const reset = await db.updateTable("relay_checkpoints").set({ position: positionBefore, updated_at: sql`now()` }).where("position", ">", positionBefore).returning("name").execute();
  await db
    .updateTable("store_recoveries")
    .set({ state: "done", last_segment: lastSegment, updated_at: sql`now()`, finished_at: sql`now()` })
    .where("name", "=", RECOVERY)
    .execute();
  report("done");
  const result: RecoverResult = { segments, voidSegments, events, committed, closed, conflicts, lastSegment, positionBefore, positionAfter, resumedFrom, checkpointsReset: reset.length };
  options.log.info({ ...result }, "recovered the commit log from the object store");
  return result;
}

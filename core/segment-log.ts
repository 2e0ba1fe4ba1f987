/**
 * The commit log's side of segments (docs/STORAGE.md): the segment counter and each number's state,
 * which slots a segment holds and where, and adopting into the log what a segment in S3 says (W6).
 * Repository functions: the database or a transaction comes first.
 */
import { sql, type Kysely, type Transaction } from "kysely";
import type { SegmentState, WriteSideTables } from "./db/schema.js";
import type { ConcurrencyError, ConsistencyError, IdempotencyError } from "./errors.js";
import type { HeadCheck, ReserveRecord, SlotRow, StreamSlotRequest, StreamsRecord } from "./event-log.js";
import { expectedSeqOf, reservationOf, reserveStreamsArguments, selectSlots, streamsReservationOf, toSlotRow } from "./event-log.js";

type Db = Kysely<WriteSideTables> | Transaction<WriteSideTables>;

/**
 * Takes the next segment number for a flush and the slots of its calls (one list of log ids per
 * call): a call is taken only whole, when every slot of it is still pending and in no segment.
 * Returns the number and the indexes of the calls taken, or undefined when none was.
 */
export async function allocateSegment(db: Kysely<WriteSideTables>, calls: ReadonlyArray<readonly number[]>): Promise<{ segment: number; taken: Set<number> } | undefined> {
  // Commits with a flush of the WAL: the segment is PUT only after this, so a segment S3 holds is
  // known to PostgreSQL (short of a restore from an older backup, which W6 re-synchronises).
  const { rows } = await sql<{ segment: number; call: number }>`
    select * from allocate_segment(${calls.flat()}::bigint[], ${callOf(calls)}::integer[])`.execute(db);
  if (rows.length === 0) return undefined;
  return { segment: Number(rows[0]!.segment), taken: new Set(rows.map((r) => r.call)) };
}

/** Each slot's call, for `calls` given as one list of log ids per call. */
function callOf(calls: ReadonlyArray<readonly number[]>): number[] {
  return calls.flatMap((call, i) => call.map(() => i));
}

/**
 * A call a flush reserves: an append to one stream (AppendEvents, reserve_slots), or to several
 * streams with its consistency checks (AppendToStreams, reserve_streams, W8).
 */
export type FlushCall =
  | { readonly kind: "stream"; readonly append: StreamSlotRequest }
  | { readonly kind: "streams"; readonly streams: readonly StreamSlotRequest[]; readonly checks: readonly HeadCheck[] };

/** The slots reserved per written stream, in request order, and each first slot's predecessor link. */
export type ReservedStreams = ReadonlyArray<{ readonly slots: readonly SlotRow[]; readonly previousHash: string }>;

/** What a flush decided for one call, alike for both kinds. */
export type FlushOutcome =
  /** Its slots per written stream. */
  | { readonly type: "reserved"; readonly streams: ReservedStreams }
  /** Its event ids were appended before by the same call (a retry): the original's slots, in request order. */
  | { readonly type: "existing"; readonly slots: readonly SlotRow[] }
  | { readonly type: "refused"; readonly error: ConcurrencyError | ConsistencyError | IdempotencyError }
  /** A head row behind the log (W6): to be reserved alone, which repairs it. Nothing reserved. */
  | { readonly type: "head_behind" };

/** What {@link reserveSegment} did: the number, the calls of slots reserved before it took, and each call's outcome (in the order given). */
export interface SegmentReservation {
  readonly segment: number;
  readonly taken: Set<number>;
  readonly outcomes: readonly FlushOutcome[];
}

/**
 * A row of `reserve_segment`: one of `reserve_slots`'s or `reserve_streams`'s (its `item` as
 * `part`) for call `item`, or a call reserved before that it took.
 */
type SegmentRecord = Omit<StreamsRecord, "outcome" | "item"> & { outcome: StreamsRecord["outcome"] | "taken"; flush_segment: number; item: number; part: number | null };

/**
 * Takes the next segment number for a flush, the calls of slots reserved before it (as
 * {@link allocateSegment}) and reserves its calls into it, in one transaction committed with a
 * flush of the WAL (core/db/functions/reserve_segment.sql). Throws when the transaction failed
 * (nothing reserved: the calls are then reserved one by one).
 */
export async function reserveSegment(db: Kysely<WriteSideTables>, earlier: ReadonlyArray<readonly number[]>, calls: readonly FlushCall[]): Promise<SegmentReservation> {
  const appends = calls.flatMap((c) => (c.kind === "stream" ? [c.append] : []));
  const events = appends.flatMap((a) => a.events);
  // Multi-stream calls travel as one JSON array (reserve_segment's p_multi), each with its place among the calls.
  const multi = calls.flatMap((c, at) => (c.kind === "streams" ? [{ at, ...reserveStreamsArguments(c.streams, c.checks) }] : []));
  const { rows } = await sql<SegmentRecord>`
    select * from reserve_segment(
      ${earlier.flat()}::bigint[], ${callOf(earlier)}::integer[],
      ${appends.map((a) => a.aggregateType)}::text[], ${appends.map((a) => a.aggregateId)}::text[],
      ${appends.map((a) => expectedSeqOf(a.expectation))}::bigint[], ${appends.map((a) => a.events.length)}::integer[],
      ${events.map((e) => e.eventId)}::text[], ${events.map((e) => e.eventType)}::text[],
      ${events.map((e) => e.contentHash)}::text[], ${events.map((e) => e.orderingKey)}::text[],
      ${JSON.stringify(multi)}::jsonb)`.execute(db);
  const segment = rows[0]?.flush_segment;
  if (segment === undefined) throw new Error("reserve_segment returned no row");
  const taken = new Set<number>();
  const byCall = calls.map((): SegmentRecord[] => []);
  for (const row of rows) {
    if (row.outcome === "taken") taken.add(row.item);
    else byCall[row.item]!.push(row);
  }
  return { segment: Number(segment), taken, outcomes: calls.map((c, i) => flushOutcomeOf(c, byCall[i]!)) };
}

function flushOutcomeOf(call: FlushCall, rows: readonly SegmentRecord[]): FlushOutcome {
  if (call.kind === "stream") {
    const outcome = reservationOf(rows as readonly ReserveRecord[], call.append);
    switch (outcome.type) {
      case "reserved":
        return { type: "reserved", streams: [{ slots: outcome.slots, previousHash: outcome.previousHash }] };
      case "head_behind":
        return { type: "head_behind" };
      default:
        return outcome;
    }
  }
  const outcome = streamsReservationOf(
    rows.map((r) => ({ ...r, item: r.part }) as StreamsRecord),
    call.streams,
    call.checks,
  );
  switch (outcome.type) {
    case "existing":
      return { type: "existing", slots: outcome.streams.flat() };
    case "head_behind":
      return { type: "head_behind" };
    default:
      return outcome;
  }
}

/** Segment numbers allocated longer ago than `olderThanMs` (database clock) and still pending. */
export async function expiredSegments(db: Db, olderThanMs: number, limit: number): Promise<number[]> {
  const rows = await db
    .selectFrom("segments")
    .select("segment")
    .where("state", "=", "pending")
    .where("allocated_at", "<", sql<Date>`now() - make_interval(secs => ${olderThanMs / 1000})`)
    .orderBy("segment")
    .limit(limit)
    .execute();
  return rows.map((r) => Number(r.segment));
}

/** Records segment `segment`'s state (inserting the number when the log did not know it). */
export async function markSegment(db: Db, segment: number, state: SegmentState): Promise<void> {
  await db
    .insertInto("segments")
    .values({ segment, state, resolved_at: state === "pending" ? null : sql`now()` })
    .onConflict((oc) => oc.column("segment").doUpdateSet({ state, resolved_at: sql`now()` }))
    .execute();
}

/** The slots a flush put into `segment`, in stream order. */
export async function segmentSlots(db: Db, segment: number): Promise<SlotRow[]> {
  const rows = await selectSlots(db).where("segment", "=", segment).orderBy("aggregate_type").orderBy("aggregate_id").orderBy("seq").execute();
  return rows.map(toSlotRow);
}

/** Closes the pending slots of `segment` (its number was voided: their events were never written). */
export async function voidSegmentSlots(db: Db, segment: number): Promise<number> {
  const rows = await db.updateTable("event_log").set({ state: "void" }).where("segment", "=", segment).where("state", "=", "pending").returning("log_id").execute();
  return rows.length;
}

/** Takes pending slots out of `segment` again (it holds other events than the log believed, W6). */
export async function releaseSegmentSlots(db: Db, segment: number): Promise<void> {
  await db.updateTable("event_log").set({ segment: null, segment_offset: null, segment_length: null }).where("segment", "=", segment).where("state", "=", "pending").execute();
}

/**
 * Closes reservations older than `olderThanMs` that no flush took (their writer died before it
 * wrote anything), whole batches at once: a batch's slots share their reservation time.
 */
export async function voidUnflushedSlots(db: Db, olderThanMs: number): Promise<number> {
  const rows = await db
    .updateTable("event_log")
    .set({ state: "void" })
    .where("state", "=", "pending")
    .where("segment", "is", null)
    .where("reserved_at", "<", sql<Date>`now() - make_interval(secs => ${olderThanMs / 1000})`)
    .returning("log_id")
    .execute();
  return rows.length;
}

/** Pending slots older than `olderThanMs` whose segment is written (their commit never ran: the writer died after its PUT). */
export async function expiredWrittenSlots(db: Db, olderThanMs: number, limit: number): Promise<SlotRow[]> {
  const rows = await selectSlots(db)
    .where("state", "=", "pending")
    .where("segment_offset", "is not", null)
    .where("reserved_at", "<", sql<Date>`now() - make_interval(secs => ${olderThanMs / 1000})`)
    .orderBy("aggregate_type")
    .orderBy("aggregate_id")
    .orderBy("seq")
    .limit(limit)
    .execute();
  return rows.map(toSlotRow);
}

/** The highest segment number the log knows (0 when none). */
export async function lastSegment(db: Db): Promise<number> {
  const row = await db.selectFrom("segments").select(sql<number | null>`max(segment)`.as("max")).executeTakeFirst();
  return Number(row?.max ?? 0);
}

/** Moves the segment counter past `segment` (found in S3, W6), so no allocation reuses it. */
export async function advanceSegmentCounter(db: Db, segment: number): Promise<void> {
  await sql`
    select setval(pg_get_serial_sequence('segments', 'segment'), greatest(${segment}::bigint, (select coalesce(max(segment), 1) from segments)))`.execute(db);
}

/** The slot of `(aggregate, seq)` that is not void, if the log has one. */
export async function liveSlotAt(db: Db, aggregateType: string, aggregateId: string, seq: number): Promise<SlotRow | undefined> {
  const row = await selectSlots(db)
    .where("aggregate_type", "=", aggregateType)
    .where("aggregate_id", "=", aggregateId)
    .where("seq", "=", seq)
    .where("state", "<>", "void")
    .executeTakeFirst();
  return row === undefined ? undefined : toSlotRow(row);
}

/** An event a segment in S3 holds, as the log must record it. */
export interface StoredEvent {
  readonly eventId: string;
  readonly eventType: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly seq: number;
  readonly contentHash: string;
  readonly orderingKey: string | null;
  readonly segment: number;
  readonly offset: number;
  readonly length: number;
  /** Its hash-chain link, from its envelope (core/envelope.ts chainLink). */
  readonly chainHash: string;
}

/**
 * Makes the log hold `event` where S3 holds it (W6): the pending slot at its `(aggregate, seq)` is
 * handed over to it in place (whatever event it was reserved for: S3 decides), or a new pending
 * slot is recorded when the log has none; a committed slot holding it is left alone. Returns the
 * log id to commit, or undefined when there is nothing to commit (already committed, or a committed
 * slot holds another event: two events at one slot, which the caller reports).
 */
export async function adoptStoredEvent(db: Db, event: StoredEvent): Promise<{ logId: number } | { conflict: SlotRow } | undefined> {
  const current = await liveSlotAt(db, event.aggregateType, event.aggregateId, event.seq);
  const location = { segment: event.segment, segment_offset: event.offset, segment_length: event.length, chain_hash: event.chainHash };
  if (current?.state === "committed") return current.eventId === event.eventId ? undefined : { conflict: current };
  if (current !== undefined && current.eventId === event.eventId) {
    // Our own reservation (its writer died after the PUT, or its commit failed): only its place.
    await db.updateTable("event_log").set(location).where("log_id", "=", current.logId).execute();
    return { logId: current.logId };
  }
  if (current !== undefined) {
    // The same event id live in another slot would break its uniqueness: that slot gives way.
    await db.updateTable("event_log").set({ state: "void" }).where("event_id", "=", event.eventId).where("state", "=", "pending").where("log_id", "<>", current.logId).execute();
    await db
      .updateTable("event_log")
      .set({ event_id: event.eventId, event_type: event.eventType, content_hash: event.contentHash, ordering_key: event.orderingKey, batch_first_seq: sql`seq`, batch_last_seq: sql`seq`, ...location })
      .where("log_id", "=", current.logId)
      .execute();
    return { logId: current.logId };
  }
  await db.updateTable("event_log").set({ state: "void" }).where("event_id", "=", event.eventId).where("state", "=", "pending").execute();
  const row = await db
    .insertInto("event_log")
    .values({
      event_id: event.eventId,
      aggregate_type: event.aggregateType,
      aggregate_id: event.aggregateId,
      seq: event.seq,
      event_type: event.eventType,
      content_hash: event.contentHash,
      ordering_key: event.orderingKey,
      batch_first_seq: event.seq,
      batch_last_seq: event.seq,
      state: "pending",
      ...location,
    })
    .onConflict((oc) => oc.doNothing())
    .returning("log_id")
    .executeTakeFirst();
  return row === undefined ? undefined : { logId: row.log_id };
}

/** The slots with these log ids, in stream order. */
export async function slotsById(db: Db, logIds: readonly number[]): Promise<SlotRow[]> {
  if (logIds.length === 0) return [];
  const rows = await selectSlots(db).where("log_id", "in", [...logIds]).orderBy("aggregate_type").orderBy("aggregate_id").orderBy("seq").execute();
  return rows.map(toSlotRow);
}

/** Closes pending slots of `segment` other than `keep` (the segment does not hold their events). */
export async function voidSegmentSlotsExcept(db: Db, segment: number, keep: readonly number[]): Promise<number> {
  let query = db.updateTable("event_log").set({ state: "void" }).where("segment", "=", segment).where("state", "=", "pending");
  if (keep.length > 0) query = query.where("log_id", "not in", [...keep]);
  const rows = await query.returning("log_id").execute();
  return rows.length;
}

/**
 * Closes the still pending slots `logIds` that no flush took yet (a retry settles an original
 * whose writer seems gone). A flush taking them at the same moment wins or loses whole: the
 * allocation locks the rows and takes a call only when every slot of it is pending and unflushed.
 */
export async function voidUnflushed(db: Db, logIds: readonly number[]): Promise<number> {
  if (logIds.length === 0) return 0;
  const rows = await db
    .updateTable("event_log")
    .set({ state: "void" })
    .where("log_id", "in", [...logIds])
    .where("state", "=", "pending")
    .where("segment", "is", null)
    .returning("log_id")
    .execute();
  return rows.length;
}

/**
 * Hands the void slot at `event`'s `(aggregate, seq)` to `event`, as a pending slot at its place in
 * S3 (recovery: S3 decides, W6; a void slot holds no event, and the slot's uniqueness would keep
 * {@link adoptStoredEvent} from recording it). Returns the log id, or undefined when the slot is
 * not void.
 */
export async function adoptIntoVoidSlot(db: Db, event: StoredEvent): Promise<{ logId: number } | undefined> {
  await db.updateTable("event_log").set({ state: "void" }).where("event_id", "=", event.eventId).where("state", "=", "pending").execute();
  const row = await db
    .updateTable("event_log")
    .set({
      event_id: event.eventId,
      event_type: event.eventType,
      content_hash: event.contentHash,
      ordering_key: event.orderingKey,
      batch_first_seq: sql`seq`,
      batch_last_seq: sql`seq`,
      state: "pending",
      global_position: null,
      committed_at: null,
      segment: event.segment,
      segment_offset: event.offset,
      segment_length: event.length,
      chain_hash: event.chainHash,
    })
    .where("aggregate_type", "=", event.aggregateType)
    .where("aggregate_id", "=", event.aggregateId)
    .where("seq", "=", event.seq)
    .where("state", "=", "void")
    .returning("log_id")
    .executeTakeFirst();
  return row === undefined ? undefined : { logId: row.log_id };
}

/**
 * Closes every slot below a stream's head that the log has no row for (recovery from S3 alone: an
 * event whose segment was voided, or never written, left no trace in the bucket), so the events
 * after it can commit (R2 waits for a settled predecessor). Returns how many it closed.
 */
export async function closeUnloggedSlots(db: Db): Promise<number> {
  const { rows } = await sql<{ n: number }>`
    with inserted as (
      insert into event_log (event_id, aggregate_type, aggregate_id, seq, event_type, content_hash, batch_first_seq, batch_last_seq, state)
      select 'recovered-void/' || h.aggregate_type || '/' || h.aggregate_id || '/' || s.seq, h.aggregate_type, h.aggregate_id, s.seq, '', '', s.seq, s.seq, 'void'
        from stream_heads h cross join lateral generate_series(1, h.head) as s(seq)
       where not exists (select 1 from event_log e where e.aggregate_type = h.aggregate_type and e.aggregate_id = h.aggregate_id and e.seq = s.seq)
      on conflict do nothing
      returning 1)
    select count(*)::integer as n from inserted`.execute(db);
  return rows[0]?.n ?? 0;
}

/** Pending slots whose bytes are in a segment (written, not yet committed), in segment order (at most `limit`). */
export async function writtenPendingSlots(db: Db, limit: number): Promise<number[]> {
  const rows = await db
    .selectFrom("event_log")
    .select("log_id")
    .where("state", "=", "pending")
    .where("segment_offset", "is not", null)
    .orderBy("segment")
    .orderBy("segment_offset")
    .limit(limit)
    .execute();
  return rows.map((r) => r.log_id);
}

/** Segment numbers the log holds as still pending (allocated, never settled). */
export async function pendingSegments(db: Db): Promise<number[]> {
  const rows = await db.selectFrom("segments").select("segment").where("state", "=", "pending").orderBy("segment").execute();
  return rows.map((r) => Number(r.segment));
}

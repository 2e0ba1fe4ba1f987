/**
 * Repository of the commit log (`stream_heads`, `event_log`, `global_counter`). Functions take the
 * database or a transaction first; the write path, the sweeper, the relay and readers share them.
 */
import { sql, type Expression, type Kysely, type SqlBool, type Transaction } from "kysely";
import { commitChannel } from "./db/database.js";
import type { SlotState, WriteSideTables } from "./db/schema.js";
import { ConcurrencyError, ConsistencyError, IdempotencyError, type StreamConflictInfo } from "./errors.js";
import type { LogFilter } from "./log-filter.js";

type Db = Kysely<WriteSideTables> | Transaction<WriteSideTables>;

/** What the client expects of the stream's head (docs/CONTRACT.md W3). */
export type Expectation = { readonly type: "exact"; readonly seq: number } | { readonly type: "any" };

/** A slot to reserve for one proposed event. */
export interface SlotRequest {
  readonly eventId: string;
  readonly eventType: string;
  readonly contentHash: string;
  readonly orderingKey: string | null;
}

/** A reserved or existing slot of the commit log. */
export interface SlotRow {
  readonly logId: number;
  readonly eventId: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly seq: number;
  readonly eventType: string;
  readonly contentHash: string;
  readonly orderingKey: string | null;
  readonly state: SlotState;
  readonly globalPosition: number | null;
  readonly batchFirstSeq: number;
  readonly batchLastSeq: number;
  readonly committedAt: Date | null;
  /** The segment holding the event (set when a flush took the slot), and its bytes there once written. */
  readonly segment: number | null;
  readonly segmentOffset: number | null;
  readonly segmentLength: number | null;
  /** The slot's hash-chain link (docs/STORAGE.md "Hash chain"); null for slots closed by a recovery. */
  readonly chainHash: string | null;
}

/** Outcome of {@link reserveSlots}. */
export type Reservation =
  /** `previousHash`: the chain hash of the slot before the first (the first event's previous_hash). */
  | { readonly type: "reserved"; readonly slots: readonly SlotRow[]; readonly previousHash: string }
  /** Every event_id was appended before with the same content: the original slots, in request order. */
  | { readonly type: "existing"; readonly slots: readonly SlotRow[] };

const UNIQUE_VIOLATION = "23505";

/** Internal signal: the head row is behind the commit log and must be repaired first. */
class HeadBehindLog extends Error {
  constructor(readonly logged: number) {
    super("stream head is behind the commit log");
  }
}

/**
 * An append reserved alone, one transaction: lock the aggregate's head, look the event_ids up, check the
 * expectation and reserve contiguous pending slots. Throws ConcurrencyError (nothing reserved, no
 * number consumed) or IdempotencyError.
 */
export async function reserveSlots(
  db: Kysely<WriteSideTables>,
  aggregateType: string,
  aggregateId: string,
  expectation: Expectation,
  events: readonly SlotRequest[],
): Promise<Reservation> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await reserveIn(db, aggregateType, aggregateId, expectation, events);
    } catch (e) {
      if (e instanceof HeadBehindLog && attempt <= 1) {
        await raiseHead(db, aggregateType, aggregateId, e.logged);
        continue;
      }
      const { code, constraint } = e as { code?: string; constraint?: string };
      if (attempt > 1 || code !== UNIQUE_VIOLATION) throw e;
      // The head row is behind the log (restored from an older backup, W6): raise it past every
      // known slot and decide again, so the client sees the real head.
      if (constraint === "event_log_slot_uq") await raiseHead(db, aggregateType, aggregateId, await maxLoggedSeq(db, aggregateType, aggregateId));
      // Otherwise the same event_id was reserved concurrently for another aggregate: the lookup
      // now finds it and reports the conflict.
    }
  }
}

async function reserveIn(
  db: Kysely<WriteSideTables>,
  aggregateType: string,
  aggregateId: string,
  expectation: Expectation,
  events: readonly SlotRequest[],
): Promise<Reservation> {
  // One round trip: the function `reserve_slots` (core/db/functions/reserve_slots.sql) upserts and
  // locks the head, looks the event ids up, advances the head and inserts the pending rows in one
  // transaction. Round trips were the largest part of an append's latency (bench/README.md).
  //
  // Its commit does not wait for the WAL flush (synchronous_commit off for this transaction only),
  // which takes a flush wait off every append. Nothing acknowledged depends on it: an append is
  // acknowledged only after its commit transaction (commitSlots), which waits for the flush, and the
  // WAL is flushed in order, so the reservation is durable before any OK. A database crash can
  // lose only reservations whose appends were never acknowledged; their objects, if written, are
  // found again exactly as after lost allocations (W6: conflict, resync from S3) or by the
  // sweeper's void marker (W5).
  const { rows } = await sql<ReserveRecord>`
    select r.* from set_config('synchronous_commit', 'off', true) as unflushed, reserve_slots(
      ${aggregateType}, ${aggregateId}, ${expectedSeqOf(expectation)}::bigint,
      ${events.map((e) => e.eventId)}::text[], ${events.map((e) => e.eventType)}::text[],
      ${events.map((e) => e.contentHash)}::text[], ${events.map((e) => e.orderingKey)}::text[]) as r`.execute(db);
  const outcome = reservationOf(rows, { aggregateType, aggregateId, expectation, events });
  switch (outcome.type) {
    case "head_behind":
      // A new head row for a stream the log already knows means the heads were lost (W6): the
      // caller repairs the head and decides again.
      throw new HeadBehindLog(outcome.logged);
    case "refused":
      throw outcome.error;
    default:
      return outcome;
  }
}

/** A row of `reserve_slots` (core/db/functions/reserve_slots.sql). */
export type ReserveRecord = SlotRecord & { outcome: "reserved" | "existing" | "conflict" | "head_behind"; head: number; previous_hash: string | null };

/**
 * What `reserve_slots` decided for one append: a reservation (or the slots of its original), a
 * refusal (ConcurrencyError, or IdempotencyError when the event ids were appended before with other
 * content), or a head behind the log (W6).
 */
export type ReserveOutcome = Reservation | { readonly type: "refused"; readonly error: ConcurrencyError | IdempotencyError } | { readonly type: "head_behind"; readonly logged: number };

/** Reads `reserve_slots`'s rows for `append` (alone, or as one append of a flush, core/segment-log.ts reserveSegment). */
export function reservationOf(rows: readonly ReserveRecord[], append: StreamSlotRequest): ReserveOutcome {
  const first = rows[0];
  if (first === undefined) throw new Error("reserve_slots returned no row");
  switch (first.outcome) {
    case "head_behind":
      return { type: "head_behind", logged: Number(first.head) };
    case "existing":
      try {
        return { type: "existing", slots: matchExisting(append.events, rows.map(toSlotRow)) };
      } catch (e) {
        if (e instanceof IdempotencyError) return { type: "refused", error: e };
        throw e;
      }
    case "conflict": {
      const head = Number(first.head);
      const { aggregateType, aggregateId, expectation } = append;
      return { type: "refused", error: new ConcurrencyError(aggregateType, aggregateId, expectation.type === "exact" ? expectation.seq : head, head) };
    }
    case "reserved": {
      const sorted = [...rows].sort((a, b) => Number(a.seq) - Number(b.seq));
      return { type: "reserved", slots: sorted.map(toSlotRow), previousHash: sorted[0]!.previous_hash ?? "" };
    }
  }
}

/** One aggregate a multi-stream append writes. */
export interface StreamSlotRequest {
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly expectation: Expectation;
  readonly events: readonly SlotRequest[];
}

/** One aggregate a multi-stream append checks without writing: its head must be `expectedSeq`. */
export interface HeadCheck {
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly expectedSeq: number;
}

/** Outcome of {@link reserveStreams}: per written stream, in request order. */
export type StreamsReservation =
  | { readonly type: "reserved"; readonly streams: ReadonlyArray<{ readonly slots: readonly SlotRow[]; readonly previousHash: string }> }
  /** Every event_id was appended before by this same call with the same content: the original slots. */
  | { readonly type: "existing"; readonly streams: ReadonlyArray<readonly SlotRow[]> };

/** A row of `reserve_streams` (core/db/functions/reserve_streams.sql). */
export type StreamsRecord = SlotRecord & {
  outcome: "reserved" | "existing" | "conflict" | "head_behind";
  item: number | null;
  head: number | null;
  previous_hash: string | null;
  call_id: number | null;
};

/** What `reserve_streams` decided for one multi-stream append: as {@link ReserveOutcome}, per stream. */
export type StreamsOutcome =
  | StreamsReservation
  | { readonly type: "refused"; readonly error: ConsistencyError | IdempotencyError }
  | { readonly type: "head_behind"; readonly streams: ReadonlyArray<{ aggregateType: string; aggregateId: string; logged: number }> };

/** Reads `reserve_streams`'s rows for a multi-stream append (alone, or as one call of a flush, core/segment-log.ts reserveSegment). */
export function streamsReservationOf(rows: readonly StreamsRecord[], streams: readonly StreamSlotRequest[], checks: readonly HeadCheck[]): StreamsOutcome {
  const first = rows[0];
  if (first === undefined) throw new Error("reserve_streams returned no row");
  switch (first.outcome) {
    case "head_behind":
      return { type: "head_behind", streams: rows.map((r) => ({ aggregateType: r.aggregate_type, aggregateId: r.aggregate_id, logged: Number(r.head) })) };
    case "existing":
      try {
        return { type: "existing", streams: matchExistingCall(streams, rows) };
      } catch (e) {
        if (e instanceof IdempotencyError) return { type: "refused", error: e };
        throw e;
      }
    case "conflict":
      return { type: "refused", error: new ConsistencyError(rows.map((r) => conflictOf(streams, checks, r))) };
    case "reserved":
      return {
        type: "reserved",
        streams: streams.map((_, i) => {
          const own = rows.filter((r) => r.item === i + 1).sort((a, b) => Number(a.seq) - Number(b.seq));
          return { slots: own.map(toSlotRow), previousHash: own[0]?.previous_hash ?? "" };
        }),
      };
  }
}

/**
 * Step 1 of a multi-stream append (docs/CONTRACT.md W8), one transaction: lock every named head in
 * one order, look the event_ids up, check every expectation and consistency check, and reserve
 * contiguous pending slots per written stream under one call id. Throws ConsistencyError listing
 * every expectation and check that failed (nothing reserved, no number consumed) or IdempotencyError.
 */
export async function reserveStreams(db: Kysely<WriteSideTables>, streams: readonly StreamSlotRequest[], checks: readonly HeadCheck[]): Promise<StreamsReservation> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await reserveStreamsIn(db, streams, checks);
    } catch (e) {
      if (e instanceof HeadsBehindLog && attempt <= 1) {
        for (const behind of e.streams) await raiseHead(db, behind.aggregateType, behind.aggregateId, behind.logged);
        continue;
      }
      const { code, constraint } = e as { code?: string; constraint?: string };
      if (attempt > 1 || code !== UNIQUE_VIOLATION) throw e;
      // As in reserveSlots: a head behind the log (W6) is raised past every known slot, or the same
      // event_id was reserved concurrently elsewhere and the lookup now reports it.
      if (constraint === "event_log_slot_uq") {
        for (const stream of streams) await raiseHead(db, stream.aggregateType, stream.aggregateId, await maxLoggedSeq(db, stream.aggregateType, stream.aggregateId));
      }
    }
  }
}

/** Internal signal: head rows behind the commit log, to repair before deciding again. */
class HeadsBehindLog extends Error {
  constructor(readonly streams: ReadonlyArray<{ aggregateType: string; aggregateId: string; logged: number }>) {
    super("stream heads are behind the commit log");
  }
}

/** The seq an append expects its stream's head at; null for "any" (the SQL functions' p_expected). */
export function expectedSeqOf(expectation: Expectation): number | null {
  return expectation.type === "exact" ? expectation.seq : null;
}

/**
 * A multi-stream append as `reserve_streams` takes it: its arguments, named as its parameters
 * without `p_` (reserve_segment.sql reads them by these names for a call of a flush).
 */
export function reserveStreamsArguments(streams: readonly StreamSlotRequest[], checks: readonly HeadCheck[]) {
  const events = streams.flatMap((s) => s.events);
  return {
    types: streams.map((s) => s.aggregateType),
    ids: streams.map((s) => s.aggregateId),
    expected: streams.map((s) => expectedSeqOf(s.expectation)),
    counts: streams.map((s) => s.events.length),
    event_ids: events.map((e) => e.eventId),
    event_types: events.map((e) => e.eventType),
    content_hashes: events.map((e) => e.contentHash),
    ordering_keys: events.map((e) => e.orderingKey),
    check_types: checks.map((c) => c.aggregateType),
    check_ids: checks.map((c) => c.aggregateId),
    check_expected: checks.map((c) => c.expectedSeq),
  };
}

async function reserveStreamsIn(db: Kysely<WriteSideTables>, streams: readonly StreamSlotRequest[], checks: readonly HeadCheck[]): Promise<StreamsReservation> {
  const a = reserveStreamsArguments(streams, checks);
  // One round trip, committed without waiting for the WAL flush, for the reasons reserveIn gives.
  const { rows } = await sql<StreamsRecord>`
    select r.* from set_config('synchronous_commit', 'off', true) as unflushed, reserve_streams(
      ${a.types}::text[], ${a.ids}::text[], ${a.expected}::bigint[], ${a.counts}::integer[],
      ${a.event_ids}::text[], ${a.event_types}::text[], ${a.content_hashes}::text[], ${a.ordering_keys}::text[],
      ${a.check_types}::text[], ${a.check_ids}::text[], ${a.check_expected}::bigint[]) as r`.execute(db);
  const outcome = streamsReservationOf(rows, streams, checks);
  switch (outcome.type) {
    case "head_behind":
      throw new HeadsBehindLog(outcome.streams);
    case "refused":
      throw outcome.error;
    default:
      return outcome;
  }
}

function conflictOf(streams: readonly StreamSlotRequest[], checks: readonly HeadCheck[], row: StreamsRecord): StreamConflictInfo {
  const item = row.item! - 1;
  const actualSeq = Number(row.head);
  if (item < streams.length) {
    const stream = streams[item]!;
    return { field: `streams[${item}]`, aggregateType: stream.aggregateType, aggregateId: stream.aggregateId, expectedSeq: stream.expectation.type === "exact" ? stream.expectation.seq : actualSeq, actualSeq };
  }
  const check = checks[item - streams.length]!;
  return { field: `consistency_checks[${item - streams.length}]`, aggregateType: check.aggregateType, aggregateId: check.aggregateId, expectedSeq: check.expectedSeq, actualSeq };
}

/**
 * A retried multi-stream call is the original only when every event is found with the same
 * content, at the same aggregate, and the original call held exactly these events: one call id,
 * no other slot, each stream one contiguous batch in request order.
 */
function matchExistingCall(streams: readonly StreamSlotRequest[], rows: readonly StreamsRecord[]): SlotRow[][] {
  const byId = new Map(rows.map((r) => [r.event_id, r]));
  const differentBatch = (row: SlotRecord) => new IdempotencyError(row.event_id, row.content_hash, row.content_hash, "was appended before in a different batch");
  for (const stream of streams) {
    for (const event of stream.events) {
      const row = byId.get(event.eventId);
      if (row !== undefined && row.content_hash !== event.contentHash) throw new IdempotencyError(row.event_id, row.content_hash, event.contentHash);
    }
  }
  const callIds = new Set(rows.map((r) => r.call_id));
  const total = streams.reduce((n, s) => n + s.events.length, 0);
  if (callIds.size !== 1 || callIds.has(null) || rows.length !== total) throw differentBatch(rows[0]!);
  return streams.map((stream) => {
    const own = rows.filter((r) => r.aggregate_type === stream.aggregateType && r.aggregate_id === stream.aggregateId).map(toSlotRow);
    if (stream.events.some((e) => byId.get(e.eventId) === undefined)) throw differentBatch(rows[0]!);
    return matchExisting(stream.events, own);
  });
}

/** A retry is the original append only when every event matches, in the same contiguous order. */
function matchExisting(events: readonly SlotRequest[], found: readonly SlotRow[]): SlotRow[] {
  const byId = new Map(found.map((row) => [row.eventId, row]));
  const slots: SlotRow[] = [];
  for (const event of events) {
    const row = byId.get(event.eventId);
    if (row === undefined) {
      const other = found[0]!;
      throw new IdempotencyError(other.eventId, other.contentHash, other.contentHash, "was appended before in a different batch");
    }
    if (row.contentHash !== event.contentHash) throw new IdempotencyError(row.eventId, row.contentHash, event.contentHash);
    slots.push(row);
  }
  for (let i = 1; i < slots.length; i++) {
    const prev = slots[i - 1]!;
    const cur = slots[i]!;
    if (cur.seq !== prev.seq + 1 || cur.aggregateId !== prev.aggregateId || cur.aggregateType !== prev.aggregateType) {
      throw new IdempotencyError(cur.eventId, cur.contentHash, cur.contentHash, "was appended before in a different batch");
    }
  }
  const first = slots[0]!;
  const last = slots[slots.length - 1]!;
  if (first.seq !== first.batchFirstSeq || last.seq !== last.batchLastSeq) {
    throw new IdempotencyError(first.eventId, first.contentHash, first.contentHash, "was appended before in a different batch");
  }
  return slots;
}

const SLOT_COLUMNS = [
  "log_id",
  "event_id",
  "aggregate_type",
  "aggregate_id",
  "seq",
  "event_type",
  "content_hash",
  "ordering_key",
  "state",
  "global_position",
  "batch_first_seq",
  "batch_last_seq",
  "committed_at",
  "segment",
  "segment_offset",
  "segment_length",
  "chain_hash",
] as const;

/** A query of slot rows with every column a {@link SlotRow} has. */
export function selectSlots(db: Db) {
  return db.selectFrom("event_log").select(SLOT_COLUMNS);
}

/** A slot row as PostgreSQL returns it. */
export type SlotRecord = {
  log_id: number;
  event_id: string;
  aggregate_type: string;
  aggregate_id: string;
  seq: number;
  event_type: string;
  content_hash: string;
  ordering_key: string | null;
  state: SlotState;
  global_position: number | null;
  batch_first_seq: number;
  batch_last_seq: number;
  committed_at: Date | null;
  segment: number | null;
  segment_offset: number | null;
  segment_length: number | null;
  chain_hash: string | null;
};

/** A row of {@link selectSlots} as a {@link SlotRow}. */
export function toSlotRow(r: SlotRecord): SlotRow {
  return {
    logId: r.log_id,
    eventId: r.event_id,
    aggregateType: r.aggregate_type,
    aggregateId: r.aggregate_id,
    seq: r.seq,
    eventType: r.event_type,
    contentHash: r.content_hash,
    orderingKey: r.ordering_key,
    state: r.state,
    globalPosition: r.global_position,
    batchFirstSeq: r.batch_first_seq,
    batchLastSeq: r.batch_last_seq,
    committedAt: r.committed_at,
    segment: r.segment === null ? null : Number(r.segment),
    segmentOffset: r.segment_offset === null ? null : Number(r.segment_offset),
    segmentLength: r.segment_length === null ? null : Number(r.segment_length),
    chainHash: r.chain_hash ?? null,
  };
}

/** Outcome of {@link commitSlots} per log id. */
export type CommitOutcome =
  | { readonly type: "committed"; readonly position: number }
  | { readonly type: "void" }
  /** A predecessor slot of the same aggregate is still pending: try again later. */
  | { readonly type: "deferred" }
  | { readonly type: "missing" };

/** A slot to commit; with `written`, the caller wrote it and says which event and where. */
export interface CommitRequest {
  readonly logId: number;
  readonly written?: { readonly eventId: string; readonly offset: number; readonly length: number };
}

/**
 * The commit step of an append, one transaction for many slots (group commit): records where each written
 * event is, then takes the commit counter's row lock, so commit order equals global position order
 * and a reader that sees position p has seen every position below p (docs/CONTRACT.md R1). A slot
 * commits only after its predecessor in the stream is settled, which keeps per-aggregate order in
 * global order (R2). Wakes listeners. A slot that is not written, or holds another event now,
 * answers `missing`.
 */
export async function commitSlots(
  db: Kysely<WriteSideTables>,
  schema: string,
  requests: readonly CommitRequest[],
): Promise<Map<number, CommitOutcome>> {
  const outcomes = new Map<number, CommitOutcome>();
  if (requests.length === 0) return outcomes;
  // One round trip: the function `commit_slots` (core/db/functions/commit_slots.sql) records the
  // locations, takes the counter's lock, applies the predecessor rule and notifies once. The
  // committer runs one such transaction at a time, so its length is what every waiting append pays.
  const written = requests.some((r) => r.written !== undefined);
  const ids = requests.map((r) => r.logId);
  const { rows } = await sql<{ slot_id: number; outcome: "committed" | "void" | "deferred"; slot_position: number | null }>`
    select * from commit_slots(${ids}::bigint[],
      ${written ? requests.map((r) => r.written?.eventId ?? null) : null}::text[],
      ${written ? requests.map((r) => r.written?.offset ?? null) : null}::bigint[],
      ${written ? requests.map((r) => r.written?.length ?? null) : null}::integer[],
      ${commitChannel(schema)})`.execute(db);
  for (const row of rows) {
    outcomes.set(row.slot_id, row.outcome === "committed" ? { type: "committed", position: row.slot_position! } : { type: row.outcome });
  }
  for (const id of ids) if (!outcomes.has(id)) outcomes.set(id, { type: "missing" });
  return outcomes;
}

/** Slots of one stream from `fromSeq` on, in sequence order (at most `limit`). */
export async function streamSlots(
  db: Db,
  aggregateType: string,
  aggregateId: string,
  fromSeq: number,
  limit: number,
): Promise<SlotRow[]> {
  const rows = await selectSlots(db)
    .where("aggregate_type", "=", aggregateType)
    .where("aggregate_id", "=", aggregateId)
    .where("seq", ">=", fromSeq)
    .orderBy("seq")
    .limit(limit)
    .execute();
  return rows.map(toSlotRow);
}

/** A stream's allocation head, or undefined when the stream was never reserved. */
export async function allocatedHead(db: Db, aggregateType: string, aggregateId: string): Promise<number | undefined> {
  const row = await db
    .selectFrom("stream_heads")
    .select("head")
    .where("aggregate_type", "=", aggregateType)
    .where("aggregate_id", "=", aggregateId)
    .executeTakeFirst();
  return row?.head;
}

/**
 * Raises a stream's allocation head to at least `head` and returns it (re-synchronisation from S3,
 * W6; it never lowers a head). The events found in S3 are recorded by core/segment-log.ts adoptStoredEvent.
 */
export async function raiseHead(db: Db, aggregateType: string, aggregateId: string, head: number): Promise<number> {
  const row = await db
    .insertInto("stream_heads")
    .values({ aggregate_type: aggregateType, aggregate_id: aggregateId, head })
    .onConflict((oc) =>
      oc.columns(["aggregate_type", "aggregate_id"]).doUpdateSet({
        head: sql`greatest(stream_heads.head, excluded.head)`,
        updated_at: sql`now()`,
      }),
    )
    .returning("head")
    .executeTakeFirstOrThrow();
  return row.head;
}

/** Committed slots with a global position above `after`, in position order (at most `limit`). */
export async function committedAfter(db: Db, after: number, limit: number): Promise<SlotRow[]> {
  const rows = await selectSlots(db)
    .where("state", "=", "committed")
    .where("global_position", ">", after)
    .orderBy("global_position")
    .limit(limit)
    .execute();
  return rows.map(toSlotRow);
}

/**
 * Committed slots matching `filter` with a global position in (after, upTo], in position order (at
 * most `limit`): the filter runs in PostgreSQL, over at most `upTo - after` rows of the position
 * index, so a selective filter costs neither the transfer of the rows it skips nor, for the
 * caller, their events' reads from S3 (docs/CONTRACT.md A3).
 */
export async function committedMatching(db: Db, after: number, upTo: number, filter: LogFilter, limit: number): Promise<SlotRow[]> {
  let query = selectSlots(db).where("state", "=", "committed").where("global_position", ">", after).where("global_position", "<=", upTo);
  // `databaseOf`: the part before the first `/`, and no database when there is none (or it leads).
  if (filter.databases !== undefined) query = query.where(sql<boolean>`strpos(aggregate_id, '/') > 1 and split_part(aggregate_id, '/', 1) = any(${[...filter.databases]}::text[])`);
  if (filter.aggregateTypes !== undefined) query = query.where(sql<boolean>`aggregate_type = any(${[...filter.aggregateTypes]}::text[])`);
  for (const prefix of filter.aggregateTypePrefixes ?? []) if (prefix !== "") query = query.where(sql<boolean>`starts_with(aggregate_type, ${prefix})`);
  if (filter.eventTypes !== undefined) query = query.where(sql<boolean>`event_type = any(${[...filter.eventTypes]}::text[])`);
  if ((filter.eventTypePrefix ?? "") !== "") query = query.where(sql<boolean>`starts_with(event_type, ${filter.eventTypePrefix})`);
  const rows = await query.orderBy("global_position").limit(limit).execute();
  return rows.map(toSlotRow);
}

/** The highest global position committed so far. */
export async function lastPosition(db: Db): Promise<number> {
  const row = await db.selectFrom("global_counter").select("position").where("id", "=", 1).executeTakeFirstOrThrow();
  return row.position;
}

/** The live (non-void) slot holding `eventId`, if any. */
export async function findLiveSlot(db: Db, eventId: string): Promise<SlotRow | undefined> {
  const row = await selectSlots(db).where("event_id", "=", eventId).where("state", "<>", "void").executeTakeFirst();
  return row === undefined ? undefined : toSlotRow(row);
}

/** A stream's heads: allocated, resolved (contiguous committed or void prefix) and last position. */
export interface StreamState {
  readonly allocated: number;
  readonly resolved: number;
  readonly globalPosition: number;
}

/** The state of one stream, or undefined when it was never reserved. */
export async function streamState(db: Db, aggregateType: string, aggregateId: string): Promise<StreamState | undefined> {
  const allocated = await allocatedHead(db, aggregateType, aggregateId);
  if (allocated === undefined) return undefined;
  const row = await db
    .selectFrom("event_log")
    .select([
      sql<number | null>`min(seq) filter (where state = 'pending')`.as("first_pending"),
      sql<number | null>`max(global_position)`.as("position"),
    ])
    .where("aggregate_type", "=", aggregateType)
    .where("aggregate_id", "=", aggregateId)
    .executeTakeFirst();
  const firstPending = row?.first_pending ?? null;
  const resolved = firstPending === null ? allocated : Number(firstPending) - 1;
  return { allocated, resolved, globalPosition: Number(row?.position ?? 0) };
}

/**
 * Listings order ids by code point (`collate "C"`), the order of the listing indexes
 * (stream_heads_listing_ix, instances_listing_ix): whatever the database's collation, a prefix is
 * then a key range, and a page reads its own rows rather than every id of the type before or
 * after it (a locale collation's order gives PostgreSQL no range for a prefix).
 */
export const CODE_POINT_ORDER = sql`collate "C"`;

/**
 * `column` (of ids) starting with `prefix` and above `after`, in code-point order: the range
 * [prefix, the least string above every string that starts with it) is exactly those ids.
 */
export function idsAfter(column: string, prefix: string, after: string): Expression<SqlBool> {
  const id = sql`${sql.ref(column)} ${CODE_POINT_ORDER}`;
  const end = prefixEnd(prefix);
  return sql<SqlBool>`${id} >= ${prefix} and ${id} > ${after}${end === undefined ? sql`` : sql` and ${id} < ${end}`}`;
}

/** The least string above every string that starts with `prefix`, in code-point order; undefined for none (no prefix, or U+10FFFF only). */
export function prefixEnd(prefix: string): string | undefined {
  const points = [...prefix];
  while (points.length > 0) {
    const last = points.pop()!.codePointAt(0)!;
    // Past the surrogates, which no valid string holds alone.
    if (last < 0x10ffff) return points.join("") + String.fromCodePoint(last === 0xd7ff ? 0xe000 : last + 1);
  }
  return undefined;
}

/** Aggregate ids of one type that start with `prefix`, after `after`, in code-point order (at most `limit`). */
export async function listStreams(
  db: Db,
  aggregateType: string,
  prefix: string,
  after: string,
  limit: number,
): Promise<string[]> {
  const rows = await db
    .selectFrom("stream_heads")
    .select("aggregate_id")
    .where("aggregate_type", "=", aggregateType)
    .where(idsAfter("aggregate_id", prefix, after))
    .where("head", ">", 0)
    .orderBy(sql`aggregate_id ${CODE_POINT_ORDER}`)
    .limit(limit)
    .execute();
  return rows.map((r) => r.aggregate_id);
}

/** The highest seq the log holds for a stream (0 when none). */
async function maxLoggedSeq(db: Db, aggregateType: string, aggregateId: string): Promise<number> {
  const row = await db
    .selectFrom("event_log")
    .select(sql<number | null>`max(seq)`.as("max"))
    .where("aggregate_type", "=", aggregateType)
    .where("aggregate_id", "=", aggregateId)
    .executeTakeFirst();
  return Number(row?.max ?? 0);
}

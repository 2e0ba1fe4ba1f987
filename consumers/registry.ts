/**
 * The processed-event registry (docs/CONTRACT.md C1–C4, C7) and the ordering guard (C2), as repository
 * functions that take the database or a transaction first: the caller owns the transaction, so a
 * PostgreSQL side effect and its "done" commit together. Every time comparison and every lease is
 * computed by PostgreSQL (`clock_timestamp()`), never by the worker's clock (weakness 10).
 */
import { sql, type Kysely, type Transaction } from "kysely";
import { aggregateKey, type ConsumerDatabase, lockWatermarks, type ProcessingState, type RegistryDb, type RegistryEvent, type StoredMessage } from "../core/index.js";
import { LeaseLostError } from "./failures.js";

// Shared with the operator's redrive (core/dead-letters.ts), which takes the same locks.
export { aggregateKey, lockWatermarks };

/** What the registry records about an event when a handler claims it. */
export interface ClaimRequest extends RegistryEvent {
  /**
   * Identifies the worker (unique per process run). A `processing` row with this owner is this
   * worker's own claim interrupted by an outage: resuming it is neither a takeover nor an attempt.
   * The runtime never runs one event twice at once, so no other task of the worker can hold it.
   */
  readonly owner: string;
  readonly leaseMs: number;
  /**
   * Count resuming this worker's own claim as an attempt: set after the worker lost its lease
   * (a handler slower than the lease), so such an event is eventually dead-lettered, not retried
   * forever. Resuming after an outage does not count.
   */
  readonly countResume?: boolean;
  /**
   * A replay (consumers/replayer.ts): the claim may also take a `replay_requested` row, and its
   * attempts start again at 1. Only the replayer sets it; a delivery finds such a row finished.
   */
  readonly replay?: boolean;
}

/** A held claim: the fencing token every later step must present. */
export interface Claim {
  readonly handler: string;
  readonly eventId: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly seq: number;
  readonly fence: number;
  /** Attempts so far, this one included. */
  readonly attempts: number;
  /** The state this claim replaced: null (new), 'processing' (a takeover), 'retry_scheduled', 'replay_requested', 'self' (resumed). */
  readonly claimedFrom: string | null;
  /** The error recorded by the previous attempt, if any. */
  readonly lastError: string | null;
}

/** Outcome of {@link claimEvent}. */
export type ClaimOutcome =
  | { readonly type: "claimed"; readonly claim: Claim }
  /** The event already has a final outcome for this handler: nothing to do. */
  | { readonly type: "finished"; readonly state: Exclude<ProcessingState, "processing" | "retry_scheduled"> }
  /**
   * Not now: another worker holds a live lease ("held"), the retry is not due ("not_due"), or a
   * lower seq of the same aggregate is still in flight ("ordering"). Ask again after `ms`.
   */
  | { readonly type: "wait"; readonly reason: "held" | "not_due" | "ordering"; readonly ms: number };

const ORDERING_POLL_MS = 100;

/**
 * Claims `(handler, event_id)` with a fresh fencing token and a lease of `leaseMs` (DB clock).
 * Succeeds for a new event, an expired lease (a takeover: counts an attempt, C4), a due retry, or
 * this worker's own claim interrupted by an outage. Refuses while a lower seq of the same aggregate is
 * processing, scheduled for retry or waiting for its replay (C2, C9: n+1 waits while n is in flight). Of two concurrent
 * claims exactly one succeeds (the primary key decides).
 */
export async function claimEvent(db: RegistryDb, request: ClaimRequest): Promise<ClaimOutcome> {
  const granted = await claimEvents(db, request.handler, request.owner, request.leaseMs, [request], request.countResume ?? false, request.replay ?? false);
  const claim = granted.get(request.eventId);
  if (claim !== undefined) return { type: "claimed", claim };

  const { rows: current } = await sql<{ state: ProcessingState; lease_left_ms: number | null; due_in_ms: number | null }>`
    select state,
      ceil(extract(epoch from (lease_expires_at - clock_timestamp())) * 1000)::integer as lease_left_ms,
      ceil(extract(epoch from (next_attempt_at - clock_timestamp())) * 1000)::integer as due_in_ms
    from processed_events where handler = ${request.handler} and event_id = ${request.eventId}`.execute(db);
  const state = current[0];
  if (state === undefined) return { type: "wait", reason: "ordering", ms: ORDERING_POLL_MS };
  switch (state.state) {
    case "replay_requested":
      // The replayer's own claim was refused: an earlier event of the aggregate is still in flight.
      if (request.replay === true) return { type: "wait", reason: "ordering", ms: ORDERING_POLL_MS };
      return { type: "finished", state: state.state };
    case "done":
    case "dead_lettered":
    case "skipped_stale":
    case "parked":
    case "discarded":
      // Parked and replay-requested events are recorded for a delivery: the replayer owns them.
      return { type: "finished", state: state.state };
    case "processing":
      return { type: "wait", reason: "held", ms: Math.max(10, (state.lease_left_ms ?? 0) + 5) };
    case "retry_scheduled":
      if ((state.due_in_ms ?? 0) > 0) return { type: "wait", reason: "not_due", ms: state.due_in_ms! + 5 };
      return { type: "wait", reason: "ordering", ms: ORDERING_POLL_MS };
  }
}

/**
 * Extends the lease by `leaseMs` from now (DB clock). Returns false when the claim is no longer
 * held — fenced by another claim, finished, or its lease already expired — and then the holder
 * must stop: its completion would be refused anyway.
 */
export async function renewLease(db: RegistryDb, claim: Claim, leaseMs: number): Promise<boolean> {
  return (await renewLeases(db, [claim], leaseMs)) === 1;
}

/**
 * The ordering guard's read inside the side effect's transaction: locks the watermark row of
 * `(handler, aggregate)` until the transaction ends (so two workers cannot apply one aggregate at
 * once) and returns the highest seq applied so far (0 when none).
 */
export async function lockWatermark(tx: Transaction<ConsumerDatabase>, handler: string, aggregateType: string, aggregateId: string): Promise<number> {
  const applied = await lockWatermarks(tx, handler, [{ aggregateType, aggregateId }]);
  return applied.values().next().value ?? 0;
}

/**
 * Records the outcome of a held claim inside the caller's transaction: `done` (and raises the
 * watermark to the event's seq) or `skipped_stale`. Throws LeaseLostError — so the transaction,
 * side effect included, rolls back — unless this claim's fence is current and its lease is live
 * on the database clock at this moment (C1).
 */
export async function finishClaim(tx: Transaction<ConsumerDatabase>, claim: Claim, state: "done" | "skipped_stale"): Promise<void> {
  await finishClaims(tx, [{ claim, state }]);
}

/**
 * Schedules another attempt after `delayMs` (DB clock) and records the error. Returns false when
 * the claim was fenced meanwhile (a newer claim owns the row; nothing changed).
 */
export async function scheduleRetry(db: RegistryDb, claim: Claim, delayMs: number, error: string): Promise<boolean> {
  const result = await sql`
    update processed_events set state = 'retry_scheduled',
      next_attempt_at = clock_timestamp() + ${delayMs}::bigint * interval '1 millisecond',
      last_error = ${error}, lease_expires_at = null, updated_at = clock_timestamp(),
      first_failed_at = coalesce(first_failed_at, clock_timestamp()), last_failed_at = clock_timestamp()
    where handler = ${claim.handler} and event_id = ${claim.eventId} and fence = ${claim.fence} and state = 'processing'`.execute(db);
  return Number(result.numAffectedRows ?? 0n) === 1;
}

/**
 * Marks a held claim dead-lettered with its cause (after the dead-letter message was produced),
 * keeping the message for a replay. Returns false when the claim was fenced meanwhile.
 */
export async function markDeadLettered(db: RegistryDb, claim: Claim, error: string, message: StoredMessage): Promise<boolean> {
  const result = await sql`
    update processed_events set state = 'dead_lettered', last_error = ${error}, lease_expires_at = null,
      finished_at = clock_timestamp(), updated_at = clock_timestamp(), message = ${JSON.stringify(message)}::jsonb,
      first_failed_at = coalesce(first_failed_at, clock_timestamp()), last_failed_at = clock_timestamp()
    where handler = ${claim.handler} and event_id = ${claim.eventId} and fence = ${claim.fence} and state = 'processing'`.execute(db);
  return Number(result.numAffectedRows ?? 0n) === 1;
}

/** Options of {@link pruneDone}. */
export interface PruneOptions {
  /** Rows finished longer ago than this are deleted (default 7 days). */
  readonly retentionMs?: number;
  /** Rows deleted per statement (default 1000), so no statement holds many locks for long. */
  readonly batchSize?: number;
  /** Stop after this many batches (default unlimited); the next run continues. */
  readonly maxBatches?: number;
  readonly signal?: AbortSignal;
}

/** Default retention of `done` rows: 7 days. */
export const DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000;

/** The advisory lock key of {@link foldRegistryCounts}: one fold at a time across processes. */
const COUNT_FOLD_LOCK = 0x7464_636e; // "tdcn"

/**
 * Folds the registry's count deltas (written by its triggers, migration 2026-12-04-01-registry-counts)
 * into registry_counts, in one transaction, and returns how many delta rows it folded. A process
 * that finds another folding skips (0). Reads sum both tables, so this only keeps them short.
 */
export async function foldRegistryCounts(db: Kysely<ConsumerDatabase>): Promise<number> {
  return db.transaction().execute(async (tx) => {
    const { rows } = await sql<{ locked: boolean }>`select pg_try_advisory_xact_lock(${COUNT_FOLD_LOCK}) as locked`.execute(tx);
    if (rows[0]?.locked !== true) return 0;
    const { rows: folded } = await sql<{ n: string }>`
      with moved as (delete from registry_count_deltas returning handler, state, n, max_position, last_changed_at),
      summed as (
        select handler, state, sum(n) as n, max(max_position) as max_position, max(last_changed_at) as last_changed_at, count(*) as deltas
          from moved group by handler, state
      ),
      written as (
        insert into registry_counts as c (handler, state, n, max_position, last_changed_at)
        select handler, state, n, max_position, last_changed_at from summed order by handler, state
        on conflict (handler, state) do update set
          n = c.n + excluded.n,
          max_position = greatest(c.max_position, excluded.max_position),
          last_changed_at = greatest(c.last_changed_at, excluded.last_changed_at)
      )
      select coalesce(sum(deltas), 0) as n from summed`.execute(tx);
    return Number(folded[0]?.n ?? 0);
  });
}

/**
 * Housekeeping (docs/CONTRACT.md C7): deletes `done` rows whose outcome is older than the retention,
 * in bounded batches, and returns how many it deleted. Only `done` rows go: watermarks stay, so
 * a redelivered old event is still recognised as stale; dead-lettered, retrying and in-flight rows
 * stay for inspection and recovery.
 */
export async function pruneDone(db: Kysely<ConsumerDatabase>, options: PruneOptions = {}): Promise<number> {
  const retentionMs = options.retentionMs ?? DEFAULT_RETENTION_MS;
  const batchSize = options.batchSize ?? 1000;
  let total = 0;
  for (let batch = 0; batch < (options.maxBatches ?? Number.POSITIVE_INFINITY); batch++) {
    if (options.signal?.aborted) break;
    const result = await sql`
      delete from processed_events where ctid in (
        select ctid from processed_events
        -- The cutoff read once (a scalar subquery): compared with clock_timestamp() itself, a
        -- volatile function, it cannot bound the index scan, which then read every done row.
        where state = 'done' and finished_at < (select clock_timestamp() - ${retentionMs}::bigint * interval '1 millisecond')
        order by finished_at
        limit ${batchSize}::integer
        for update skip locked)`.execute(db);
    const deleted = Number(result.numAffectedRows ?? 0n);
    total += deleted;
    if (deleted < batchSize) break;
  }
  return total;
}

/** A claim {@link claimEvents} granted, by event id. */
export type GroupClaims = Map<string, Claim>;

/**
 * Claims several events of one handler in one statement: the same rules as {@link claimEvent} for
 * each (new, expired lease, due retry, own interrupted claim; refused behind an unfinished lower
 * seq of its aggregate), with one lease clock reading for all. Events of one aggregate may come
 * together: the ordering check does not see rows this statement inserts, so seq n and n+1 are
 * claimed together and the caller applies them in order. Returns the granted claims; an event
 * missing from the result was refused, and {@link claimEvent} tells why. `countResume`: resuming
 * this worker's own claim counts an attempt (see {@link ClaimRequest.countResume}).
 */
export async function claimEvents(
  db: RegistryDb,
  handler: string,
  owner: string,
  leaseMs: number,
  events: readonly RegistryEvent[],
  countResume = false,
  replay = false,
): Promise<GroupClaims> {
  const granted: GroupClaims = new Map();
  if (events.length === 0) return granted;
  // In event id order, so that two workers claiming overlapping groups lock rows in one order.
  const unique = [...new Map(events.map((e) => [e.eventId, e])).values()].sort((a, b) => (a.eventId < b.eventId ? -1 : a.eventId > b.eventId ? 1 : 0));
  const column = <T>(pick: (e: RegistryEvent) => T) => unique.map(pick);
  const { rows } = await sql<{ event_id: string; fence: number; attempts: number; claimed_from: string | null; last_error: string | null }>`
    insert into processed_events as pe (
      handler, event_id, aggregate_type, aggregate_id, seq, global_position, event_type, command_id,
      state, fence, owner, claimed_from, lease_expires_at, heartbeat_at, attempts, created_at, updated_at)
    select ${handler}::text, r.event_id, r.aggregate_type, r.aggregate_id, r.seq, r.global_position, r.event_type, r.command_id,
      'processing', nextval('processed_event_fence'), ${owner}::text, null,
      now.t + ${leaseMs}::bigint * interval '1 millisecond', now.t, 1, now.t, now.t
    from unnest(
        ${column((e) => e.eventId)}::text[], ${column((e) => e.aggregateType)}::text[], ${column((e) => e.aggregateId)}::text[],
        ${column((e) => e.seq)}::bigint[], ${column((e) => e.globalPosition)}::bigint[], ${column((e) => e.eventType)}::text[],
        ${column((e) => e.commandId)}::text[])
      as r(event_id, aggregate_type, aggregate_id, seq, global_position, event_type, command_id)
    cross join (select clock_timestamp() as t) as now
    -- The ordering guard, one probe per partial index (in flight; unresolved): a condition over
    -- states of both could use neither, and read every registry row of the handler per event.
    where not exists (
      select 1 from processed_events p
      where p.handler = ${handler} and p.aggregate_type = r.aggregate_type
        and p.aggregate_id = r.aggregate_id and p.seq < r.seq and p.event_id <> r.event_id and r.seq > 0
        and p.state in ('processing', 'retry_scheduled')
        and (p.state = 'retry_scheduled' or p.lease_expires_at > clock_timestamp()))
    and not exists (
      select 1 from processed_events p
      where p.handler = ${handler} and p.aggregate_type = r.aggregate_type
        and p.aggregate_id = r.aggregate_id and p.seq < r.seq and p.event_id <> r.event_id and r.seq > 0
        and p.state = 'replay_requested')
    on conflict (handler, event_id) do update set
      state = 'processing',
      fence = excluded.fence,
      owner = excluded.owner,
      claimed_from = case when pe.state = 'processing' and pe.owner = excluded.owner then 'self' else pe.state end,
      lease_expires_at = excluded.lease_expires_at,
      heartbeat_at = excluded.heartbeat_at,
      next_attempt_at = null,
      attempts = case when pe.state = 'replay_requested' then 1
        else pe.attempts + case when pe.state = 'processing' and pe.owner = excluded.owner and not ${countResume}::boolean then 0 else 1 end end,
      global_position = coalesce(pe.global_position, excluded.global_position),
      updated_at = excluded.updated_at
    where (pe.state = 'processing' and (pe.lease_expires_at <= clock_timestamp() or pe.owner = excluded.owner))
       or (pe.state = 'retry_scheduled' and pe.next_attempt_at <= clock_timestamp())
       or (pe.state = 'replay_requested' and ${replay}::boolean)
    returning event_id, fence, attempts, claimed_from, last_error`.execute(db);
  const byId = new Map(unique.map((e) => [e.eventId, e]));
  for (const row of rows) {
    const e = byId.get(row.event_id)!;
    granted.set(row.event_id, {
      handler,
      eventId: e.eventId,
      aggregateType: e.aggregateType,
      aggregateId: e.aggregateId,
      seq: e.seq,
      fence: Number(row.fence),
      attempts: row.attempts,
      claimedFrom: row.claimed_from,
      lastError: row.last_error,
    });
  }
  return granted;
}

/** Extends the leases of several held claims (DB clock); returns how many are still held. */
export async function renewLeases(db: RegistryDb, claims: readonly Claim[], leaseMs: number): Promise<number> {
  if (claims.length === 0) return 0;
  const result = await sql`
    update processed_events p set
      lease_expires_at = now.t + ${leaseMs}::bigint * interval '1 millisecond', heartbeat_at = now.t, updated_at = now.t
    from (select clock_timestamp() as t) as now,
      unnest(${claims.map((c) => c.eventId)}::text[], ${claims.map((c) => c.fence)}::bigint[]) as c(event_id, fence)
    where p.handler = ${claims[0]!.handler} and p.event_id = c.event_id and p.fence = c.fence
      and p.state = 'processing' and p.lease_expires_at > now.t`.execute(db);
  return Number(result.numAffectedRows ?? 0n);
}

/**
 * How an application ends for one held claim: applied (`done`), stale, parked behind an unresolved
 * earlier event of its aggregate, or queued behind a replay (`replay_requested`); a parked or
 * queued event keeps its message for the replay.
 */
export interface ClaimFinish {
  readonly claim: Claim;
  readonly state: "done" | "skipped_stale" | "parked" | "replay_requested";
  readonly message?: StoredMessage | undefined;
  readonly parkedBehind?: Unresolved | undefined;
}

/** An unresolved event of an aggregate: dead-lettered, parked or waiting for its replay. */
export interface Unresolved {
  readonly eventId: string;
  readonly seq: number;
  readonly state: "dead_lettered" | "parked" | "replay_requested";
}

/**
 * What stands before each of `events` in its aggregate for `handler` (the parking check of
 * docs/CONTRACT.md C8, inside the transaction that holds the aggregates' watermark locks): the
 * earliest dead-lettered or parked event with a lower seq (`blocker`), else whether a lower seq
 * waits for its replay (`replaying`). Events of seq 0 (undecodable) order nothing.
 */
export async function unresolvedBefore(
  tx: Transaction<ConsumerDatabase>,
  handler: string,
  events: ReadonlyArray<{ eventId: string; aggregateType: string; aggregateId: string; seq: number }>,
): Promise<Map<string, { blocker: Unresolved | undefined; replaying: Unresolved | undefined }>> {
  const out = new Map<string, { blocker: Unresolved | undefined; replaying: Unresolved | undefined }>();
  if (events.length === 0) return out;
  const { rows } = await sql<{ event_id: string; b_id: string | null; b_seq: number | null; b_state: Unresolved["state"] | null; r_id: string | null; r_seq: number | null }>`
    select e.event_id, b.event_id as b_id, b.seq as b_seq, b.state as b_state, r.event_id as r_id, r.seq as r_seq
    from unnest(${events.map((e) => e.eventId)}::text[], ${events.map((e) => e.aggregateType)}::text[], ${events.map((e) => e.aggregateId)}::text[], ${events.map((e) => e.seq)}::bigint[])
      as e(event_id, aggregate_type, aggregate_id, seq)
    left join lateral (
      select p.event_id, p.seq, p.state from processed_events p
      where p.handler = ${handler} and p.aggregate_type = e.aggregate_type and p.aggregate_id = e.aggregate_id
        and p.seq > 0 and p.seq < e.seq and p.event_id <> e.event_id and p.state in ('dead_lettered', 'parked')
      order by p.seq limit 1) b on true
    left join lateral (
      select p.event_id, p.seq from processed_events p
      where p.handler = ${handler} and p.aggregate_type = e.aggregate_type and p.aggregate_id = e.aggregate_id
        and p.seq > 0 and p.seq < e.seq and p.event_id <> e.event_id and p.state = 'replay_requested'
      order by p.seq limit 1) r on true`.execute(tx);
  for (const row of rows) {
    out.set(row.event_id, {
      blocker: row.b_id === null ? undefined : { eventId: row.b_id, seq: Number(row.b_seq), state: row.b_state! },
      replaying: row.r_id === null ? undefined : { eventId: row.r_id, seq: Number(row.r_seq), state: "replay_requested" },
    });
  }
  return out;
}

/**
 * {@link finishClaim} for several held claims in one statement: each becomes `done`,
 * `skipped_stale`, `parked` or `replay_requested`, and each aggregate's watermark rises to the highest seq done. Throws
 * LeaseLostError — the caller's transaction, side effects included, rolls back — unless every
 * claim's fence is current and its lease live at this moment.
 */
export async function finishClaims(tx: Transaction<ConsumerDatabase>, outcomes: readonly ClaimFinish[]): Promise<void> {
  if (outcomes.length === 0) return;
  const handler = outcomes[0]!.claim.handler;
  const marks = new Map<string, Claim>();
  for (const { claim, state } of outcomes) {
    if (state !== "done" || claim.seq <= 0) continue;
    const key = aggregateKey(claim.aggregateType, claim.aggregateId);
    const mark = marks.get(key);
    if (mark === undefined || mark.seq < claim.seq) marks.set(key, claim);
  }
  const top = [...marks.values()];
  const { rows } = await sql<{ finished: number }>`
    with fin as (
      update processed_events p set state = c.state, finished_at = clock_timestamp(), updated_at = clock_timestamp(),
        lease_expires_at = null,
        message = coalesce(c.message::jsonb, p.message),
        parked_behind = case when c.state = 'done' then p.parked_behind else c.parked_behind end,
        last_error = case when c.state = 'parked' then c.cause else p.last_error end
      from unnest(
          ${outcomes.map((o) => o.claim.eventId)}::text[], ${outcomes.map((o) => o.claim.fence)}::bigint[], ${outcomes.map((o) => o.state)}::text[],
          ${outcomes.map((o) => (o.message === undefined ? null : JSON.stringify(o.message)))}::text[],
          ${outcomes.map((o) => o.parkedBehind?.eventId ?? null)}::text[],
          ${outcomes.map((o) => (o.parkedBehind === undefined ? null : `parked behind ${o.parkedBehind.eventId} (seq ${o.parkedBehind.seq}, ${o.parkedBehind.state})`))}::text[])
        as c(event_id, fence, state, message, parked_behind, cause)
      where p.handler = ${handler} and p.event_id = c.event_id and p.fence = c.fence
        and p.state = 'processing' and p.lease_expires_at > clock_timestamp()
      returning p.event_id
    ), mark as (
      update consumer_watermarks w set applied_seq = m.seq, applied_event_id = m.event_id, updated_at = clock_timestamp()
      from unnest(${top.map((c) => c.aggregateType)}::text[], ${top.map((c) => c.aggregateId)}::text[], ${top.map((c) => c.seq)}::bigint[], ${top.map((c) => c.eventId)}::text[])
        as m(aggregate_type, aggregate_id, seq, event_id)
      where w.handler = ${handler} and w.aggregate_type = m.aggregate_type and w.aggregate_id = m.aggregate_id
        and w.applied_seq < m.seq
      returning 1
    )
    select (select count(*) from fin)::integer as finished`.execute(tx);
  if (rows[0]?.finished !== outcomes.length) {
    const { claim } = outcomes[0]!;
    throw new LeaseLostError(
      outcomes.length === 1
        ? `${handler}: the claim of ${claim.eventId} (fence ${claim.fence}) expired or was taken over`
        : `${handler}: ${outcomes.length - (rows[0]?.finished ?? 0)} of ${outcomes.length} claims expired or were taken over`,
    );
  }
}

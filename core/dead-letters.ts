/**
 * The operator's side of sequenced dead letters (docs/CONSUMERS.md "Dead letters, parking and
 * redrive", docs/CONTRACT.md C8–C10), for ProcessingService: list and show a handler's
 * dead-lettered and parked events, mark them for replay (the handler's consumer runs the replay),
 * or discard them with who and why. Beside the registry's tables; consumers/registry.ts claims and
 * finishes the rows. A replay request takes the aggregates' watermark locks, as every application
 * does, so it and a consumer's parking check cannot cross.
 */
import { sql, type Kysely, type RawBuilder, type Transaction } from "kysely";
import type { ConsumerDatabase, ProcessingState, StoredMessage } from "./db/schema.js";
import { NotFoundError, PreconditionError } from "./errors.js";
import { lockWatermarks } from "./lock-watermarks.js";
import type { RecordScope } from "./processing-status.js";

/** One dead-lettered, parked or redriven event of a handler, as listed. */
export interface DeadLetterRecord {
  readonly handler: string;
  readonly eventId: string;
  readonly eventType: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly seq: number;
  readonly globalPosition: number | null;
  readonly state: ProcessingState;
  readonly cause: string | null;
  readonly attempts: number;
  readonly firstFailedAt: Date | null;
  readonly lastFailedAt: Date | null;
  readonly parkedBehind: string | null;
  readonly replays: number;
  readonly replayRequestedBy: string | null;
  readonly replayRequestedAt: Date | null;
  readonly resolvedBy: string | null;
  readonly resolutionReason: string | null;
  readonly resolvedAt: Date | null;
  readonly updatedAt: Date;
}

/** Which events of one handler a replay or discard is about. */
export type DeadLetterTarget =
  | { readonly type: "event"; readonly eventId: string }
  | { readonly type: "aggregate"; readonly aggregateType: string; readonly aggregateId: string }
  | { readonly type: "all" };

/** How many events of a handler wait for an operator. */
export interface WaitingCounts {
  readonly handler: string;
  readonly deadLettered: number;
  readonly parked: number;
  readonly replayRequested: number;
}

/** Where a listing page starts: after this row. */
export interface DeadLetterCursor {
  readonly handler: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly seq: number;
  readonly eventId: string;
}

const COLUMNS = sql`handler, event_id, event_type, aggregate_type, aggregate_id, seq, global_position, state, last_error, attempts,
  first_failed_at, last_failed_at, parked_behind, replays, replay_requested_by, replay_requested_at, resolved_by, resolution_reason,
  resolved_at, updated_at`;

interface Row {
  handler: string;
  event_id: string;
  event_type: string;
  aggregate_type: string;
  aggregate_id: string;
  seq: number;
  global_position: number | null;
  state: ProcessingState;
  last_error: string | null;
  attempts: number;
  first_failed_at: Date | null;
  last_failed_at: Date | null;
  parked_behind: string | null;
  replays: number;
  replay_requested_by: string | null;
  replay_requested_at: Date | null;
  resolved_by: string | null;
  resolution_reason: string | null;
  resolved_at: Date | null;
  updated_at: Date;
}

/** The rows a caller may see (T3): a SQL condition over processed_events. */
function visible(scope: RecordScope | undefined): RawBuilder<boolean> {
  if (scope === undefined) return sql<boolean>`true`;
  const parts: Array<RawBuilder<boolean>> = [];
  if (scope.databases !== "all") {
    if (scope.databases.length === 0) return sql<boolean>`false`;
    // An id without "/" belongs to no database: split_part would return the whole id.
    parts.push(sql<boolean>`(strpos(aggregate_id, '/') > 1 and split_part(aggregate_id, '/', 1) = any(${[...scope.databases]}::text[]))`);
  }
  if (scope.aggregateTypePrefix !== "") parts.push(sql<boolean>`left(aggregate_type, ${scope.aggregateTypePrefix.length}) = ${scope.aggregateTypePrefix}`);
  return parts.length === 0 ? sql<boolean>`true` : sql<boolean>`(${sql.join(parts, sql` and `)})`;
}

function targetCondition(target: DeadLetterTarget): RawBuilder<boolean> {
  switch (target.type) {
    case "event":
      return sql<boolean>`event_id = ${target.eventId}`;
    case "aggregate":
      return sql<boolean>`(aggregate_type = ${target.aggregateType} and aggregate_id = ${target.aggregateId})`;
    case "all":
      return sql<boolean>`true`;
  }
}

function toRecord(r: Row): DeadLetterRecord {
  return {
    handler: r.handler,
    eventId: r.event_id,
    eventType: r.event_type,
    aggregateType: r.aggregate_type,
    aggregateId: r.aggregate_id,
    seq: Number(r.seq),
    globalPosition: r.global_position === null ? null : Number(r.global_position),
    state: r.state,
    cause: r.last_error,
    attempts: r.attempts,
    firstFailedAt: r.first_failed_at,
    lastFailedAt: r.last_failed_at,
    parkedBehind: r.parked_behind,
    replays: r.replays,
    replayRequestedBy: r.replay_requested_by,
    replayRequestedAt: r.replay_requested_at,
    resolvedBy: r.resolved_by,
    resolutionReason: r.resolution_reason,
    resolvedAt: r.resolved_at,
    updatedAt: r.updated_at,
  };
}

/** Throws NotFoundError unless some consumer recorded anything for `handler` (a registry row or a watermark). */
export async function requireKnownHandler(db: Kysely<ConsumerDatabase> | Transaction<ConsumerDatabase>, handler: string): Promise<void> {
  const { rows } = await sql<{ known: boolean }>`
    select exists (select 1 from processed_events where handler = ${handler})
        or exists (select 1 from consumer_watermarks where handler = ${handler}) as known`.execute(db);
  if (rows[0]?.known !== true) throw new NotFoundError(`handler ${JSON.stringify(handler)} is unknown: no consumer has recorded anything for it`);
}

/**
 * A page of dead-lettered and parked events (with `includeReplaying`, also those a replay is
 * under way for), in (handler, aggregate, seq) order after `after`, of one handler or all.
 */
export async function listDeadLetters(
  db: Kysely<ConsumerDatabase>,
  query: { handler?: string | undefined; aggregate?: { aggregateType: string; aggregateId: string } | undefined; limit: number; after?: DeadLetterCursor | undefined; includeReplaying: boolean },
  scope?: RecordScope,
): Promise<DeadLetterRecord[]> {
  const states = query.includeReplaying
    ? sql<boolean>`(state in ('dead_lettered', 'parked', 'replay_requested') or (replay_requested_at is not null and state in ('processing', 'retry_scheduled')))`
    : sql<boolean>`state in ('dead_lettered', 'parked')`;
  const after = query.after;
  const { rows } = await sql<Row>`
    select ${COLUMNS} from processed_events
    where ${states}
      and ${query.handler === undefined ? sql`true` : sql`handler = ${query.handler}`}
      and ${query.aggregate === undefined ? sql`true` : sql`aggregate_type = ${query.aggregate.aggregateType} and aggregate_id = ${query.aggregate.aggregateId}`}
      and ${after === undefined ? sql`true` : sql`(handler, aggregate_type, aggregate_id, seq, event_id) > (${after.handler}, ${after.aggregateType}, ${after.aggregateId}, ${after.seq}::bigint, ${after.eventId})`}
      and ${visible(scope)}
    order by handler, aggregate_type, aggregate_id, seq, event_id
    limit ${query.limit}::integer`.execute(db);
  return rows.map(toRecord);
}

/** Waiting counts of the given handlers (those with none are listed with zeros), or of every handler with any. */
export async function waitingCounts(db: Kysely<ConsumerDatabase>, handlers: readonly string[] | undefined, scope?: RecordScope): Promise<WaitingCounts[]> {
  if (handlers !== undefined && handlers.length === 0) return [];
  const { rows } = await sql<{ handler: string; state: string; n: number }>`
    select handler, state, count(*)::integer as n from processed_events
    where state in ('dead_lettered', 'parked', 'replay_requested')
      and ${handlers === undefined ? sql`true` : sql`handler = any(${[...handlers]}::text[])`}
      and ${visible(scope)}
    group by handler, state`.execute(db);
  const names = handlers ?? [...new Set(rows.map((r) => r.handler))].sort();
  return names.map((handler) => {
    const n = (state: string) => rows.find((r) => r.handler === handler && r.state === state)?.n ?? 0;
    return { handler, deadLettered: n("dead_lettered"), parked: n("parked"), replayRequested: n("replay_requested") };
  });
}

/** One event of a handler's registry and the message kept for it; NotFoundError when there is no row (or the caller may not see it). */
export async function getDeadLetter(db: Kysely<ConsumerDatabase>, handler: string, eventId: string, scope?: RecordScope): Promise<{ record: DeadLetterRecord; message: StoredMessage | null }> {
  const { rows } = await sql<Row & { message: StoredMessage | null }>`
    select ${COLUMNS}, message from processed_events where handler = ${handler} and event_id = ${eventId} and ${visible(scope)}`.execute(db);
  const row = rows[0];
  if (row === undefined) throw new NotFoundError(`handler ${handler} has no record of event ${eventId}`);
  return { record: toRecord(row), message: row.message };
}

/** Why one selected event cannot be redriven, when it exists but is not in a redrivable state. */
async function explainEvent(tx: Transaction<ConsumerDatabase>, handler: string, eventId: string, scope: RecordScope | undefined, action: string): Promise<never> {
  const { rows } = await sql<{ state: string }>`select state from processed_events where handler = ${handler} and event_id = ${eventId} and ${visible(scope)}`.execute(tx);
  const state = rows[0]?.state;
  if (state === undefined) throw new NotFoundError(`handler ${handler} has no record of event ${eventId}`);
  throw new PreconditionError(`event ${eventId} is ${state} for handler ${handler}: only dead-lettered or parked events can be ${action}`);
}

/**
 * Marks the selected dead-lettered and parked events `replay_requested` (by `who`), for the
 * handler's consumer to claim, and returns their ids in the order the consumer applies them.
 * Takes the watermark locks of their aggregates first (C9). Throws NotFoundError for an event the
 * handler has no row of, PreconditionError when nothing selected is dead-lettered or parked, when
 * one event is asked while an earlier one of its aggregate is still dead-lettered or parked, or
 * when the registry kept no message to replay.
 */
export async function requestReplay(db: Kysely<ConsumerDatabase>, handler: string, target: DeadLetterTarget, who: string, scope?: RecordScope): Promise<string[]> {
  return db.transaction().execute(async (tx) => {
    const selected = sql<boolean>`handler = ${handler} and state in ('dead_lettered', 'parked') and ${targetCondition(target)} and ${visible(scope)}`;
    const { rows: aggregates } = await sql<{ aggregate_type: string; aggregate_id: string }>`
      select distinct aggregate_type, aggregate_id from processed_events where ${selected} order by aggregate_type, aggregate_id`.execute(tx);
    if (aggregates.length === 0) {
      if (target.type === "event") return explainEvent(tx, handler, target.eventId, scope, "replayed");
      throw new PreconditionError(`handler ${handler} has no dead-lettered or parked event ${target.type === "aggregate" ? `in ${target.aggregateType} ${target.aggregateId}` : "to replay"}`);
    }
    await lockWatermarks(tx, handler, aggregates.map((a) => ({ aggregateType: a.aggregate_type, aggregateId: a.aggregate_id })));
    if (target.type === "event") {
      const { rows: earlier } = await sql<{ event_id: string }>`
        select e.event_id from processed_events t join processed_events e
          on e.handler = t.handler and e.aggregate_type = t.aggregate_type and e.aggregate_id = t.aggregate_id and e.seq < t.seq and e.seq > 0
        where t.handler = ${handler} and t.event_id = ${target.eventId} and e.state in ('dead_lettered', 'parked')
        order by e.seq limit 1`.execute(tx);
      if (earlier[0] !== undefined) {
        throw new PreconditionError(`event ${earlier[0].event_id}, earlier in the same aggregate, is still unresolved for handler ${handler}: replay the aggregate, or that event first`);
      }
    }
    const { rows: missing } = await sql<{ event_id: string }>`select event_id from processed_events where ${selected} and message is null limit 1`.execute(tx);
    if (missing[0] !== undefined) throw new PreconditionError(`the registry kept no message of event ${missing[0].event_id} for handler ${handler} (dead-lettered before redrive existed): it cannot be replayed, only discarded`);
    // Re-read under the locks: an event parked meanwhile is included, one already replayed is not.
    const { rows } = await sql<{ event_id: string; aggregate_type: string; aggregate_id: string; seq: number }>`
      update processed_events set state = 'replay_requested', replays = replays + 1, replay_requested_by = ${who === "" ? null : who},
        replay_requested_at = clock_timestamp(), next_attempt_at = null, updated_at = clock_timestamp()
      where ${selected}
      returning event_id, aggregate_type, aggregate_id, seq`.execute(tx);
    if (rows.length === 0) throw new PreconditionError(`handler ${handler}: nothing selected is dead-lettered or parked any more (another replay took it)`);
    return rows
      .sort((a, b) => (a.aggregate_type !== b.aggregate_type ? (a.aggregate_type < b.aggregate_type ? -1 : 1) : a.aggregate_id !== b.aggregate_id ? (a.aggregate_id < b.aggregate_id ? -1 : 1) : Number(a.seq) - Number(b.seq)))
      .map((r) => r.event_id);
  });
}

/**
 * Marks the selected dead-lettered, parked or replay-requested events `discarded` — resolved, never
 * applied — with who and why, and returns their ids. Errors as {@link requestReplay}.
 */
export async function discardDeadLetters(db: Kysely<ConsumerDatabase>, handler: string, target: DeadLetterTarget, who: string, reason: string, scope?: RecordScope): Promise<string[]> {
  return db.transaction().execute(async (tx) => {
    const { rows } = await sql<{ event_id: string }>`
      update processed_events set state = 'discarded', resolved_by = ${who === "" ? null : who}, resolution_reason = ${reason},
        resolved_at = clock_timestamp(), finished_at = clock_timestamp(), updated_at = clock_timestamp(), next_attempt_at = null, lease_expires_at = null
      where handler = ${handler} and state in ('dead_lettered', 'parked', 'replay_requested') and ${targetCondition(target)} and ${visible(scope)}
      returning event_id`.execute(tx);
    if (rows.length > 0) return rows.map((r) => r.event_id).sort();
    if (target.type === "event") return explainEvent(tx, handler, target.eventId, scope, "discarded");
    throw new PreconditionError(`handler ${handler} has no dead-lettered or parked event ${target.type === "aggregate" ? `in ${target.aggregateType} ${target.aggregateId}` : "to discard"}`);
  });
}

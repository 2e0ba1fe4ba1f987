/**
 * What InspectionService and the web console show about the store (docs/CONSOLE.md): the databases,
 * aggregate types and streams of `stream_heads`, the relay's checkpoints and leases, and each
 * handler's registry rows by state. Read-only queries beside those tables; a {@link RecordScope}
 * (a token's databases and aggregate-type prefix) filters in the query, so rows a caller may not see
 * are never read into the answer (docs/CONTRACT.md T3).
 */
import { sql, type Expression, type Kysely, type SqlBool } from "kysely";
import type { ConsumerDatabase, RelayTables, WriteSideTables } from "./db/schema.js";
import { CODE_POINT_ORDER, idsAfter } from "./event-log.js";
import type { RecordScope } from "./processing-status.js";

/** The database (tenant) of an aggregate id in SQL, as core/tokens.ts `databaseOf` computes it. */
const DATABASE_OF = sql<string>`case when strpos(aggregate_id, '/') > 1 then split_part(aggregate_id, '/', 1) else '' end`;

/** At most this many rows in a listing that is not paged. */
export const INSPECTION_LIST_LIMIT = 1000;

/** The SQL condition of `scope` over a table with aggregate_type and aggregate_id; true without a scope. */
export function scopeCondition(scope: RecordScope | undefined): Expression<SqlBool> {
  if (scope === undefined) return sql<SqlBool>`true`;
  const databases = scope.databases === "all" ? sql<SqlBool>`true` : scope.databases.length === 0 ? sql<SqlBool>`false` : sql<SqlBool>`${DATABASE_OF} in (${sql.join(scope.databases.filter((d) => d !== ""))})`;
  const prefix = scope.aggregateTypePrefix === "" ? sql<SqlBool>`true` : sql<SqlBool>`left(aggregate_type, ${scope.aggregateTypePrefix.length}) = ${scope.aggregateTypePrefix}`;
  return sql<SqlBool>`(${databases} and ${prefix})`;
}

/** A database and its number of streams ("" = aggregates of no database). */
export interface DatabaseCount {
  readonly database: string;
  readonly streams: number;
}

/** The databases that hold streams, in name order (a scan of stream_heads: an operator's view, not a hot path). */
export async function listDatabases(db: Kysely<WriteSideTables>, scope?: RecordScope): Promise<DatabaseCount[]> {
  const rows = await db
    .selectFrom("stream_heads")
    .select([DATABASE_OF.as("database"), sql<number>`count(*)::int8`.as("streams")])
    .where("head", ">", 0)
    .where(scopeCondition(scope))
    .groupBy(sql`1`)
    .orderBy(sql`1`)
    .limit(INSPECTION_LIST_LIMIT)
    .execute();
  return rows.map((r) => ({ database: r.database, streams: Number(r.streams) }));
}

/** The condition "the aggregate belongs to `database`" ("" = to none). */
function inDatabase(database: string): Expression<SqlBool> {
  return database === "" ? sql<SqlBool>`strpos(aggregate_id, '/') <= 1` : sql<SqlBool>`starts_with(aggregate_id, ${`${database}/`})`;
}

/** An aggregate type and its number of streams in one database. */
export interface AggregateTypeCount {
  readonly aggregateType: string;
  readonly streams: number;
}

/** The aggregate types of `database`'s streams, in name order. */
export async function listAggregateTypes(db: Kysely<WriteSideTables>, database: string, scope?: RecordScope): Promise<AggregateTypeCount[]> {
  const rows = await db
    .selectFrom("stream_heads")
    .select(["aggregate_type", sql<number>`count(*)::int8`.as("streams")])
    .where("head", ">", 0)
    .where(inDatabase(database))
    .where(scopeCondition(scope))
    .groupBy("aggregate_type")
    .orderBy("aggregate_type")
    .limit(INSPECTION_LIST_LIMIT)
    .execute();
  return rows.map((r) => ({ aggregateType: r.aggregate_type, streams: Number(r.streams) }));
}

/** One stream as a listing shows it. */
export interface StreamHeadRow {
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly head: number;
  readonly updatedAt: Date;
}

/** Streams of one type in `database` whose id starts with `prefix`, after `after`, in code-point order of ids (at most `limit`). */
export async function listDatabaseStreams(
  db: Kysely<WriteSideTables>,
  query: { readonly database: string; readonly aggregateType: string; readonly prefix: string; readonly after: string; readonly limit: number },
): Promise<StreamHeadRow[]> {
  const rows = await db
    .selectFrom("stream_heads")
    .select(["aggregate_type", "aggregate_id", "head", "updated_at"])
    .where("aggregate_type", "=", query.aggregateType)
    .where(inDatabase(query.database))
    .where(idsAfter("aggregate_id", query.prefix, query.after))
    .where("head", ">", 0)
    .orderBy(sql`aggregate_id ${CODE_POINT_ORDER}`)
    .limit(query.limit)
    .execute();
  return rows.map((r) => ({ aggregateType: r.aggregate_type, aggregateId: r.aggregate_id, head: r.head, updatedAt: r.updated_at }));
}

/** A relay checkpoint with its lag and lease. */
export interface RelayCheckpointStatus {
  readonly name: string;
  readonly position: number;
  readonly lagPositions: number;
  /** When the first event past the checkpoint committed; null when caught up. */
  readonly oldestPendingAt: Date | null;
  readonly updatedAt: Date;
  readonly leaseHolder: string | null;
  readonly leaseExpiresAt: Date | null;
}

/** The committed head and every relay checkpoint (Kafka relays and embedded consumer groups), in name order. */
export async function relayStatus(db: Kysely<RelayTables>): Promise<{ readonly head: number; readonly checkpoints: RelayCheckpointStatus[] }> {
  const counter = await db.selectFrom("global_counter").select("position").where("id", "=", 1).executeTakeFirst();
  const head = counter?.position ?? 0;
  const rows = await db
    .selectFrom("relay_checkpoints as c")
    .leftJoin("relay_leases as l", "l.name", "c.name")
    .select(["c.name", "c.position", "c.updated_at", "l.holder", "l.expires_at"])
    .orderBy("c.name")
    .limit(INSPECTION_LIST_LIMIT)
    .execute();
  const out: RelayCheckpointStatus[] = [];
  for (const r of rows) {
    // Positions are dense in commit order, so the first unpublished event is at position + 1.
    const next = r.position < head ? await db.selectFrom("event_log").select("committed_at").where("global_position", "=", r.position + 1).executeTakeFirst() : undefined;
    out.push({
      name: r.name,
      position: r.position,
      lagPositions: Math.max(0, head - r.position),
      oldestPendingAt: next?.committed_at ?? null,
      updatedAt: r.updated_at,
      leaseHolder: r.holder ?? null,
      leaseExpiresAt: r.expires_at ?? null,
    });
  }
  return { head, checkpoints: out };
}

/** One handler's registry rows by state. */
export interface HandlerCounts {
  readonly handler: string;
  readonly processing: number;
  readonly retryScheduled: number;
  readonly deadLettered: number;
  readonly done: number;
  readonly skippedStale: number;
  readonly parked: number;
  readonly replayRequested: number;
  readonly discarded: number;
  /** Highest global position of a done or skipped row (from the kept counts: pruned rows too); 0 when none. */
  readonly appliedPosition: number;
  /** The latest change of a row (from the kept counts: of a row's state). */
  readonly lastUpdatedAt: Date | null;
}

/**
 * Every handler of the registry with its rows by state, in name order. A caller that sees every
 * row (no scope, or every database and aggregate type) reads the counts the registry keeps
 * (registry_counts and the deltas not folded yet: a few rows per handler, whatever the registry
 * holds), where a handler stays listed once its rows are pruned, with its applied position. A
 * narrower scope counts the rows it may see ({@link handlerCountsByScan}).
 */
export async function handlerCounts(db: Kysely<ConsumerDatabase>, scope?: RecordScope): Promise<HandlerCounts[]> {
  if (scope !== undefined && (scope.databases !== "all" || scope.aggregateTypePrefix !== "")) return handlerCountsByScan(db, scope);
  const rows = await db
    .selectFrom((eb) =>
      eb
        .selectFrom("registry_counts")
        .select(["handler", "state", "n", "max_position", "last_changed_at"])
        .unionAll(eb.selectFrom("registry_count_deltas").select(["handler", "state", "n", "max_position", "last_changed_at"]))
        .as("c"),
    )
    .select(["handler", "state", sql<string>`sum(n)`.as("n"), sql<string | null>`max(max_position)`.as("max_position"), sql<Date | null>`max(last_changed_at)`.as("last_changed_at")])
    .groupBy(["handler", "state"])
    .orderBy("handler")
    .execute();
  const byHandler = new Map<string, { counts: Map<string, number>; applied: number; last: Date | null }>();
  for (const r of rows) {
    let entry = byHandler.get(r.handler);
    if (entry === undefined) byHandler.set(r.handler, (entry = { counts: new Map(), applied: 0, last: null }));
    entry.counts.set(r.state, Number(r.n));
    if ((r.state === "done" || r.state === "skipped_stale") && r.max_position !== null) entry.applied = Math.max(entry.applied, Number(r.max_position));
    if (r.last_changed_at !== null && (entry.last === null || r.last_changed_at > entry.last)) entry.last = r.last_changed_at;
  }
  return [...byHandler].slice(0, INSPECTION_LIST_LIMIT).map(([handler, { counts, applied, last }]) => ({
    handler,
    processing: counts.get("processing") ?? 0,
    retryScheduled: counts.get("retry_scheduled") ?? 0,
    deadLettered: counts.get("dead_lettered") ?? 0,
    done: counts.get("done") ?? 0,
    skippedStale: counts.get("skipped_stale") ?? 0,
    parked: counts.get("parked") ?? 0,
    replayRequested: counts.get("replay_requested") ?? 0,
    discarded: counts.get("discarded") ?? 0,
    appliedPosition: applied,
    lastUpdatedAt: last,
  }));
}

/**
 * Every handler with the registry rows `scope` may see by state, in name order: counted row by
 * row (a scan of the registry's visible rows; the kept counts are per handler, not per database).
 * Only handlers with a visible row are listed.
 */
export async function handlerCountsByScan(db: Kysely<ConsumerDatabase>, scope?: RecordScope): Promise<HandlerCounts[]> {
  const count = (state: string) => sql<number>`count(*) filter (where state = ${state})`;
  const rows = await db
    .selectFrom("processed_events")
    .select([
      "handler",
      count("processing").as("processing"),
      count("retry_scheduled").as("retry_scheduled"),
      count("dead_lettered").as("dead_lettered"),
      count("done").as("done"),
      count("skipped_stale").as("skipped_stale"),
      count("parked").as("parked"),
      count("replay_requested").as("replay_requested"),
      count("discarded").as("discarded"),
      sql<number | null>`max(global_position) filter (where state in ('done', 'skipped_stale'))`.as("applied"),
      sql<Date | null>`max(updated_at)`.as("last_updated_at"),
    ])
    .where(scopeCondition(scope))
    .groupBy("handler")
    .orderBy("handler")
    .limit(INSPECTION_LIST_LIMIT)
    .execute();
  return rows.map((r) => ({
    handler: r.handler,
    processing: Number(r.processing),
    retryScheduled: Number(r.retry_scheduled),
    deadLettered: Number(r.dead_lettered),
    done: Number(r.done),
    skippedStale: Number(r.skipped_stale),
    parked: Number(r.parked),
    replayRequested: Number(r.replay_requested),
    discarded: Number(r.discarded),
    appliedPosition: Number(r.applied ?? 0),
    lastUpdatedAt: r.last_updated_at,
  }));
}

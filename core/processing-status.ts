/**
 * What the processed-event registry says about events, for ProcessingService: the rows of one event
 * or one command, and the ordering watermarks that answer for rows housekeeping pruned. Read-only,
 * beside the registry's tables (core/db/schema.ts); consumers/registry.ts writes them.
 */
import { sql, type Kysely, type Transaction } from "kysely";
import type { ConsumerDatabase, ProcessingState } from "./db/schema.js";

/** The database or a transaction over the consumers' tables. */
export type RegistryDb = Kysely<ConsumerDatabase> | Transaction<ConsumerDatabase>;

/** Which handler and which event a registry row is about. */
export interface RegistryEvent {
  readonly handler: string;
  readonly eventId: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  /** 0 when unknown (an undecodable message): no ordering guard applies. */
  readonly seq: number;
  readonly globalPosition: number | null;
  readonly eventType: string;
  readonly commandId: string | null;
}

/** One registry row as the status call reports it. */
export interface ProcessingRecord extends RegistryEvent {
  readonly state: ProcessingState;
  readonly attempts: number;
  readonly lastError: string | null;
  readonly updatedAt: Date;
  readonly leaseExpiresAt: Date | null;
  readonly nextAttemptAt: Date | null;
}

/**
 * Which rows a caller may see (docs/CONTRACT.md T3): aggregates of these databases (the part of
 * aggregate_id before its first `/`; `all` = every aggregate) whose type starts with the prefix.
 */
export interface RecordScope {
  readonly databases: readonly string[] | "all";
  readonly aggregateTypePrefix: string;
}

/**
 * Registry rows of one event (all handlers), or of every event a command produced; with `scope`,
 * only rows the caller may see, filtered in the query.
 */
export async function findRecords(db: RegistryDb, key: { eventId: string } | { commandId: string }, scope?: RecordScope): Promise<ProcessingRecord[]> {
  let query = db
    .selectFrom("processed_events")
    .select([
      "handler",
      "event_id",
      "aggregate_type",
      "aggregate_id",
      "seq",
      "global_position",
      "event_type",
      "command_id",
      "state",
      "attempts",
      "last_error",
      "updated_at",
      "lease_expires_at",
      "next_attempt_at",
    ]);
  query = "eventId" in key ? query.where("event_id", "=", key.eventId) : query.where("command_id", "=", key.commandId);
  if (scope !== undefined && scope.databases !== "all") {
    const databases = scope.databases;
    if (databases.length === 0) return [];
    // An id without "/" belongs to no database: split_part would return the whole id.
    query = query.where(sql<boolean>`strpos(aggregate_id, '/') > 1`).where(sql<string>`split_part(aggregate_id, '/', 1)`, "in", databases);
  }
  if (scope !== undefined && scope.aggregateTypePrefix !== "") {
    query = query.where(sql<string>`left(aggregate_type, ${scope.aggregateTypePrefix.length})`, "=", scope.aggregateTypePrefix);
  }
  const rows = await query.orderBy("event_id").orderBy("handler").limit(1000).execute();
  return rows.map((r) => ({
    handler: r.handler,
    eventId: r.event_id,
    aggregateType: r.aggregate_type,
    aggregateId: r.aggregate_id,
    seq: r.seq,
    globalPosition: r.global_position,
    eventType: r.event_type,
    commandId: r.command_id,
    state: r.state,
    attempts: r.attempts,
    lastError: r.last_error,
    updatedAt: r.updated_at,
    leaseExpiresAt: r.lease_expires_at,
    nextAttemptAt: r.next_attempt_at,
  }));
}

/** Watermarks of one aggregate, per handler: how far each handler applied it. */
export async function watermarksOf(db: RegistryDb, aggregateType: string, aggregateId: string): Promise<Map<string, number>> {
  const rows = await db
    .selectFrom("consumer_watermarks")
    .select(["handler", "applied_seq"])
    .where("aggregate_type", "=", aggregateType)
    .where("aggregate_id", "=", aggregateId)
    .execute();
  return new Map(rows.map((r) => [r.handler, r.applied_seq]));
}


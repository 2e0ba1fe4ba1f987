/**
 * Kysely table interfaces of the consumers: the processed-event registry, the ordering watermarks,
 * the instances read model and the projection's bookkeeping. Sequence numbers, positions and fencing
 * tokens are JS numbers, as on the write side (core/db/schema.ts).
 */
import type { ColumnType, Generated, JSONColumnType, Kysely, Selectable, Transaction } from "kysely";
import type { JsonObject } from "@bufbuild/protobuf";
import type { Int8, WriteSideTables } from "../core/db/schema.js";

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;

/** States of a registry row; see docs/CONSUMERS.md for the transitions. */
export type ProcessingState = "processing" | "done" | "retry_scheduled" | "dead_lettered" | "skipped_stale";

/** One row per (handler, event_id): claim, lease, outcome (docs/CONTRACT.md C1, C3, C4). */
export interface ProcessedEventsTable {
  handler: string;
  event_id: string;
  aggregate_type: string;
  aggregate_id: string;
  seq: Int8;
  global_position: Int8 | null;
  event_type: string;
  command_id: string | null;
  state: ProcessingState;
  fence: Int8;
  owner: string;
  claimed_from: string | null;
  lease_expires_at: Date | null;
  heartbeat_at: Date | null;
  next_attempt_at: Date | null;
  attempts: Generated<number>;
  last_error: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
  finished_at: Date | null;
}

/** The ordering guard (docs/CONTRACT.md C2): the highest seq a handler applied per aggregate. */
export interface ConsumerWatermarksTable {
  handler: string;
  aggregate_type: string;
  aggregate_id: string;
  applied_seq: Int8;
  applied_event_id: string | null;
  updated_at: Timestamp;
}

/** The instances read model (docs/CONTRACT.md C6). */
export interface InstancesTable {
  database: string;
  class_name: string;
  instance_id: string;
  properties: JSONColumnType<JsonObject, string, string>;
  version: Int8;
  deleted: boolean;
  created_at: Date;
  updated_at: Date;
  global_position: Int8;
}

/** One row of the instances read model as read (the projection's table and its rebuild twin). */
export type InstanceRow = Selectable<InstancesTable>;

/** How far a projection has applied the store, for read-your-writes. */
export interface ProjectionPositionsTable {
  projection: string;
  applied_position: Int8;
  updated_at: Timestamp;
}

/** A resumable rebuild of a projection. */
export interface ProjectionRebuildsTable {
  projection: string;
  table_name: string;
  state: "running" | "swapped";
  position: Int8;
  events: Int8;
  started_at: Timestamp;
  updated_at: Timestamp;
  finished_at: Date | null;
}

/** The consumers' tables (a type alias, so `Kysely#withTables<ConsumerTables>()` accepts it). */
export type ConsumerTables = {
  processed_events: ProcessedEventsTable;
  consumer_watermarks: ConsumerWatermarksTable;
  instances: InstancesTable;
  projection_positions: ProjectionPositionsTable;
  projection_rebuilds: ProjectionRebuildsTable;
};

/** Everything the consumers read: their own tables and the write side's commit log. */
export type ConsumerDatabase = ConsumerTables & WriteSideTables;

/**
 * The same connection typed for core's commit-log functions, which take the write side's tables
 * only (Kysely's database type is invariant, though ConsumerDatabase includes those tables).
 */
export function asWriteSide(db: Kysely<ConsumerDatabase> | Transaction<ConsumerDatabase>): Kysely<WriteSideTables> {
  return db as unknown as Kysely<WriteSideTables>;
}

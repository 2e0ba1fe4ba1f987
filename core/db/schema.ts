/**
 * Kysely table interfaces of the write side. Sequence numbers and positions are JS numbers: the
 * pools built by {@link createDatabase} parse int8 into numbers and refuse values beyond 2^53.
 */
import type { ColumnType } from "kysely";

/** An int8 column read as a number. */
export type Int8 = ColumnType<number, number | bigint, number | bigint>;
type CreatedAt = ColumnType<Date, Date | string | undefined, Date | string>;

/** State of a commit-log row. */
export type SlotState = "pending" | "committed" | "void";

/** Allocation of per-aggregate sequence numbers (a cache of S3, docs/CONTRACT.md W6). */
export interface StreamHeadsTable {
  aggregate_type: string;
  aggregate_id: string;
  head: Int8;
  updated_at: CreatedAt;
}

/** The commit log: one row per reserved slot; global_position set when committed. */
export interface EventLogTable {
  log_id: ColumnType<number, never, never>;
  event_id: string;
  aggregate_type: string;
  aggregate_id: string;
  seq: Int8;
  event_type: string;
  content_hash: string;
  ordering_key: string | null;
  batch_first_seq: Int8;
  batch_last_seq: Int8;
  state: SlotState;
  global_position: Int8 | null;
  reserved_at: CreatedAt;
  committed_at: Date | null;
}

/** The serialised commit counter: commit order equals global position order (docs/CONTRACT.md R1). */
export interface GlobalCounterTable {
  id: number;
  position: Int8;
}

/** The database as Kysely sees it; later migrations extend it in their own modules. */
export interface WriteSideTables {
  stream_heads: StreamHeadsTable;
  event_log: EventLogTable;
  global_counter: GlobalCounterTable;
}

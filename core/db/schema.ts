/**
 * Kysely table interfaces of every Tidemark table, beside the migrations that create them: the
 * write side (commit log), the relay's lease and checkpoints, the consumers' registry and
 * watermarks, and the instances read model. Sequence numbers, positions and fencing tokens are JS
 * numbers: the pools built by {@link createDatabase} parse int8 into numbers and refuse values
 * beyond 2^53.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import type { ColumnType, Generated, JSONColumnType, Kysely, Selectable, Transaction } from "kysely";

/** An int8 column read as a number. */
export type Int8 = ColumnType<number, number | bigint, number | bigint>;
type CreatedAt = ColumnType<Date, Date | string | undefined, Date | string>;
type Timestamp = CreatedAt;

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
  /** The segment the event is written in (set when a flush takes it), and its bytes there. */
  segment: Int8 | null;
  segment_offset: Int8 | null;
  segment_length: number | null;
  /** The slot's hash-chain link (docs/STORAGE.md "Hash chain"), set at reservation. */
  chain_hash: string | null;
  /** Shared by the slots of one AppendToStreams call (committed whole, contiguously); null otherwise. */
  call_id: Int8 | null;
}

/** State of a segment number: allocated and being written, written, or closed by a void marker. */
export type SegmentState = "pending" | "written" | "void";

/** Segment numbers, from a counter; one row per allocated number (docs/STORAGE.md). */
export interface SegmentsTable {
  segment: ColumnType<number, number | undefined, never>;
  state: SegmentState;
  allocated_at: CreatedAt;
  resolved_at: Date | null;
}

/** The serialised commit counter: commit order equals global position order (docs/CONTRACT.md R1). */
export interface GlobalCounterTable {
  id: number;
  position: Int8;
}

/**
 * The latest snapshot of a folded stream (docs/STORAGE.md "Snapshots"): derived data, never the
 * source of truth; `state` is JSON text checked against `checksum`, and only a row of the reader's
 * `fold_version` is used.
 */
export interface SnapshotsTable {
  aggregate_type: string;
  aggregate_id: string;
  fold_version: number;
  seq: Int8;
  state: string;
  checksum: string;
  taken_at: CreatedAt;
}

/** The database as Kysely sees it; later migrations extend it in their own modules. */
export interface WriteSideTables {
  stream_heads: StreamHeadsTable;
  event_log: EventLogTable;
  global_counter: GlobalCounterTable;
  segments: SegmentsTable;
  snapshots: SnapshotsTable;
}

// ---------------------------------------------------------------------------------------- relay

/** The active-relay lease with its fencing token (docs/CONTRACT.md R5); times on the database clock. */
export interface RelayLeasesTable {
  name: string;
  holder: string;
  token: Int8;
  expires_at: Timestamp;
  acquired_at: Timestamp;
  renewed_at: Timestamp;
}

/** The durable checkpoint (docs/CONTRACT.md R4): every position up to `position` is acknowledged by Kafka. */
export interface RelayCheckpointsTable {
  name: string;
  position: Int8;
  fencing_token: Int8;
  updated_at: Timestamp;
}

/** What the relay reads and writes: the commit log plus its own tables. */
export interface RelayTables extends WriteSideTables {
  relay_leases: RelayLeasesTable;
  relay_checkpoints: RelayCheckpointsTable;
}

/**
 * The same database typed for core/'s commit-log functions. Kysely's types are invariant in the
 * table map, but every query core/ builds touches only write-side tables, which RelayTables has.
 */
export function writeSideView(db: Kysely<RelayTables>): Kysely<WriteSideTables> {
  return db as unknown as Kysely<WriteSideTables>;
}

/** The progress of `tidemark recover` (docs/OPERATIONS.md): segments settled in number order. */
export interface StoreRecoveriesTable {
  name: string;
  state: "running" | "done";
  last_segment: Int8;
  segments: Int8;
  events: Int8;
  started_at: Timestamp;
  updated_at: Timestamp;
  finished_at: Date | null;
}

/** What a recovery writes: the write side, the relay's checkpoints and its own progress. */
export interface RecoveryTables extends RelayTables {
  store_recoveries: StoreRecoveriesTable;
}

// ------------------------------------------------------------------------------------ consumers

/** States of a registry row; see docs/CONSUMERS.md for the transitions. */
export type ProcessingState = "processing" | "done" | "retry_scheduled" | "dead_lettered" | "skipped_stale" | "parked" | "replay_requested" | "discarded";

/** A message as a consumer received it, kept in the registry for a replay (value and headers in base64). */
export interface StoredMessage {
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
  readonly value: string | null;
  readonly headers: Readonly<Record<string, string>>;
}

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
  /** Kept for a dead-lettered or parked event, so a replay needs neither Kafka nor the store. */
  message: JSONColumnType<StoredMessage | null, string | null, string | null>;
  first_failed_at: Date | null;
  last_failed_at: Date | null;
  /** For a parked event: the earliest unresolved event of its aggregate when it was parked. */
  parked_behind: string | null;
  replays: Generated<number>;
  replay_requested_by: string | null;
  replay_requested_at: Date | null;
  resolved_by: string | null;
  resolution_reason: string | null;
  resolved_at: Date | null;
}

/**
 * The registry's rows counted by handler and state, folded from {@link RegistryCountDeltasTable}
 * (migration 2026-12-04-01-registry-counts: a read sums both).
 */
export interface RegistryCountsTable {
  handler: string;
  state: ProcessingState;
  n: Int8;
  /** Highest global position of a row that reached this state (done, skipped_stale); kept when pruned. */
  max_position: Int8 | null;
  last_changed_at: Date | null;
}

/** What each statement on processed_events changed, per handler and state (written by its triggers only). */
export interface RegistryCountDeltasTable {
  handler: string;
  state: ProcessingState;
  n: Int8;
  max_position: Int8 | null;
  last_changed_at: Date;
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
  registry_counts: RegistryCountsTable;
  registry_count_deltas: RegistryCountDeltasTable;
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

// ------------------------------------------------------------------------------------------ auth

/** A bearer token (core/tokens.ts): the secret is kept only as its SHA-256; revoked rows stay listed. */
export interface ApiTokensTable {
  id: string;
  secret_hash: string;
  principal: string;
  databases: JSONColumnType<string[]>;
  scopes: JSONColumnType<string[]>;
  aggregate_type_prefix: Generated<string>;
  expires_at: Date | null;
  revoked_at: Date | null;
  bootstrap: Generated<boolean>;
  created_at: CreatedAt;
}

/** The tables authentication reads and the token commands write. */
export type AuthTables = {
  api_tokens: ApiTokensTable;
};

/** A data subject's key (docs/SECURITY.md "Erasure"): wrapped by a master key, null once forgotten. */
export interface SubjectKeysTable {
  database: string;
  subject: string;
  master_key_id: string | null;
  wrapped_key: Uint8Array | null;
  created_at: CreatedAt;
  forgotten_at: Date | null;
}

/** The privacy tables (a type alias, so `Kysely#withTables<PrivacyTables>()` accepts it). */
export type PrivacyTables = {
  subject_keys: SubjectKeysTable;
};

/**
 * Kysely table interfaces of the relay's own tables (migration 2026-11-27-02-relay). Positions and
 * tokens are JS numbers: the pools built by createDatabase parse int8 and refuse values beyond 2^53.
 */
import type { ColumnType, Kysely } from "kysely";
import type { Int8, WriteSideTables } from "../core/db/schema.js";

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;

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

import { sql, type Kysely } from "kysely";

// Frozen in time once released. Snapshots of folded streams (docs/STORAGE.md "Snapshots"): derived
// data, one row per aggregate, read by the command path in the same query as the stream's head.

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("snapshots")
    .addColumn("aggregate_type", "text", (c) => c.notNull())
    .addColumn("aggregate_id", "text", (c) => c.notNull())
    // The fold's schema version: a snapshot of another version is never read.
    .addColumn("fold_version", "integer", (c) => c.notNull())
    // The seq of the last event folded into `state`.
    .addColumn("seq", "bigint", (c) => c.notNull())
    // The state as JSON text (not jsonb), checked against `checksum` before use.
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("checksum", "text", (c) => c.notNull())
    .addColumn("taken_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint("snapshots_pk", ["aggregate_type", "aggregate_id"])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("snapshots").execute();
}

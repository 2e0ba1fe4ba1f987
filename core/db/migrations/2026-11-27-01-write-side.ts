import { sql, type Kysely } from "kysely";

// Frozen in time: never edit after release; add a new dated migration instead.

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("stream_heads")
    .addColumn("aggregate_type", "text", (c) => c.notNull())
    .addColumn("aggregate_id", "text", (c) => c.notNull())
    .addColumn("head", "bigint", (c) => c.notNull().defaultTo(0))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint("stream_heads_pk", ["aggregate_type", "aggregate_id"])
    .execute();

  await db.schema
    .createTable("event_log")
    .addColumn("log_id", "bigint", (c) => c.primaryKey().generatedAlwaysAsIdentity())
    .addColumn("event_id", "text", (c) => c.notNull())
    .addColumn("aggregate_type", "text", (c) => c.notNull())
    .addColumn("aggregate_id", "text", (c) => c.notNull())
    .addColumn("seq", "bigint", (c) => c.notNull())
    .addColumn("event_type", "text", (c) => c.notNull())
    .addColumn("content_hash", "text", (c) => c.notNull())
    .addColumn("ordering_key", "text")
    // The slots one append reserved together (docs/CONTRACT.md W7): they commit or void as a unit.
    .addColumn("batch_first_seq", "bigint", (c) => c.notNull())
    .addColumn("batch_last_seq", "bigint", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull().check(sql`state in ('pending', 'committed', 'void')`))
    .addColumn("global_position", "bigint", (c) => c.unique())
    .addColumn("reserved_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("committed_at", "timestamptz")
    .addUniqueConstraint("event_log_slot_uq", ["aggregate_type", "aggregate_id", "seq"])
    .execute();

  // event_id is unique store-wide among live slots; a voided reservation frees its id for a retry.
  await sql`create unique index event_log_event_id_uq on event_log (event_id) where state <> 'void'`.execute(db);
  await sql`create index event_log_pending_ix on event_log (reserved_at) where state = 'pending'`.execute(db);

  await db.schema
    .createTable("global_counter")
    .addColumn("id", "smallint", (c) => c.primaryKey().check(sql`id = 1`))
    .addColumn("position", "bigint", (c) => c.notNull())
    .execute();
  await db.insertInto("global_counter").values({ id: 1, position: 0 }).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("global_counter").execute();
  await db.schema.dropTable("event_log").execute();
  await db.schema.dropTable("stream_heads").execute();
}

import { sql, type Kysely } from "kysely";

// Frozen in time once released. Owned by the consumers (consumers/): the processed-event registry,
// ordering watermarks and the instances read model.

export async function up(db: Kysely<any>): Promise<void> {
  // Fencing tokens: every claim takes a fresh one, so a holder that lost its lease cannot complete.
  await sql`create sequence processed_event_fence as bigint`.execute(db);

  await db.schema
    .createTable("processed_events")
    .addColumn("handler", "text", (c) => c.notNull())
    .addColumn("event_id", "text", (c) => c.notNull())
    .addColumn("aggregate_type", "text", (c) => c.notNull())
    .addColumn("aggregate_id", "text", (c) => c.notNull())
    .addColumn("seq", "bigint", (c) => c.notNull())
    .addColumn("global_position", "bigint")
    .addColumn("event_type", "text", (c) => c.notNull())
    .addColumn("command_id", "text")
    .addColumn("state", "text", (c) =>
      c.notNull().check(sql`state in ('processing', 'done', 'retry_scheduled', 'dead_lettered', 'skipped_stale')`),
    )
    .addColumn("fence", "bigint", (c) => c.notNull())
    .addColumn("owner", "text", (c) => c.notNull())
    // What the latest claim took over: null (first claim), 'processing' (an expired lease),
    // 'retry_scheduled' (a due retry) or 'self' (the same worker resuming after an outage).
    .addColumn("claimed_from", "text")
    // Lease and heartbeat are computed by PostgreSQL (clock_timestamp()), never by a worker's clock.
    .addColumn("lease_expires_at", "timestamptz")
    .addColumn("heartbeat_at", "timestamptz")
    .addColumn("next_attempt_at", "timestamptz")
    .addColumn("attempts", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("last_error", "text")
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("finished_at", "timestamptz")
    .addPrimaryKeyConstraint("processed_events_pkey", ["handler", "event_id"])
    .execute();
  // The ordering guard asks "is a lower seq of this aggregate still in flight?": only those rows.
  await sql`create index processed_events_in_flight_ix on processed_events (handler, aggregate_type, aggregate_id, seq)
    where state in ('processing', 'retry_scheduled')`.execute(db);
  // Housekeeping prunes done rows by age, in batches.
  await sql`create index processed_events_done_ix on processed_events (finished_at) where state = 'done'`.execute(db);
  // The status call looks events up by id (across handlers) or by command id.
  await sql`create index processed_events_event_ix on processed_events (event_id)`.execute(db);
  await sql`create index processed_events_command_ix on processed_events (command_id) where command_id is not null`.execute(db);

  // Separate from the write side's stream_heads (weakness 14 of the origin): the highest seq each
  // handler applied per aggregate. Never pruned, so an old redelivery is still recognised as stale.
  await db.schema
    .createTable("consumer_watermarks")
    .addColumn("handler", "text", (c) => c.notNull())
    .addColumn("aggregate_type", "text", (c) => c.notNull())
    .addColumn("aggregate_id", "text", (c) => c.notNull())
    .addColumn("applied_seq", "bigint", (c) => c.notNull().defaultTo(0))
    .addColumn("applied_event_id", "text")
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint("consumer_watermarks_pkey", ["handler", "aggregate_type", "aggregate_id"])
    .execute();

  // The instances read model (docs/CONTRACT.md C6). A rebuild creates a copy with LIKE ... INCLUDING ALL
  // and renames it over this one, so keep every index of it named after the table.
  await db.schema
    .createTable("instances")
    .addColumn("database", "text", (c) => c.notNull())
    .addColumn("class_name", "text", (c) => c.notNull())
    .addColumn("instance_id", "text", (c) => c.notNull())
    .addColumn("properties", "jsonb", (c) => c.notNull())
    .addColumn("version", "bigint", (c) => c.notNull())
    .addColumn("deleted", "boolean", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull())
    .addColumn("updated_at", "timestamptz", (c) => c.notNull())
    .addColumn("global_position", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("instances_pkey", ["database", "class_name", "instance_id"])
    .execute();

  // How far a projection has applied the store: every event of its aggregate types up to
  // applied_position is reflected (read-your-writes waits on it).
  await db.schema
    .createTable("projection_positions")
    .addColumn("projection", "text", (c) => c.primaryKey())
    .addColumn("applied_position", "bigint", (c) => c.notNull().defaultTo(0))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  // A rebuild in progress (resumable): the fresh table and how far the replay got.
  await db.schema
    .createTable("projection_rebuilds")
    .addColumn("projection", "text", (c) => c.primaryKey())
    .addColumn("table_name", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull().check(sql`state in ('running', 'swapped')`))
    .addColumn("position", "bigint", (c) => c.notNull().defaultTo(0))
    .addColumn("events", "bigint", (c) => c.notNull().defaultTo(0))
    .addColumn("started_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("finished_at", "timestamptz")
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("projection_rebuilds").ifExists().execute();
  await db.schema.dropTable("projection_positions").ifExists().execute();
  await db.schema.dropTable("instances").ifExists().execute();
  await db.schema.dropTable("consumer_watermarks").ifExists().execute();
  await db.schema.dropTable("processed_events").ifExists().execute();
  await sql`drop sequence if exists processed_event_fence`.execute(db);
}

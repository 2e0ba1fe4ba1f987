import { sql, type Kysely } from "kysely";

// Frozen in time once released. Owned by the relay (relay/): checkpoints and the active-relay lease.

export async function up(db: Kysely<any>): Promise<void> {
  // One row per relay name: who may publish (docs/CONTRACT.md R5). Times are the database's clock, so
  // clock skew between relay hosts cannot make two of them believe they hold the lease.
  await db.schema
    .createTable("relay_leases")
    .addColumn("name", "text", (c) => c.primaryKey())
    .addColumn("holder", "text", (c) => c.notNull())
    // The fencing token: raised by every acquisition, checked by every checkpoint write.
    .addColumn("token", "bigint", (c) => c.notNull())
    .addColumn("expires_at", "timestamptz", (c) => c.notNull())
    .addColumn("acquired_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("renewed_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  // The durable checkpoint (docs/CONTRACT.md R4): every global position up to `position` is in Kafka.
  await db.schema
    .createTable("relay_checkpoints")
    .addColumn("name", "text", (c) => c.primaryKey())
    .addColumn("position", "bigint", (c) => c.notNull().defaultTo(0))
    // Token of the lease under which `position` was written; never decreases.
    .addColumn("fencing_token", "bigint", (c) => c.notNull().defaultTo(0))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("relay_checkpoints").execute();
  await db.schema.dropTable("relay_leases").execute();
}

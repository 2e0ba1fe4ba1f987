import { sql, type Kysely } from "kysely";

// Frozen in time once released. Listings (ListInstances, both consistencies, and the console's
// stream listing) order ids by code point (core/event-log.ts CODE_POINT_ORDER): under a locale
// collation PostgreSQL cannot turn an id prefix into a range of the primary keys, so the first page
// of a class read every stream of its type that sorts before the class, and the last page every
// one after it. In code-point order a prefix is a range of these indexes. New streams and new
// instances pay one more index entry; head and read-model updates change no indexed column.
// A rebuilt read model copies the instances index (LIKE ... INCLUDING ALL).

export async function up(db: Kysely<any>): Promise<void> {
  await sql`create index stream_heads_listing_ix on stream_heads (aggregate_type, aggregate_id collate "C")`.execute(db);
  await sql`create index instances_listing_ix on instances (database, class_name, instance_id collate "C")`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop index if exists instances_listing_ix`.execute(db);
  await sql`drop index if exists stream_heads_listing_ix`.execute(db);
}

import { sql, type Kysely } from "kysely";

// Frozen in time once released. GetProcessingStatus asks every handler's watermark of one
// aggregate (core/processing-status.ts watermarksOf); the primary key leads with the handler, so
// without this index that read scanned the whole table, which is never pruned (a watermark per
// handler and aggregate for the store's lifetime). Watermark updates change no indexed column, so
// they stay heap-only.

export async function up(db: Kysely<any>): Promise<void> {
  await sql`create index consumer_watermarks_aggregate_ix on consumer_watermarks (aggregate_type, aggregate_id)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop index if exists consumer_watermarks_aggregate_ix`.execute(db);
}

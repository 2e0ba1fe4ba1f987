import { sql, type Kysely } from "kysely";

// Frozen in time once released. The per-stream hash chain (docs/STORAGE.md "Hash chain"): each
// slot's chain hash, computed at reservation, so the next append in the stream learns its
// predecessor's from the row it already reads, with no S3 read.

export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table event_log add column chain_hash text`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`alter table event_log drop column chain_hash`.execute(db);
}

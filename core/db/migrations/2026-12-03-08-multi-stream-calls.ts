import { sql, type Kysely } from "kysely";

// Frozen in time once released. Multi-stream appends (AppendToStreams, docs/CONTRACT.md W8): the
// slots of one call that writes several aggregates share a call id, so every commit of them — the
// group committer's, the sweeper's, a retry's — commits the call whole with contiguous positions,
// and a retry is recognised as the same call. Null for single-stream appends.

export async function up(db: Kysely<any>): Promise<void> {
  await sql`create sequence event_log_call_ids`.execute(db);
  await sql`alter table event_log add column call_id bigint`.execute(db);
  await sql`create index event_log_call_ix on event_log (call_id) where call_id is not null`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop index if exists event_log_call_ix`.execute(db);
  await sql`alter table event_log drop column call_id`.execute(db);
  await sql`drop sequence if exists event_log_call_ids`.execute(db);
}

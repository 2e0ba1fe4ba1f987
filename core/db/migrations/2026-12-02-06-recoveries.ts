import { sql, type Kysely } from "kysely";

// Frozen in time once released. Recovery from S3 alone (docs/OPERATIONS.md): the progress of
// `tidemark recover`, one row per schema, so a stopped recovery resumes after its last segment.

export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table store_recoveries (
      name text primary key,
      state text not null check (state in ('running', 'done')),
      last_segment bigint not null default 0,
      segments bigint not null default 0,
      events bigint not null default 0,
      started_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      finished_at timestamptz
    )`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop table store_recoveries`.execute(db);
}

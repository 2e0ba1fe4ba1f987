import { sql, type Kysely } from "kysely";

// Frozen in time once released. Owned by the consumers (consumers/): sequenced dead letters and
// their redrive (docs/CONSUMERS.md "Dead letters, parking and redrive").

export async function up(db: Kysely<any>): Promise<void> {
  // parked: an earlier event of the aggregate is unresolved; replay_requested: an operator asked
  // for a replay; discarded: an operator resolved it without applying it.
  await sql`alter table processed_events drop constraint processed_events_state_check`.execute(db);
  await sql`alter table processed_events add constraint processed_events_state_check check (state in
    ('processing', 'done', 'retry_scheduled', 'dead_lettered', 'skipped_stale', 'parked', 'replay_requested', 'discarded'))`.execute(db);
  // The message as received (topic, partition, offset, value and headers, base64), kept for a
  // dead-lettered or parked event so a replay needs neither Kafka nor the store.
  await sql`alter table processed_events
    add column message jsonb,
    add column first_failed_at timestamptz,
    add column last_failed_at timestamptz,
    add column parked_behind text,
    add column replays integer not null default 0,
    add column replay_requested_by text,
    add column replay_requested_at timestamptz,
    add column resolved_by text,
    add column resolution_reason text,
    add column resolved_at timestamptz`.execute(db);
  // "Is an earlier event of this aggregate unresolved?" (the parking check) and the listings.
  await sql`create index processed_events_unresolved_ix on processed_events (handler, aggregate_type, aggregate_id, seq)
    where state in ('dead_lettered', 'parked', 'replay_requested')`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop index if exists processed_events_unresolved_ix`.execute(db);
  await sql`alter table processed_events
    drop column message, drop column first_failed_at, drop column last_failed_at, drop column parked_behind,
    drop column replays, drop column replay_requested_by, drop column replay_requested_at,
    drop column resolved_by, drop column resolution_reason, drop column resolved_at`.execute(db);
  await sql`alter table processed_events drop constraint processed_events_state_check`.execute(db);
  await sql`alter table processed_events add constraint processed_events_state_check check (state in
    ('processing', 'done', 'retry_scheduled', 'dead_lettered', 'skipped_stale'))`.execute(db);
}

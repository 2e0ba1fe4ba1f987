import { sql, type Kysely } from "kysely";

// Frozen in time once released. Owned by the consumers (consumers/): the registry's rows counted by
// handler and state, so that ListHandlers (and the console's processing page) reads a few rows
// instead of counting a registry that holds every done row of its retention (seven days by default:
// tens of millions of rows on a busy store, about 0.4 s per million to count).
//
// Every statement that inserts, updates or deletes registry rows records what it changed as rows
// of registry_count_deltas (per handler and state: the rows gained or lost, the highest global
// position applied or skipped, the latest change), from its transition tables, in the statement's
// own transaction. The deltas are only ever inserted — no row is shared by two writers, so no
// consumer waits on another's counts and no lock order is added to theirs. Housekeeping folds them
// into registry_counts now and then (consumers/registry.ts compactRegistryCounts); a read sums
// both, so the counts are exact whether or not the fold has run.

export async function up(db: Kysely<any>): Promise<void> {
  await sql`create table registry_counts (
    handler text not null,
    state text not null,
    n bigint not null,
    -- The highest global position of a row that reached this state (done and skipped_stale: how
    -- far the handler applied the log); kept when the rows are pruned.
    max_position bigint,
    -- When a row last entered or left this state.
    last_changed_at timestamptz,
    primary key (handler, state))`.execute(db);
  await sql`create table registry_count_deltas (
    handler text not null,
    state text not null,
    n bigint not null,
    max_position bigint,
    last_changed_at timestamptz not null)`.execute(db);
  // One function for the three triggers: inserts count +1 in their state, deletes -1, updates -1
  // in the old state and +1 in the new one. An update that moves no row between states (a lease
  // renewal, a retry's next attempt) records nothing.
  await sql`create function registry_count_changes() returns trigger language plpgsql as $fn$
    begin
      if tg_op = 'INSERT' then
        insert into registry_count_deltas (handler, state, n, max_position, last_changed_at)
        select handler, state, count(*), max(global_position) filter (where state in ('done', 'skipped_stale')), clock_timestamp()
          from new_rows group by handler, state;
      elsif tg_op = 'DELETE' then
        insert into registry_count_deltas (handler, state, n, max_position, last_changed_at)
        select handler, state, -count(*), null, clock_timestamp()
          from old_rows group by handler, state;
      else
        insert into registry_count_deltas (handler, state, n, max_position, last_changed_at)
        select handler, state, sum(d), max(p), clock_timestamp()
          from (
            select n.handler, n.state, 1 as d, case when n.state in ('done', 'skipped_stale') then n.global_position end as p
              from new_rows n join old_rows o on o.handler = n.handler and o.event_id = n.event_id
             where o.state is distinct from n.state
            union all
            select o.handler, o.state, -1, null
              from old_rows o join new_rows n on n.handler = o.handler and n.event_id = o.event_id
             where o.state is distinct from n.state
          ) moved
         group by handler, state;
      end if;
      return null;
    end
  $fn$`.execute(db);
  await sql`create trigger registry_counts_insert after insert on processed_events
    referencing new table as new_rows for each statement execute function registry_count_changes()`.execute(db);
  await sql`create trigger registry_counts_update after update on processed_events
    referencing old table as old_rows new table as new_rows for each statement execute function registry_count_changes()`.execute(db);
  await sql`create trigger registry_counts_delete after delete on processed_events
    referencing old table as old_rows for each statement execute function registry_count_changes()`.execute(db);
  // The rows already there, counted once while no writer can change them (the triggers exist
  // from this transaction on, so nothing is missed or counted twice).
  await sql`lock table processed_events in share mode`.execute(db);
  await sql`insert into registry_counts (handler, state, n, max_position, last_changed_at)
    select handler, state, count(*), max(global_position) filter (where state in ('done', 'skipped_stale')), max(updated_at)
      from processed_events group by handler, state`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop trigger if exists registry_counts_delete on processed_events`.execute(db);
  await sql`drop trigger if exists registry_counts_update on processed_events`.execute(db);
  await sql`drop trigger if exists registry_counts_insert on processed_events`.execute(db);
  await sql`drop function if exists registry_count_changes()`.execute(db);
  await sql`drop table if exists registry_count_deltas`.execute(db);
  await sql`drop table if exists registry_counts`.execute(db);
}

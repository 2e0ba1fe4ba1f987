import { sql, type Kysely } from "kysely";

// Frozen in time: never edit after release; add a new dated migration instead.
//
// The two transactions of an append as server-side functions, so each costs one round trip
// instead of six (BEGIN, four statements, COMMIT). The benchmark (bench/) showed PostgreSQL round
// trips, not CPU, as the largest part of an append's latency. Same statements, same locks, same
// order as the TypeScript they replace in core/event-log.ts; errors (e.g. unique violations) still
// reach the caller with their code and constraint, so its retry logic is unchanged.

export async function up(db: Kysely<any>): Promise<void> {
  // Step 1 of an append (reserveSlots). Returns one row per slot: outcome `reserved` (the new
  // pending rows) or `existing` (live rows holding any of the event ids: the caller decides retry
  // or conflict); or a single row without a slot: `conflict` (head is the actual head; nothing
  // reserved) or `head_behind` (the head row is 0 while the log knows `head` slots: the caller
  // repairs the head and asks again). p_expected null means "any".
  await sql`
    create function reserve_slots(
      p_aggregate_type text, p_aggregate_id text, p_expected bigint,
      p_event_ids text[], p_event_types text[], p_content_hashes text[], p_ordering_keys text[])
    returns table (
      outcome text, head bigint,
      log_id bigint, event_id text, aggregate_type text, aggregate_id text, seq bigint,
      event_type text, content_hash text, ordering_key text, state text, global_position bigint,
      batch_first_seq bigint, batch_last_seq bigint, committed_at timestamptz)
    language plpgsql as $fn$
    #variable_conflict use_column
    declare
      v_head bigint;
      v_created boolean;
      v_logged bigint;
      v_count int := cardinality(p_event_ids);
    begin
      -- Creates the head row when missing and locks it either way: appends to one aggregate queue here.
      insert into stream_heads as h (aggregate_type, aggregate_id, head)
      values (p_aggregate_type, p_aggregate_id, 0)
      on conflict (aggregate_type, aggregate_id) do update set head = h.head
      returning h.head, h.xmax = 0 into v_head, v_created;

      if v_head = 0 then
        select coalesce(max(e.seq), 0) into v_logged
          from event_log e where e.aggregate_type = p_aggregate_type and e.aggregate_id = p_aggregate_id;
        if v_logged > 0 then
          -- Every outcome but a reservation leaves no head row behind, as a rolled-back
          -- transaction would (xmax = 0: this call inserted the row).
          if v_created then
            delete from stream_heads h where h.aggregate_type = p_aggregate_type and h.aggregate_id = p_aggregate_id;
          end if;
          return query select 'head_behind'::text, v_logged, null::bigint, null::text, null::text, null::text, null::bigint,
            null::text, null::text, null::text, null::text, null::bigint, null::bigint, null::bigint, null::timestamptz;
          return;
        end if;
      end if;

      return query
        select 'existing'::text, v_head, e.log_id, e.event_id, e.aggregate_type, e.aggregate_id, e.seq,
               e.event_type, e.content_hash, e.ordering_key, e.state, e.global_position,
               e.batch_first_seq, e.batch_last_seq, e.committed_at
          from event_log e
         where e.event_id = any(p_event_ids) and e.state <> 'void';
      if found then
        if v_created then
          delete from stream_heads h where h.aggregate_type = p_aggregate_type and h.aggregate_id = p_aggregate_id;
        end if;
        return;
      end if;

      if p_expected is not null and v_head <> p_expected then
        if v_created then
          delete from stream_heads h where h.aggregate_type = p_aggregate_type and h.aggregate_id = p_aggregate_id;
        end if;
        return query select 'conflict'::text, v_head, null::bigint, null::text, null::text, null::text, null::bigint,
          null::text, null::text, null::text, null::text, null::bigint, null::bigint, null::bigint, null::timestamptz;
        return;
      end if;

      update stream_heads h set head = v_head + v_count, updated_at = now()
       where h.aggregate_type = p_aggregate_type and h.aggregate_id = p_aggregate_id;

      return query
        with inserted as (
          insert into event_log (event_id, aggregate_type, aggregate_id, seq, event_type, content_hash,
                                 ordering_key, batch_first_seq, batch_last_seq, state)
          select u.event_id, p_aggregate_type, p_aggregate_id, v_head + u.ord, u.event_type, u.content_hash,
                 u.ordering_key, v_head + 1, v_head + v_count, 'pending'
            from unnest(p_event_ids, p_event_types, p_content_hashes, p_ordering_keys)
                 with ordinality as u(event_id, event_type, content_hash, ordering_key, ord)
          returning *)
        select 'reserved'::text, v_head + v_count, i.log_id, i.event_id, i.aggregate_type, i.aggregate_id, i.seq,
               i.event_type, i.content_hash, i.ordering_key, i.state, i.global_position,
               i.batch_first_seq, i.batch_last_seq, i.committed_at
          from inserted i;
    end
    $fn$`.execute(db);

  // Step 3 of an append (commitSlots), for many slots at once. Takes the commit counter's row lock
  // first, so commit order equals global position order (docs/CONTRACT.md R1); a slot commits only when
  // its stream predecessor is resolved, or is committed earlier in this same call (R2). Returns an
  // outcome per slot found: committed (with its position), void, or deferred. Notifies p_channel
  // when anything committed.
  await sql`
    create function commit_slots(p_log_ids bigint[], p_channel text)
    returns table (slot_id bigint, outcome text, slot_position bigint)
    language plpgsql as $fn$
    declare
      v_position bigint;
      v_ids bigint[] := '{}';
      v_positions bigint[] := '{}';
      v_last_type text;
      v_last_id text;
      v_last_seq bigint;
      r record;
    begin
      select c.position into v_position from global_counter c where c.id = 1 for update;
      for r in
        select e.log_id, e.aggregate_type, e.aggregate_id, e.seq, e.state, e.global_position, p.state as pred_state
          from event_log e
          left join event_log p
            on p.aggregate_type = e.aggregate_type and p.aggregate_id = e.aggregate_id and p.seq = e.seq - 1
         where e.log_id = any(p_log_ids)
         order by e.aggregate_type, e.aggregate_id, e.seq
      loop
        if r.state = 'committed' then
          slot_id := r.log_id; outcome := 'committed'; slot_position := r.global_position;
        elsif r.state = 'void' then
          slot_id := r.log_id; outcome := 'void'; slot_position := null;
        -- A missing predecessor row means the slot predates this log (re-synchronised from S3).
        -- Rows come in stream order, so a predecessor committed in this call is the previous row.
        elsif r.pred_state is null or r.pred_state <> 'pending'
              or (r.aggregate_type = v_last_type and r.aggregate_id = v_last_id and r.seq - 1 = v_last_seq) then
          v_position := v_position + 1;
          v_ids := v_ids || r.log_id;
          v_positions := v_positions || v_position;
          v_last_type := r.aggregate_type; v_last_id := r.aggregate_id; v_last_seq := r.seq;
          slot_id := r.log_id; outcome := 'committed'; slot_position := v_position;
        else
          slot_id := r.log_id; outcome := 'deferred'; slot_position := null;
        end if;
        return next;
      end loop;
      if cardinality(v_ids) = 0 then
        return;
      end if;
      update event_log e
         set state = 'committed', global_position = v.position, committed_at = now()
        from unnest(v_ids, v_positions) as v(log_id, position)
       where e.log_id = v.log_id and e.state = 'pending';
      update global_counter c set position = v_position where c.id = 1;
      perform pg_notify(p_channel, v_position::text);
    end
    $fn$`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop function if exists commit_slots(bigint[], text)`.execute(db);
  await sql`drop function if exists reserve_slots(text, text, bigint, text[], text[], text[], text[])`.execute(db);
}

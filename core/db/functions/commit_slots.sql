-- commit_slots: step 3 of an append, for many slots in one transaction (group commit).
--
-- First records where each written event is (its segment's bytes, when p_offsets gives them; the
-- segment number was set when the flush took the slot) and marks those segments written. A slot is
-- committed only with its location known and its event id the one the caller wrote (a slot handed
-- over to another event meanwhile, W6, answers `missing`).
--
-- Takes the commit counter's row lock first, so commit order equals global position order and a
-- reader that sees position p has seen every position below p (docs/CONTRACT.md R1). A slot commits
-- only when every slot before it in its stream is settled (R2): its predecessor is committed, or
-- commits earlier in this same call, or is void with every slot below it back to a committed one
-- (or to the first) settled too. Returns an outcome per slot found: committed (with its position),
-- void, or deferred (an earlier slot is pending or has no row yet). Notifies p_channel when
-- anything committed (R6).
--
-- Applied by the migrate step (core/db/sql-functions.ts) whenever this file changes: edit it in
-- place; a change of the signature or the result columns needs a `drop function` first.
drop function if exists commit_slots(bigint[], text);
create or replace function commit_slots(p_log_ids bigint[], p_event_ids text[], p_offsets bigint[], p_lengths integer[], p_channel text)
returns table (slot_id bigint, outcome text, slot_position bigint)
language plpgsql as $fn$
declare
  v_position bigint;
  v_ids bigint[] := '{}';
  v_positions bigint[] := '{}';
  v_last_type text;
  v_last_id text;
  v_last_seq bigint;
  v_below_seq bigint;
  v_below_state text;
  v_voids bigint;
  v_settled boolean;
  r record;
begin
  select c.position into v_position from global_counter c where c.id = 1 for update;
  if p_offsets is not null then
    update event_log e
       set segment_offset = w.segment_offset, segment_length = w.segment_length
      from unnest(p_log_ids, p_event_ids, p_offsets, p_lengths) as w(log_id, event_id, segment_offset, segment_length)
     where e.log_id = w.log_id and e.event_id = w.event_id and e.state = 'pending' and e.segment is not null;
    update segments s
       set state = 'written', resolved_at = now()
     where s.state = 'pending'
       and s.segment in (select e.segment from event_log e where e.log_id = any(p_log_ids) and e.segment is not null);
  end if;
  for r in
    select e.log_id, e.event_id, e.aggregate_type, e.aggregate_id, e.seq, e.state, e.global_position, e.segment_offset,
           p.state as pred_state, w.event_id as wanted_event_id
      from event_log e
      join unnest(p_log_ids, coalesce(p_event_ids, array_fill(null::text, array[cardinality(p_log_ids)]))) as w(log_id, event_id)
        on w.log_id = e.log_id
      left join event_log p
        on p.aggregate_type = e.aggregate_type and p.aggregate_id = e.aggregate_id and p.seq = e.seq - 1
     order by e.aggregate_type, e.aggregate_id, e.seq
  loop
    if r.wanted_event_id is not null and r.wanted_event_id <> r.event_id then
      -- Not the event the caller wrote any more (handed over to the one S3 holds, W6).
      continue;
    elsif r.state = 'committed' then
      slot_id := r.log_id; outcome := 'committed'; slot_position := r.global_position;
    elsif r.state = 'void' then
      slot_id := r.log_id; outcome := 'void'; slot_position := null;
    elsif r.segment_offset is null then
      -- Not written anywhere the log knows: nothing to commit (the caller's write failed).
      continue;
    else
      -- The predecessor must be committed, or be the first slot, or commit earlier in this same
      -- call (rows come in stream order: it is the previous row). A predecessor with no row at all
      -- is not settled: its slot may hold an event S3 has and the log has yet to adopt (W6), and
      -- committing past it would put the successor first on Kafka (R2).
      v_settled := coalesce(r.seq = 1 or r.pred_state = 'committed'
        or (r.aggregate_type = v_last_type and r.aggregate_id = v_last_id and r.seq - 1 = v_last_seq), false);
      -- A void predecessor settles only itself: voided (by a take-over, by the sweeper) while an
      -- earlier slot was still pending, it must not let its successor overtake that one on Kafka
      -- (found by the chaos harness). Below the run of void rows the nearest other row must be
      -- committed (or there is none), and the run must have no hole.
      if not v_settled and r.pred_state = 'void' then
        select b.seq, case when b.log_id = any(v_ids) then 'committed' else b.state end
          into v_below_seq, v_below_state
          from event_log b
         where b.aggregate_type = r.aggregate_type and b.aggregate_id = r.aggregate_id
           and b.seq < r.seq and b.state <> 'void'
         order by b.seq desc limit 1;
        if not found then
          v_below_seq := 0;
          v_below_state := 'committed';
        end if;
        if v_below_state = 'committed' then
          select count(*) into v_voids
            from event_log b
           where b.aggregate_type = r.aggregate_type and b.aggregate_id = r.aggregate_id
             and b.seq > v_below_seq and b.seq < r.seq;
          v_settled := coalesce(v_voids = r.seq - v_below_seq - 1, false);
        end if;
      end if;
      if v_settled then
        v_position := v_position + 1;
        v_ids := v_ids || r.log_id;
        v_positions := v_positions || v_position;
        v_last_type := r.aggregate_type; v_last_id := r.aggregate_id; v_last_seq := r.seq;
        slot_id := r.log_id; outcome := 'committed'; slot_position := v_position;
      else
        slot_id := r.log_id; outcome := 'deferred'; slot_position := null;
      end if;
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
$fn$;

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
-- (or to the first) settled too. The slots of one AppendToStreams call (one call_id, W8) commit
-- together or not at all, with contiguous positions in their reservation order; asking for any of
-- them commits the whole call. Returns an outcome per slot asked for: committed (with its
-- position), void, or deferred (an earlier slot is pending or has no row yet). Notifies p_channel
-- when anything committed (R6).
--
-- Applied by the migrate step (core/db/sql-functions.ts) whenever this file changes: edit it in
-- place; a change of the signature or the result columns needs a `drop function` first.
drop function if exists commit_slots(bigint[], text);

-- Whether a pending slot's stream predecessor is settled (the rule above): the slot is the first,
-- or its predecessor is committed (in the log, or earlier in this transaction: p_committed), or is
-- void with every slot below it back to a committed one (or to the first) settled too.
create or replace function slot_settled(p_type text, p_id text, p_seq bigint, p_pred_state text, p_pred_log_id bigint, p_committed bigint[])
returns boolean
language plpgsql as $fn$
declare
  v_below_seq bigint;
  v_below_state text;
  v_voids bigint;
begin
  if p_seq = 1 or p_pred_state = 'committed' or p_pred_log_id = any(p_committed) then
    return true;
  end if;
  -- A void predecessor settles only itself: voided (by a take-over, by the sweeper) while an
  -- earlier slot was still pending, it must not let its successor overtake that one on Kafka
  -- (found by the chaos harness). Below the run of void rows the nearest other row must be
  -- committed (or there is none), and the run must have no hole. A predecessor with no row at all
  -- is not settled: its slot may hold an event S3 has and the log has yet to adopt (W6), and
  -- committing past it would put the successor first on Kafka (R2).
  if p_pred_state is distinct from 'void' then
    return false;
  end if;
  select b.seq, case when b.log_id = any(p_committed) then 'committed' else b.state end
    into v_below_seq, v_below_state
    from event_log b
   where b.aggregate_type = p_type and b.aggregate_id = p_id
     and b.seq < p_seq and b.state <> 'void'
   order by b.seq desc limit 1;
  if not found then
    v_below_seq := 0;
    v_below_state := 'committed';
  end if;
  if v_below_state <> 'committed' then
    return false;
  end if;
  select count(*) into v_voids
    from event_log b
   where b.aggregate_type = p_type and b.aggregate_id = p_id
     and b.seq > v_below_seq and b.seq < p_seq;
  return coalesce(v_voids = p_seq - v_below_seq - 1, false);
end
$fn$;

create or replace function commit_slots(p_log_ids bigint[], p_event_ids text[], p_offsets bigint[], p_lengths integer[], p_channel text)
returns table (slot_id bigint, outcome text, slot_position bigint)
language plpgsql as $fn$
declare
  v_position bigint;
  v_asked bigint[];
  v_siblings bigint[];
  v_ids bigint[] := '{}';
  v_positions bigint[] := '{}';
  v_last_type text;
  v_last_id text;
  v_last_seq bigint;
  v_settled boolean;
  g_ids bigint[];
  g_calls bigint[];
  g_states text[];
  g_types text[];
  g_aggregates text[];
  g_seqs bigint[];
  g_pred_states text[];
  g_pred_ids bigint[];
  g_start int;
  g_end int;
  v_done bigint[] := '{}';
  v_call_ids bigint[];
  v_whole boolean;
  v_progress boolean;
  r record;
  v_call bigint;
  v_event_ids text[];
  v_offsets bigint[];
  v_lengths integer[];
begin
  -- One entry per slot. A slot asked for twice in one call (the sweeper's request and its writer's,
  -- joined in one group commit) was counted twice: two positions drawn, the row taking one and the
  -- answer the other (found by the chaos harness). The entry kept is the one naming the slot's
  -- event, else a bare one, else the first.
  select array_agg(d.log_id order by d.ord), array_agg(d.event_id order by d.ord),
         array_agg(d.segment_offset order by d.ord), array_agg(d.segment_length order by d.ord)
    into p_log_ids, v_event_ids, v_offsets, v_lengths
    from (select distinct on (w.log_id) w.log_id, w.event_id, w.segment_offset, w.segment_length, w.ord
            from unnest(p_log_ids, p_event_ids, p_offsets, p_lengths) with ordinality as w(log_id, event_id, segment_offset, segment_length, ord)
            left join event_log e on e.log_id = w.log_id
           order by w.log_id, case when w.event_id = e.event_id then 0 when w.event_id is null then 1 else 2 end, w.ord) d;
  if p_event_ids is not null then
    p_event_ids := v_event_ids;
    p_offsets := v_offsets;
    p_lengths := v_lengths;
  end if;
  p_log_ids := coalesce(p_log_ids, '{}');
  v_asked := p_log_ids;
  select c.position into v_position from global_counter c where c.id = 1 for update;
  -- A multi-stream call commits whole (W8): its slots not asked for join this commit.
  select array_agg(e.log_id order by e.log_id) into v_siblings
    from event_log e
   where e.call_id in (select f.call_id from event_log f where f.log_id = any(p_log_ids) and f.call_id is not null)
     and e.state = 'pending' and not (e.log_id = any(p_log_ids));
  if v_siblings is not null then
    p_log_ids := p_log_ids || v_siblings;
    if p_event_ids is not null then
      p_event_ids := p_event_ids || array_fill(null::text, array[cardinality(v_siblings)]);
      p_offsets := p_offsets || array_fill(null::bigint, array[cardinality(v_siblings)]);
      p_lengths := p_lengths || array_fill(null::integer, array[cardinality(v_siblings)]);
    end if;
  end if;
  if p_offsets is not null then
    update event_log e
       set segment_offset = w.segment_offset, segment_length = w.segment_length
      from unnest(p_log_ids, p_event_ids, p_offsets, p_lengths) as w(log_id, event_id, segment_offset, segment_length)
     where e.log_id = w.log_id and e.event_id = w.event_id and e.state = 'pending' and e.segment is not null
       and w.segment_offset is not null;
    update segments s
       set state = 'written', resolved_at = now()
     where s.state = 'pending'
       and s.segment in (select e.segment from event_log e where e.log_id = any(p_log_ids) and e.segment is not null);
  end if;
  -- Slots of single-stream appends, in stream order.
  for r in
    select e.log_id, e.event_id, e.aggregate_type, e.aggregate_id, e.seq, e.state, e.global_position, e.segment_offset,
           p.state as pred_state, p.log_id as pred_log_id, w.event_id as wanted_event_id
      from event_log e
      join unnest(p_log_ids, coalesce(p_event_ids, array_fill(null::text, array[cardinality(p_log_ids)]))) as w(log_id, event_id)
        on w.log_id = e.log_id
      left join event_log p
        on p.aggregate_type = e.aggregate_type and p.aggregate_id = e.aggregate_id and p.seq = e.seq - 1
     where e.call_id is null
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
      -- The predecessor must be settled; the previous row of this loop, when it is the
      -- predecessor and committed here, is the common case and needs no lookup.
      v_settled := coalesce(r.seq = 1 or r.pred_state = 'committed'
        or (r.aggregate_type = v_last_type and r.aggregate_id = v_last_id and r.seq - 1 = v_last_seq), false);
      if not v_settled then
        v_settled := slot_settled(r.aggregate_type, r.aggregate_id, r.seq, r.pred_state, r.pred_log_id, v_ids);
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
  -- Slots of multi-stream calls: each call whole, in its reservation order, once every one of its
  -- slots is written and settled. Read once, in call order; a call can settle another's
  -- predecessor, so go round until no call commits.
  select array_agg(e.log_id order by e.call_id, e.log_id),
         array_agg(e.call_id order by e.call_id, e.log_id),
         array_agg(case when e.state = 'committed' then 'committed'
                        when e.state = 'void' or e.segment_offset is null or (w.event_id is not null and w.event_id <> e.event_id) then 'blocked'
                        else 'pending' end order by e.call_id, e.log_id),
         array_agg(e.aggregate_type order by e.call_id, e.log_id),
         array_agg(e.aggregate_id order by e.call_id, e.log_id),
         array_agg(e.seq order by e.call_id, e.log_id),
         array_agg(p.state order by e.call_id, e.log_id),
         array_agg(p.log_id order by e.call_id, e.log_id)
    into g_ids, g_calls, g_states, g_types, g_aggregates, g_seqs, g_pred_states, g_pred_ids
    from event_log e
    join unnest(p_log_ids, coalesce(p_event_ids, array_fill(null::text, array[cardinality(p_log_ids)]))) as w(log_id, event_id)
      on w.log_id = e.log_id
    left join event_log p
      on p.aggregate_type = e.aggregate_type and p.aggregate_id = e.aggregate_id and p.seq = e.seq - 1
   where e.call_id is not null;
  if g_ids is not null then
    loop
      v_progress := false;
      g_start := 1;
      while g_start <= cardinality(g_ids) loop
        v_call := g_calls[g_start];
        g_end := g_start;
        while g_end < cardinality(g_ids) and g_calls[g_end + 1] = v_call loop
          g_end := g_end + 1;
        end loop;
        if not (v_call = any(v_done)) then
          v_whole := true;
          v_call_ids := '{}';
          for k in g_start .. g_end loop
            continue when g_states[k] = 'committed';
            if g_states[k] = 'blocked' then
              v_whole := false;
            elsif not (g_seqs[k] = 1 or g_pred_states[k] = 'committed' or g_pred_ids[k] = any(v_call_ids)
                       or slot_settled(g_types[k], g_aggregates[k], g_seqs[k], g_pred_states[k], g_pred_ids[k], v_ids)) then
              v_whole := false;
            end if;
            exit when not v_whole;
            v_call_ids := v_call_ids || g_ids[k];
          end loop;
          if v_whole then
            v_done := v_done || v_call;
            if cardinality(v_call_ids) > 0 then
              v_progress := true;
              for k in 1 .. cardinality(v_call_ids) loop
                v_position := v_position + 1;
                v_ids := v_ids || v_call_ids[k];
                v_positions := v_positions || v_position;
              end loop;
            end if;
          end if;
        end if;
        g_start := g_end + 1;
      end loop;
      exit when not v_progress;
    end loop;
    return query
      select e.log_id,
             case when e.log_id = any(v_ids) or e.state = 'committed' then 'committed'
                  when e.state = 'void' then 'void' else 'deferred' end,
             case when e.log_id = any(v_ids) then v_positions[array_position(v_ids, e.log_id)]
                  when e.state = 'committed' then e.global_position end
        from event_log e
        join unnest(p_log_ids, coalesce(p_event_ids, array_fill(null::text, array[cardinality(p_log_ids)]))) as w(log_id, event_id)
          on w.log_id = e.log_id
       where e.call_id is not null and e.log_id = any(v_asked)
         and (w.event_id is null or w.event_id = e.event_id)
         and (e.state <> 'pending' or e.segment_offset is not null)
       order by e.log_id;
  end if;
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

-- reserve_slots: the reservation of one append (docs/CONTRACT.md W3, W4, W7): alone, in one transaction
-- in one round trip, or as one append of a flush (reserve_segment.sql).
--
-- Locks the aggregate's head row (creating it when missing, so appends to one aggregate queue here),
-- looks the event ids up, checks the expectation and reserves contiguous pending slots. Returns one
-- row per slot: outcome `reserved` (the new pending rows) or `existing` (live rows holding any of the
-- event ids: the caller decides retry or conflict); or a single row without a slot: `conflict` (head
-- is the actual head; nothing reserved, no number used up) or `head_behind` (the head row is 0 while
-- the log knows `head` slots — heads were lost, W6: the caller repairs the head and asks again).
-- p_expected null means "any". p_segment, when given, is the segment the new rows go into (a flush
-- of the segment writer reserving its appends, reserve_segment.sql); null leaves them for a flush
-- to take later (allocate_segment.sql). Errors (unique violations) reach the caller with their code and
-- constraint, which core/event-log.ts uses to repair and retry.
--
-- Applied by the migrate step (core/db/sql-functions.ts) whenever this file changes: edit it in
-- place; a change of the signature or the result columns needs a `drop function` first.
drop function if exists reserve_slots(text, text, bigint, text[], text[], text[], text[]);
create or replace function reserve_slots(
  p_aggregate_type text, p_aggregate_id text, p_expected bigint,
  p_event_ids text[], p_event_types text[], p_content_hashes text[], p_ordering_keys text[],
  p_segment bigint default null)
returns table (
  outcome text, head bigint,
  log_id bigint, event_id text, aggregate_type text, aggregate_id text, seq bigint,
  event_type text, content_hash text, ordering_key text, state text, global_position bigint,
  batch_first_seq bigint, batch_last_seq bigint, committed_at timestamptz,
  segment bigint, segment_offset bigint, segment_length integer, chain_hash text, previous_hash text)
language plpgsql as $fn$
#variable_conflict use_column
declare
  v_head bigint;
  v_created boolean;
  v_logged bigint;
  v_count int := cardinality(p_event_ids);
  v_prev text;
  v_prevs text[] := '{}';
  v_chains text[] := '{}';
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
        null::text, null::text, null::text, null::text, null::bigint, null::bigint, null::bigint, null::timestamptz, null::bigint, null::bigint, null::integer, null::text, null::text;
      return;
    end if;
  end if;

  return query
    select 'existing'::text, v_head, e.log_id, e.event_id, e.aggregate_type, e.aggregate_id, e.seq,
           e.event_type, e.content_hash, e.ordering_key, e.state, e.global_position,
           e.batch_first_seq, e.batch_last_seq, e.committed_at, e.segment, e.segment_offset, e.segment_length,
           e.chain_hash, null::text
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
      null::text, null::text, null::text, null::text, null::bigint, null::bigint, null::bigint, null::timestamptz, null::bigint, null::bigint, null::integer, null::text, null::text;
    return;
  end if;

  update stream_heads h set head = v_head + v_count, updated_at = now()
   where h.aggregate_type = p_aggregate_type and h.aggregate_id = p_aggregate_id;

  -- The hash chain (docs/STORAGE.md "Hash chain"): each slot links to the latest slot before it
  -- that has a link — the row of seq v_head as it was reserved, unless a recovery closed it — read
  -- from the log (one index lookup, no S3 read). The text hashed must match core/envelope.ts
  -- chainLink byte for byte.
  select e.chain_hash into v_prev from event_log e
   where e.aggregate_type = p_aggregate_type and e.aggregate_id = p_aggregate_id and e.seq <= v_head
     and e.chain_hash is not null
   order by e.seq desc limit 1;
  v_prev := coalesce(v_prev, '');
  for i in 1 .. v_count loop
    v_prevs := v_prevs || v_prev;
    v_prev := 'sha256:' || encode(sha256(convert_to(v_prev || E'\n' || p_event_ids[i] || E'\n' || (v_head + i)::text || E'\n' || p_content_hashes[i], 'UTF8')), 'hex');
    v_chains := v_chains || v_prev;
  end loop;

  return query
    with inserted as (
      insert into event_log (event_id, aggregate_type, aggregate_id, seq, event_type, content_hash,
                             ordering_key, batch_first_seq, batch_last_seq, state, chain_hash, segment)
      select u.event_id, p_aggregate_type, p_aggregate_id, v_head + u.ord, u.event_type, u.content_hash,
             u.ordering_key, v_head + 1, v_head + v_count, 'pending', u.chain_hash, p_segment
        from unnest(p_event_ids, p_event_types, p_content_hashes, p_ordering_keys, v_chains)
             with ordinality as u(event_id, event_type, content_hash, ordering_key, chain_hash, ord)
      returning *)
    select 'reserved'::text, v_head + v_count, i.log_id, i.event_id, i.aggregate_type, i.aggregate_id, i.seq,
           i.event_type, i.content_hash, i.ordering_key, i.state, i.global_position,
           i.batch_first_seq, i.batch_last_seq, i.committed_at, i.segment, i.segment_offset, i.segment_length,
           i.chain_hash, v_prevs[i.seq - v_head]
      from inserted i;
end
$fn$;

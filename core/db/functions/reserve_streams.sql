-- reserve_streams: step 1 of an AppendToStreams call, one transaction in one round trip
-- (docs/CONTRACT.md W3, W4, W8).
--
-- Locks the head row of every aggregate the call names — written ones (created when missing, as
-- reserve_slots does) exclusively, checked ones shared — in one order, by (aggregate_type,
-- aggregate_id), so concurrent calls naming the same aggregates never deadlock. A checked
-- aggregate with no head row gets one for the time of the transaction, so a concurrent creator of
-- it waits here and then sees what this call did; the row is removed again before the commit.
-- Then looks the event ids up (and every slot of the calls holding them), checks every expectation
-- and check, and reserves contiguous pending slots per written stream, all sharing one call id.
--
-- Returns one row per slot: outcome `reserved` (the new pending rows) or `existing` (live rows
-- holding any of the event ids, with every other slot of their calls: the caller decides retry or
-- conflict); or rows without a slot: one `conflict` per failing expectation or check (`item` its
-- 1-based place: written streams first, then checks; `head` the actual head; nothing reserved, no
-- number used up), or one `head_behind` per aggregate whose head row is 0 while the log knows
-- `head` slots (W6: the caller repairs the heads and asks again). p_expected and p_check_expected
-- hold null for "any". Every outcome but a reservation leaves no head row behind. p_segment, when
-- given, is the segment the new rows go into (a flush of the segment writer reserving the call with
-- the others it holds, reserve_segment.sql, which holds every lock the call needs: the heads are
-- then only read); null leaves them for a flush to take later (allocate_segment.sql), as
-- reserve_slots does.
--
-- Applied by the migrate step (core/db/sql-functions.ts) whenever this file changes: edit it in
-- place; a change of the signature or the result columns needs a `drop function` first.
drop function if exists reserve_streams(text[], text[], bigint[], integer[], text[], text[], text[], text[], text[], text[], bigint[]);
create or replace function reserve_streams(
  p_types text[], p_ids text[], p_expected bigint[], p_counts integer[],
  p_event_ids text[], p_event_types text[], p_content_hashes text[], p_ordering_keys text[],
  p_check_types text[], p_check_ids text[], p_check_expected bigint[],
  p_segment bigint default null)
returns table (
  outcome text, item integer, head bigint,
  log_id bigint, event_id text, aggregate_type text, aggregate_id text, seq bigint,
  event_type text, content_hash text, ordering_key text, state text, global_position bigint,
  batch_first_seq bigint, batch_last_seq bigint, committed_at timestamptz,
  segment bigint, segment_offset bigint, segment_length integer, chain_hash text, previous_hash text,
  call_id bigint)
language plpgsql as $fn$
#variable_conflict use_column
declare
  v_n int := cardinality(p_types);
  v_all_types text[] := p_types || coalesce(p_check_types, '{}');
  v_all_ids text[] := p_ids || coalesce(p_check_ids, '{}');
  v_all_expected bigint[] := p_expected || coalesce(p_check_expected, '{}');
  v_heads bigint[] := array_fill(0::bigint, array[cardinality(p_types || coalesce(p_check_types, '{}'))]);
  v_created boolean[] := array_fill(false, array[cardinality(p_types || coalesce(p_check_types, '{}'))]);
  v_head bigint;
  v_new boolean;
  v_logged bigint;
  v_behind boolean := false;
  v_call bigint;
  v_offset int := 0;
  v_count int;
  v_prev text;
  v_prevs text[];
  v_chains text[];
  r record;
begin
  -- One lock order for every call: by aggregate, byte-wise.
  for r in
    select u.t, u.i, u.ord::int as ord
      from unnest(v_all_types, v_all_ids) with ordinality as u(t, i, ord)
     order by u.t collate "C", u.i collate "C"
  loop
    if p_segment is not null then
      -- Called by reserve_segment, which has locked (and where missing, created) every head row
      -- this call names, and removes the created ones it leaves at 0: read the head as the calls
      -- before this one in the flush left it, without writing another version of the row. A row
      -- missing here is a bug of the caller; the error rolls the flush back, and its calls are
      -- then reserved alone.
      select h.head into v_head from stream_heads h where h.aggregate_type = r.t and h.aggregate_id = r.i;
      if not found then
        raise exception 'reserve_streams: the flush holds no head row of % %', r.t, r.i;
      end if;
      v_new := false;
    elsif r.ord <= v_n then
      insert into stream_heads as h (aggregate_type, aggregate_id, head)
      values (r.t, r.i, 0)
      on conflict (aggregate_type, aggregate_id) do update set head = h.head
      returning h.head, h.xmax = 0 into v_head, v_new;
    else
      v_new := false;
      insert into stream_heads as h (aggregate_type, aggregate_id, head)
      values (r.t, r.i, 0)
      on conflict (aggregate_type, aggregate_id) do nothing
      returning h.head into v_head;
      if found then
        v_new := true;
      else
        select h.head into v_head from stream_heads h
         where h.aggregate_type = r.t and h.aggregate_id = r.i for share;
      end if;
    end if;
    v_heads[r.ord] := v_head;
    v_created[r.ord] := v_new;
    if v_head = 0 then
      select coalesce(max(e.seq), 0) into v_logged
        from event_log e where e.aggregate_type = r.t and e.aggregate_id = r.i;
      if v_logged > 0 then
        v_behind := true;
        return query select 'head_behind'::text, r.ord, v_logged, null::bigint, null::text, r.t, r.i, null::bigint,
          null::text, null::text, null::text, null::text, null::bigint, null::bigint, null::bigint, null::timestamptz,
          null::bigint, null::bigint, null::integer, null::text, null::text, null::bigint;
      end if;
    end if;
  end loop;

  if not v_behind then
    -- Two index lookups (event ids, then the call ids they found), never a scan of the log.
    return query
      with found as (
        select e.* from event_log e where e.event_id = any(p_event_ids) and e.state <> 'void')
      select 'existing'::text, null::integer, null::bigint, f.log_id, f.event_id, f.aggregate_type, f.aggregate_id, f.seq,
             f.event_type, f.content_hash, f.ordering_key, f.state, f.global_position,
             f.batch_first_seq, f.batch_last_seq, f.committed_at, f.segment, f.segment_offset, f.segment_length,
             f.chain_hash, null::text, f.call_id
        from found f
      union all
      select 'existing'::text, null::integer, null::bigint, e.log_id, e.event_id, e.aggregate_type, e.aggregate_id, e.seq,
             e.event_type, e.content_hash, e.ordering_key, e.state, e.global_position,
             e.batch_first_seq, e.batch_last_seq, e.committed_at, e.segment, e.segment_offset, e.segment_length,
             e.chain_hash, null::text, e.call_id
        from event_log e
       where e.call_id in (select f.call_id from found f where f.call_id is not null)
         and e.state <> 'void' and not (e.event_id = any(p_event_ids));
    if not found then
      -- Every expectation and check, so the client learns all that failed at once.
      return query
        select 'conflict'::text, u.ord::int, v_heads[u.ord], null::bigint, null::text, u.t, u.i, null::bigint,
               null::text, null::text, null::text, null::text, null::bigint, null::bigint, null::bigint, null::timestamptz,
               null::bigint, null::bigint, null::integer, null::text, null::text, null::bigint
          from unnest(v_all_types, v_all_ids, v_all_expected) with ordinality as u(t, i, expected, ord)
         where u.expected is not null and u.expected <> v_heads[u.ord]
         order by u.ord;
      if not found then
        v_call := nextval('event_log_call_ids');
        for s in 1 .. v_n loop
          v_count := p_counts[s];
          v_head := v_heads[s];
          update stream_heads h set head = v_head + v_count, updated_at = now()
           where h.aggregate_type = p_types[s] and h.aggregate_id = p_ids[s];
          -- The hash chain, as reserve_slots links it (docs/STORAGE.md "Hash chain").
          select e.chain_hash into v_prev from event_log e
           where e.aggregate_type = p_types[s] and e.aggregate_id = p_ids[s] and e.seq <= v_head
             and e.chain_hash is not null
           order by e.seq desc limit 1;
          v_prev := coalesce(v_prev, '');
          v_prevs := '{}';
          v_chains := '{}';
          for i in 1 .. v_count loop
            v_prevs := v_prevs || v_prev;
            v_prev := 'sha256:' || encode(sha256(convert_to(v_prev || E'\n' || p_event_ids[v_offset + i] || E'\n' || (v_head + i)::text || E'\n' || p_content_hashes[v_offset + i], 'UTF8')), 'hex');
            v_chains := v_chains || v_prev;
          end loop;
          return query
            with inserted as (
              insert into event_log (event_id, aggregate_type, aggregate_id, seq, event_type, content_hash,
                                     ordering_key, batch_first_seq, batch_last_seq, state, chain_hash, call_id, segment)
              select u.event_id, p_types[s], p_ids[s], v_head + u.ord, u.event_type, u.content_hash,
                     u.ordering_key, v_head + 1, v_head + v_count, 'pending', u.chain_hash, v_call, p_segment
                from unnest(p_event_ids[v_offset + 1 : v_offset + v_count], p_event_types[v_offset + 1 : v_offset + v_count],
                            p_content_hashes[v_offset + 1 : v_offset + v_count], p_ordering_keys[v_offset + 1 : v_offset + v_count], v_chains)
                     with ordinality as u(event_id, event_type, content_hash, ordering_key, chain_hash, ord)
               order by u.ord
              returning *)
            select 'reserved'::text, s, v_head + v_count, i.log_id, i.event_id, i.aggregate_type, i.aggregate_id, i.seq,
                   i.event_type, i.content_hash, i.ordering_key, i.state, i.global_position,
                   i.batch_first_seq, i.batch_last_seq, i.committed_at, i.segment, i.segment_offset, i.segment_length,
                   i.chain_hash, v_prevs[i.seq - v_head], i.call_id
              from inserted i;
          v_offset := v_offset + v_count;
        end loop;
        -- Head rows made only to lock a checked aggregate go again (written ones now hold a head).
        for c in v_n + 1 .. cardinality(v_all_types) loop
          if v_created[c] then
            delete from stream_heads h where h.aggregate_type = v_all_types[c] and h.aggregate_id = v_all_ids[c];
          end if;
        end loop;
        return;
      end if;
    end if;
  end if;

  -- Not reserved: leave no head row behind, as a rolled-back transaction would.
  for c in 1 .. cardinality(v_all_types) loop
    if v_created[c] then
      delete from stream_heads h where h.aggregate_type = v_all_types[c] and h.aggregate_id = v_all_ids[c];
    end if;
  end loop;
end
$fn$;

-- reserve_segment: a flush of the segment writer reserves the slots of the appends it holds and
-- takes their segment number, in one transaction in one round trip (docs/STORAGE.md "Write path").
--
-- The appends of a flush were not reserved one by one as they arrived: queued while the flushes
-- before them were out, they are reserved here together, into the segment the flush will PUT. So a
-- flush of n appends costs two round trips (this one and its commit) instead of n + 2, and an
-- event's row is written twice (reserved into its segment, committed) instead of three times.
--
-- Takes the next number from the segment counter (pending, as allocate_segment does, W5); takes
-- the calls of slots reserved before (p_log_ids and p_calls, as allocate_segment: appends reserved
-- alone); then locks the head row of every aggregate the flush names — appended to, written or
-- checked by a multi-stream call — in one order, by (aggregate_type, aggregate_id) byte-wise as
-- reserve_streams does, so concurrent flushes never deadlock, creating the missing ones; then
-- reserves each call in turn, in the order they were queued (W3, W4, W7, W8 unchanged: the same
-- checks; a call to a stream sees the calls before it in the same flush): an append to one stream
-- with reserve_slots, a multi-stream call (AppendToStreams) with reserve_streams. The appends to one
-- stream are given as parallel arrays, one entry per append (p_expected null = "any", p_counts its
-- number of events), and their events concatenated in append order; the multi-stream calls as a
-- JSON array (p_multi), each an object holding reserve_streams's arrays under the names of its
-- parameters without `p_` (types, ids, expected, counts, event_ids, event_types, content_hashes,
-- ordering_keys, check_types, check_ids, check_expected) and `at`, its place among all the calls.
--
-- The usual flush — appends to one stream each, none of whose event ids the log or another append
-- of the flush holds (no retry), no multi-stream call — is decided by reserve_appends, set-based:
-- the same decisions in a few statements for the whole flush instead of five or six per append
-- (reserve_segment of 16 such appends inside PostgreSQL: 5.4–7.5 ms per append loop, 1.7–2.4 ms
-- set-based). Any other flush takes the per-call loop.
--
-- Returns, for every call (`item`, 0-based, its place among all the calls), the rows of
-- reserve_slots (reserved, existing, conflict or head_behind) or reserve_streams (the same, `part`
-- its 1-based stream or check, `call_id` its call) for it, and for every call of slots reserved
-- before that it took one row `taken` (`item` that call); each row names the flush's segment
-- (`flush_segment`; `segment` is the slot's own, for an existing one). A head row this flush
-- created for an aggregate nothing reserved on is removed again. A flush left with nothing to write
-- gets its number voided at once.
--
-- Commits with a flush of the WAL, as allocate_segment: the segment is PUT only after this. An
-- error (a unique violation: an event id reserved at the same moment elsewhere, or a head behind
-- the log after a restore, W6) rolls the whole flush back; its calls are then reserved one by
-- one (core/event-log.ts reserveSlots and reserveStreams repair and decide), and go into a later flush.
--
-- Applied by the migrate step (core/db/sql-functions.ts) whenever this file changes: edit it in
-- place; a change of the signature or the result columns needs a `drop function` first.
-- text_array_of: a JSON array of strings (or nulls) as text[], in order; '{}' for null.
create or replace function text_array_of(p jsonb) returns text[]
language sql immutable as $fn$
  select coalesce(array_agg(x.e order by x.o), '{}') from jsonb_array_elements_text(coalesce(p, '[]')) with ordinality as x(e, o)
$fn$;

-- reserve_appends: reserve_segment's usual case — a flush of appends to one stream each, no
-- multi-stream call, and no event id already in the log or twice in the flush (no retry) —
-- decided with a few statements for the whole flush instead of reserve_slots's per append. The
-- same decisions as reserve_slots would make one after the other in queue order (W3, W7): an
-- aggregate whose head row is 0 while the log holds slots of it is `head_behind` (W6); an
-- expectation that differs from the head as the appends before it in the flush left it is a
-- `conflict` (head: that head) and moves nothing; otherwise the append gets the next contiguous
-- seqs, hash-chained to its stream's latest link (as reserve_slots computes them). The head rows
-- are locked by the caller, whose sorted p_lock_* name each aggregate once with the head read
-- under the lock, the row's version (ctid: unchanged until this function updates it, as the lock
-- is held) and whether the caller created it; a created row no append reserved on is removed again.
-- Returns reserve_slots's rows, `item` the append's 0-based place.
--
-- The heads are moved and the unused created rows removed by ctid, not by joining the aggregates'
-- keys: on a young table a join is planned as a scan of it (and kept so, per connection, until
-- the next analysis, server/planner-statistics.ts), where a ctid lookup stays one row each once
-- analysed. Measured: a 14 s run at c64 on a fresh schema read 160–180 thousand stream_heads rows
-- by sequential scans this way, 1.75 million with the key joins.
create or replace function reserve_appends(
  p_segment bigint, p_types text[], p_ids text[], p_expected bigint[], p_counts integer[],
  p_event_ids text[], p_event_types text[], p_content_hashes text[], p_ordering_keys text[],
  p_lock_types text[], p_lock_ids text[], p_lock_heads bigint[], p_lock_rows tid[], p_lock_created boolean[])
returns table (
  item integer, outcome text, head bigint,
  log_id bigint, event_id text, aggregate_type text, aggregate_id text, seq bigint,
  event_type text, content_hash text, ordering_key text, state text, global_position bigint,
  batch_first_seq bigint, batch_last_seq bigint, committed_at timestamptz,
  segment bigint, segment_offset bigint, segment_length integer, chain_hash text, previous_hash text)
language plpgsql as $fn$
#variable_conflict use_column
declare
  v_n int := cardinality(p_types);
  v_lock_of int[];
  v_heads bigint[] := p_lock_heads;
  v_logged bigint[];
  v_links text[];
  v_outcomes text[] := array_fill(null::text, array[v_n]);
  v_out_heads bigint[] := array_fill(null::bigint, array[v_n]);
  -- One entry per slot to insert: its append, its event (index into p_event_*), seq, batch, link.
  v_items int[] := '{}';
  v_events int[] := '{}';
  v_seqs bigint[] := '{}';
  v_firsts bigint[] := '{}';
  v_lasts bigint[] := '{}';
  v_chains text[] := '{}';
  v_prevs text[] := '{}';
  v_from int := 1;
  v_lock int;
  v_head bigint;
  v_count int;
begin
  -- Each append's aggregate, as its place in p_lock_*.
  select array_agg(l.ord::int order by u.k) into v_lock_of
    from unnest(p_types, p_ids) with ordinality as u(t, i, k)
    join unnest(p_lock_types, p_lock_ids) with ordinality as l(t, i, ord) on l.t = u.t and l.i = u.i;
  -- Per aggregate: the log's last seq when its head row is 0 (W6), and its latest link.
  select array_agg(coalesce(x.logged, 0) order by x.ord), array_agg(coalesce(x.link, '') order by x.ord)
    into v_logged, v_links
    from (
      select l.ord,
             case when l.h = 0 then (select max(e.seq) from event_log e where e.aggregate_type = l.t and e.aggregate_id = l.i) end as logged,
             case when l.h > 0 then (select e.chain_hash from event_log e
                                      where e.aggregate_type = l.t and e.aggregate_id = l.i and e.seq <= l.h and e.chain_hash is not null
                                      order by e.seq desc limit 1) end as link
        from unnest(p_lock_types, p_lock_ids, p_lock_heads) with ordinality as l(t, i, h, ord)) x;
  for k in 1 .. v_n loop
    v_count := p_counts[k];
    v_lock := v_lock_of[k];
    v_head := v_heads[v_lock];
    if v_head = 0 and v_logged[v_lock] > 0 then
      v_outcomes[k] := 'head_behind';
      v_out_heads[k] := v_logged[v_lock];
    elsif p_expected[k] is not null and p_expected[k] <> v_head then
      v_outcomes[k] := 'conflict';
      v_out_heads[k] := v_head;
    else
      v_outcomes[k] := 'reserved';
      v_out_heads[k] := v_head + v_count;
      for j in 0 .. v_count - 1 loop
        v_items := v_items || k;
        v_events := v_events || (v_from + j);
        v_seqs := v_seqs || (v_head + j + 1);
        v_firsts := v_firsts || (v_head + 1);
        v_lasts := v_lasts || (v_head + v_count);
        v_prevs := v_prevs || v_links[v_lock];
        -- The text hashed must match core/envelope.ts chainLink byte for byte (as reserve_slots).
        v_links[v_lock] := 'sha256:' || encode(sha256(convert_to(v_links[v_lock] || E'\n' || p_event_ids[v_from + j] || E'\n' || (v_head + j + 1)::text || E'\n' || p_content_hashes[v_from + j], 'UTF8')), 'hex');
        v_chains := v_chains || v_links[v_lock];
      end loop;
      v_heads[v_lock] := v_head + v_count;
    end if;
    v_from := v_from + v_count;
  end loop;

  update stream_heads h set head = x.head, updated_at = now()
    from unnest(p_lock_rows, v_heads) as x(row_id, head)
   where h.ctid = any(array(select m.row_id from unnest(p_lock_rows, v_heads, p_lock_heads) as m(row_id, head, was) where m.head <> m.was))
     and h.ctid = x.row_id;
  delete from stream_heads h
   where h.ctid = any(array(select m.row_id from unnest(p_lock_rows, v_heads, p_lock_created) as m(row_id, head, created) where m.created and m.head = 0));

  return query
    with slots as (
      select x.* from unnest(v_items, v_events, v_seqs, v_firsts, v_lasts, v_chains, v_prevs) with ordinality
        as x(item, ev, seq, first_seq, last_seq, link, prev, ord)),
    inserted as (
      insert into event_log (event_id, aggregate_type, aggregate_id, seq, event_type, content_hash,
                             ordering_key, batch_first_seq, batch_last_seq, state, chain_hash, segment)
      select p_event_ids[s.ev], p_types[s.item], p_ids[s.item], s.seq, p_event_types[s.ev], p_content_hashes[s.ev],
             p_ordering_keys[s.ev], s.first_seq, s.last_seq, 'pending', s.link, p_segment
        from slots s order by s.ord
      returning *)
    select s.item - 1, 'reserved'::text, v_out_heads[s.item], i.log_id, i.event_id, i.aggregate_type, i.aggregate_id, i.seq,
           i.event_type, i.content_hash, i.ordering_key, i.state, i.global_position,
           i.batch_first_seq, i.batch_last_seq, i.committed_at, i.segment, i.segment_offset, i.segment_length,
           i.chain_hash, s.prev
      from inserted i join slots s on p_event_ids[s.ev] = i.event_id;
  return query
    select g.k - 1, v_outcomes[g.k], v_out_heads[g.k], null::bigint, null::text, null::text, null::text, null::bigint,
           null::text, null::text, null::text, null::text, null::bigint, null::bigint, null::bigint, null::timestamptz,
           null::bigint, null::bigint, null::integer, null::text, null::text
      from generate_series(1, v_n) as g(k)
     where v_outcomes[g.k] <> 'reserved';
end
$fn$;

drop function if exists reserve_segment(bigint[], integer[], text[], text[], bigint[], integer[], text[], text[], text[], text[]);
create or replace function reserve_segment(
  p_log_ids bigint[], p_calls integer[],
  p_types text[], p_ids text[], p_expected bigint[], p_counts integer[],
  p_event_ids text[], p_event_types text[], p_content_hashes text[], p_ordering_keys text[],
  p_multi jsonb default '[]')
returns table (
  flush_segment bigint, item integer, part integer, outcome text, head bigint,
  log_id bigint, event_id text, aggregate_type text, aggregate_id text, seq bigint,
  event_type text, content_hash text, ordering_key text, state text, global_position bigint,
  batch_first_seq bigint, batch_last_seq bigint, committed_at timestamptz,
  segment bigint, segment_offset bigint, segment_length integer, chain_hash text, previous_hash text,
  call_id bigint)
language plpgsql as $fn$
#variable_conflict use_column
declare
  v_segment bigint;
  v_taken integer[] := '{}';
  v_new_types text[] := '{}';
  v_new_ids text[] := '{}';
  v_lock_types text[];
  v_lock_ids text[];
  v_lock_heads bigint[];
  v_lock_rows tid[];
  v_lock_created boolean[];
  v_singles int := coalesce(cardinality(p_types), 0);
  v_multis int := jsonb_array_length(coalesce(p_multi, '[]'));
  v_single int := 0;
  v_multi int := 0;
  v_from int := 1;
  v_to int;
  v_call jsonb;
begin
  insert into segments (state) values ('pending') returning segments.segment into v_segment;
  if cardinality(p_log_ids) > 0 then
    v_taken := take_slots(v_segment, p_log_ids, p_calls);
  end if;
  -- One statement locks every head row in the sorted order (it inserts them in that order),
  -- creating the missing ones, and reads each head.
  with wanted as (
    select u.t, u.i from unnest(p_types, p_ids) as u(t, i)
    union
    select s.t, s.i
      from jsonb_array_elements(coalesce(p_multi, '[]')) as m(call),
           rows from (jsonb_array_elements_text((m.call->'types') || coalesce(m.call->'check_types', '[]')),
                      jsonb_array_elements_text((m.call->'ids') || coalesce(m.call->'check_ids', '[]'))) as s(t, i)),
  locked as (
    insert into stream_heads as h (aggregate_type, aggregate_id, head)
    select w.t, w.i, 0 from wanted w order by w.t collate "C", w.i collate "C"
    on conflict (aggregate_type, aggregate_id) do update set head = h.head
    returning h.aggregate_type as t, h.aggregate_id as i, h.head as head, h.ctid as row_id, h.xmax = 0 as created)
  select coalesce(array_agg(l.t order by l.t collate "C", l.i collate "C"), '{}'),
         coalesce(array_agg(l.i order by l.t collate "C", l.i collate "C"), '{}'),
         coalesce(array_agg(l.head order by l.t collate "C", l.i collate "C"), '{}'),
         coalesce(array_agg(l.row_id order by l.t collate "C", l.i collate "C"), '{}'),
         coalesce(array_agg(l.created order by l.t collate "C", l.i collate "C"), '{}'),
         coalesce(array_agg(l.t) filter (where l.created), '{}'),
         coalesce(array_agg(l.i) filter (where l.created), '{}')
    into v_lock_types, v_lock_ids, v_lock_heads, v_lock_rows, v_lock_created, v_new_types, v_new_ids
    from locked l;
  if v_multis = 0 and v_singles > 0
     and not exists (select 1 from event_log e where e.event_id = any(p_event_ids) and e.state <> 'void')
     and (select count(distinct x.e) from unnest(p_event_ids) as x(e)) = cardinality(p_event_ids) then
    -- The usual flush: appends to one stream each, none a retry. Decided together, set-based.
    return query
      select v_segment, a.item, null::integer, a.outcome, a.head, a.log_id, a.event_id, a.aggregate_type, a.aggregate_id, a.seq,
             a.event_type, a.content_hash, a.ordering_key, a.state, a.global_position,
             a.batch_first_seq, a.batch_last_seq, a.committed_at, a.segment, a.segment_offset, a.segment_length,
             a.chain_hash, a.previous_hash, null::bigint
        from reserve_appends(v_segment, p_types, p_ids, p_expected, p_counts, p_event_ids, p_event_types,
                             p_content_hashes, p_ordering_keys, v_lock_types, v_lock_ids, v_lock_heads, v_lock_rows, v_lock_created) a;
    -- reserve_appends removed the head rows it left at 0.
    v_new_types := '{}';
    v_new_ids := '{}';
  else
    -- Otherwise each call in turn, as it would be reserved alone.
    for k in 0 .. v_singles + v_multis - 1 loop
      if v_multi < v_multis and (p_multi->v_multi->>'at')::int = k then
        v_call := p_multi->v_multi;
        v_multi := v_multi + 1;
        return query
          select v_segment, k, s.item, s.outcome, s.head, s.log_id, s.event_id, s.aggregate_type, s.aggregate_id, s.seq,
                 s.event_type, s.content_hash, s.ordering_key, s.state, s.global_position,
                 s.batch_first_seq, s.batch_last_seq, s.committed_at, s.segment, s.segment_offset, s.segment_length,
                 s.chain_hash, s.previous_hash, s.call_id
            from reserve_streams(text_array_of(v_call->'types'), text_array_of(v_call->'ids'), text_array_of(v_call->'expected')::bigint[],
                                 text_array_of(v_call->'counts')::integer[], text_array_of(v_call->'event_ids'), text_array_of(v_call->'event_types'),
                                 text_array_of(v_call->'content_hashes'), text_array_of(v_call->'ordering_keys'),
                                 text_array_of(v_call->'check_types'), text_array_of(v_call->'check_ids'), text_array_of(v_call->'check_expected')::bigint[],
                                 v_segment) s;
      else
        v_single := v_single + 1;
        v_to := v_from + p_counts[v_single] - 1;
        return query
          select v_segment, k, null::integer, s.outcome, s.head, s.log_id, s.event_id, s.aggregate_type, s.aggregate_id, s.seq,
                 s.event_type, s.content_hash, s.ordering_key, s.state, s.global_position,
                 s.batch_first_seq, s.batch_last_seq, s.committed_at, s.segment, s.segment_offset, s.segment_length,
                 s.chain_hash, s.previous_hash, null::bigint
            from reserve_slots(p_types[v_single], p_ids[v_single], p_expected[v_single], p_event_ids[v_from:v_to], p_event_types[v_from:v_to],
                               p_content_hashes[v_from:v_to], p_ordering_keys[v_from:v_to], v_segment) s;
        v_from := v_to + 1;
      end if;
    end loop;
  end if;
  -- Every outcome but a reservation leaves no head row behind (as reserve_slots and reserve_streams do alone).
  -- One row at a time, by key: an index lookup each, however young the table (see reserve_appends).
  for j in 1 .. cardinality(v_new_types) loop
    delete from stream_heads h where h.aggregate_type = v_new_types[j] and h.aggregate_id = v_new_ids[j] and h.head = 0;
  end loop;
  return query select v_segment, t.c, null::integer, 'taken'::text, null::bigint, null::bigint, null::text, null::text, null::text, null::bigint,
    null::text, null::text, null::text, null::text, null::bigint, null::bigint, null::bigint, null::timestamptz,
    null::bigint, null::bigint, null::integer, null::text, null::text, null::bigint
    from unnest(v_taken) as t(c);
  if cardinality(v_taken) = 0 and not exists (select 1 from event_log e where e.segment = v_segment) then
    update segments s set state = 'void', resolved_at = now() where s.segment = v_segment;
  end if;
end
$fn$;

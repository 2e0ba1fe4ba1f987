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
  v_created boolean;
  v_new_types text[] := '{}';
  v_new_ids text[] := '{}';
  v_singles int := coalesce(cardinality(p_types), 0);
  v_multis int := jsonb_array_length(coalesce(p_multi, '[]'));
  v_single int := 0;
  v_multi int := 0;
  v_from int := 1;
  v_to int;
  v_call jsonb;
  r record;
begin
  insert into segments (state) values ('pending') returning segments.segment into v_segment;
  if cardinality(p_log_ids) > 0 then
    v_taken := take_slots(v_segment, p_log_ids, p_calls);
  end if;
  for r in
    select d.t, d.i
      from (
        select u.t, u.i from unnest(p_types, p_ids) as u(t, i)
        union
        select s.t, s.i
          from jsonb_array_elements(coalesce(p_multi, '[]')) as m(call),
               rows from (jsonb_array_elements_text((m.call->'types') || coalesce(m.call->'check_types', '[]')),
                          jsonb_array_elements_text((m.call->'ids') || coalesce(m.call->'check_ids', '[]'))) as s(t, i)
      ) d
     order by d.t collate "C", d.i collate "C"
  loop
    insert into stream_heads as h (aggregate_type, aggregate_id, head)
    values (r.t, r.i, 0)
    on conflict (aggregate_type, aggregate_id) do update set head = h.head
    returning h.xmax = 0 into v_created;
    if v_created then
      v_new_types := v_new_types || r.t;
      v_new_ids := v_new_ids || r.i;
    end if;
  end loop;
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
  -- Every outcome but a reservation leaves no head row behind (as reserve_slots and reserve_streams do alone).
  delete from stream_heads h
   using unnest(v_new_types, v_new_ids) as n(t, i)
   where h.aggregate_type = n.t and h.aggregate_id = n.i and h.head = 0;
  return query select v_segment, t.c, null::integer, 'taken'::text, null::bigint, null::bigint, null::text, null::text, null::text, null::bigint,
    null::text, null::text, null::text, null::text, null::bigint, null::bigint, null::bigint, null::timestamptz,
    null::bigint, null::bigint, null::integer, null::text, null::text, null::bigint
    from unnest(v_taken) as t(c);
  if cardinality(v_taken) = 0 and not exists (select 1 from event_log e where e.segment = v_segment) then
    update segments s set state = 'void', resolved_at = now() where s.segment = v_segment;
  end if;
end
$fn$;

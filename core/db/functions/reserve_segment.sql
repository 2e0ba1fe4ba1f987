-- reserve_segment: a flush of the segment writer reserves the slots of the appends it holds and
-- takes their segment number, in one transaction in one round trip (docs/STORAGE.md "Write path").
--
-- The appends of a flush were not reserved one by one as they arrived: queued while the flushes
-- before them were out, they are reserved here together, into the segment the flush will PUT. So a
-- flush of n appends costs two round trips (this one and its commit) instead of n + 2, and an
-- event's row is written twice (reserved into its segment, committed) instead of three times.
--
-- Takes the next number from the segment counter (pending, as allocate_segment does, W5); takes
-- the calls of slots reserved before (p_log_ids and p_calls, as allocate_segment: AppendToStreams
-- calls, and appends reserved alone); then locks the head row of every aggregate appended to in
-- one order, by (aggregate_type, aggregate_id) byte-wise as reserve_streams does, so concurrent
-- flushes never deadlock, creating the missing ones; then reserves each append in turn with
-- reserve_slots (W3, W4, W7 unchanged: the same checks, in the order the appends were queued; an
-- append to a stream sees the appends before it in the same flush). The appends are given as
-- parallel arrays, one entry per append (p_expected null = "any", p_counts its number of events),
-- and their events concatenated in append order.
--
-- Returns, for every append (`item`, 0-based), reserve_slots's rows for it (reserved, existing,
-- conflict or head_behind), and for every call taken one row `taken` (`item` its call); each row
-- names the flush's segment (`flush_segment`; `segment` is the slot's own, for an existing one).
-- A head row this flush created for an aggregate no append reserved on is removed again. A flush
-- left with nothing to write gets its number voided at once.
--
-- Commits with a flush of the WAL, as allocate_segment: the segment is PUT only after this. An
-- error (a unique violation: an event id reserved at the same moment elsewhere, or a head behind
-- the log after a restore, W6) rolls the whole flush back; its appends are then reserved one by
-- one (core/event-log.ts reserveSlots repairs and decides), and go into a later flush.
--
-- Applied by the migrate step (core/db/sql-functions.ts) whenever this file changes: edit it in
-- place; a change of the signature or the result columns needs a `drop function` first.
create or replace function reserve_segment(
  p_log_ids bigint[], p_calls integer[],
  p_types text[], p_ids text[], p_expected bigint[], p_counts integer[],
  p_event_ids text[], p_event_types text[], p_content_hashes text[], p_ordering_keys text[])
returns table (
  flush_segment bigint, item integer, outcome text, head bigint,
  log_id bigint, event_id text, aggregate_type text, aggregate_id text, seq bigint,
  event_type text, content_hash text, ordering_key text, state text, global_position bigint,
  batch_first_seq bigint, batch_last_seq bigint, committed_at timestamptz,
  segment bigint, segment_offset bigint, segment_length integer, chain_hash text, previous_hash text)
language plpgsql as $fn$
#variable_conflict use_column
declare
  v_segment bigint;
  v_taken integer[] := '{}';
  v_created boolean;
  v_new_types text[] := '{}';
  v_new_ids text[] := '{}';
  v_from int := 1;
  v_to int;
  r record;
begin
  insert into segments (state) values ('pending') returning segments.segment into v_segment;
  if cardinality(p_log_ids) > 0 then
    v_taken := take_slots(v_segment, p_log_ids, p_calls);
  end if;
  for r in
    select d.t, d.i
      from (select distinct u.t, u.i from unnest(p_types, p_ids) as u(t, i)) d
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
  for k in 1 .. coalesce(cardinality(p_types), 0) loop
    v_to := v_from + p_counts[k] - 1;
    return query
      select v_segment, k - 1, s.outcome, s.head, s.log_id, s.event_id, s.aggregate_type, s.aggregate_id, s.seq,
             s.event_type, s.content_hash, s.ordering_key, s.state, s.global_position,
             s.batch_first_seq, s.batch_last_seq, s.committed_at, s.segment, s.segment_offset, s.segment_length,
             s.chain_hash, s.previous_hash
        from reserve_slots(p_types[k], p_ids[k], p_expected[k], p_event_ids[v_from:v_to], p_event_types[v_from:v_to],
                           p_content_hashes[v_from:v_to], p_ordering_keys[v_from:v_to], v_segment) s;
    v_from := v_to + 1;
  end loop;
  -- Every outcome but a reservation leaves no head row behind (as reserve_slots does alone).
  delete from stream_heads h
   using unnest(v_new_types, v_new_ids) as n(t, i)
   where h.aggregate_type = n.t and h.aggregate_id = n.i and h.head = 0;
  return query select v_segment, c, 'taken'::text, null::bigint, null::bigint, null::text, null::text, null::text, null::bigint,
    null::text, null::text, null::text, null::text, null::bigint, null::bigint, null::bigint, null::timestamptz,
    null::bigint, null::bigint, null::integer, null::text, null::text
    from unnest(v_taken) as c;
  if cardinality(v_taken) = 0 and not exists (select 1 from event_log e where e.segment = v_segment) then
    update segments s set state = 'void', resolved_at = now() where s.segment = v_segment;
  end if;
end
$fn$;

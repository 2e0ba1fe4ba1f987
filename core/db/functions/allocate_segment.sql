-- allocate_segment: a flush of the segment writer takes a segment number and its calls' slots, in
-- one transaction (docs/STORAGE.md).
--
-- Takes the next number from the segment counter (a row `pending` in `segments`, so the sweeper
-- closes it with a void marker if its writer never writes it, W5), then, per call of the flush
-- (p_calls gives each slot's call), associates the call's slots with the segment — only when every
-- slot of the call is still pending and in no segment: a call the sweeper closed meanwhile (its
-- writer too slow) is left out whole (W7). Returns the segment number and the calls it took; a flush
-- left with no call gets its number voided at once (there is nothing to write).
--
-- Commits with a flush of the WAL (unlike reserve_slots): the object is PUT only after this, so a
-- segment S3 holds is always known here, and a crash cannot make PostgreSQL forget a written one.
--
-- A flush holding appends not reserved yet uses reserve_segment.sql instead, which reserves them
-- into the segment in the same transaction.
--
-- Applied by the migrate step (core/db/sql-functions.ts) whenever this file changes: edit it in
-- place; a change of the signature or the result columns needs a `drop function` first.

-- take_slots: the part shared with reserve_segment.sql — puts into p_segment the calls of slots
-- reserved before (p_calls gives each slot's call) whose slots are all still pending and in no
-- segment, and returns the calls it took.
create or replace function take_slots(p_segment bigint, p_log_ids bigint[], p_calls integer[])
returns integer[]
language plpgsql as $fn$
declare
  v_taken integer[];
begin
  perform 1 from event_log e where e.log_id = any(p_log_ids) order by e.log_id for update;
  select coalesce(array_agg(t.call), '{}') into v_taken
    from (
      select u.call
        from unnest(p_log_ids, p_calls) as u(log_id, call)
        left join event_log e on e.log_id = u.log_id
       group by u.call
      having bool_and(e.log_id is not null and e.state = 'pending' and e.segment is null)
    ) t;
  update event_log e
     set segment = p_segment
    from unnest(p_log_ids, p_calls) as u(log_id, call)
   where e.log_id = u.log_id and u.call = any(v_taken);
  return v_taken;
end
$fn$;

create or replace function allocate_segment(p_log_ids bigint[], p_calls integer[])
returns table (segment bigint, call integer)
language plpgsql as $fn$
#variable_conflict use_column
declare
  v_segment bigint;
  v_taken integer[];
begin
  insert into segments (state) values ('pending') returning segments.segment into v_segment;
  v_taken := take_slots(v_segment, p_log_ids, p_calls);
  if cardinality(v_taken) = 0 then
    update segments s set state = 'void', resolved_at = now() where s.segment = v_segment;
    return query select v_segment, null::integer where false;
    return;
  end if;
  return query select v_segment, c from unnest(v_taken) as c;
end
$fn$;

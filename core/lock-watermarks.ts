/**
 * The watermark locks every application of a consumer takes (docs/CONTRACT.md C2, C8), and the
 * operator's replay request with them (C9): one row per (handler, aggregate) in consumer_watermarks,
 * locked in key order. Used by consumers/registry.ts and core/dead-letters.ts.
 */
import { sql, type Transaction } from "kysely";
import type { ConsumerDatabase } from "./db/schema.js";

/** The key of an aggregate in the maps of the registry's callers (`type \0 id`: no id holds a NUL). */
export function aggregateKey(aggregateType: string, aggregateId: string): string {
  return `${aggregateType}\u0000${aggregateId}`;
}

/**
 * Locks the watermark rows of several aggregates of one handler (creating missing ones), in key order (so two
 * transactions locking overlapping sets cannot deadlock): returns the applied seq of each
 * aggregate by {@link aggregateKey}, 0 for none.
 */
export async function lockWatermarks(tx: Transaction<ConsumerDatabase>, handler: string, aggregates: ReadonlyArray<{ aggregateType: string; aggregateId: string }>): Promise<Map<string, number>> {
  const wanted = [...new Map(aggregates.map((a) => [aggregateKey(a.aggregateType, a.aggregateId), a])).entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const types = wanted.map(([, a]) => a.aggregateType);
  const ids = wanted.map(([, a]) => a.aggregateId);
  const applied = new Map<string, number>();
  for (let round = 0; applied.size < wanted.length; round++) {
    if (round === 5) throw new Error(`${handler}: could not lock the watermarks of ${wanted.length} aggregates`);
    // New rows are inserted (and so locked) by this statement; existing ones are locked in key
    // order. One statement's snapshot misses a row a concurrent transaction inserts and commits
    // in between: then neither part returns it, and the loop asks again.
    const { rows } = await sql<{ aggregate_type: string; aggregate_id: string; applied_seq: number }>`
      with wanted as (
        select t.aggregate_type, t.aggregate_id from unnest(${types}::text[], ${ids}::text[]) as t(aggregate_type, aggregate_id)
      ), inserted as (
        insert into consumer_watermarks (handler, aggregate_type, aggregate_id, applied_seq)
        select ${handler}::text, w.aggregate_type, w.aggregate_id, 0 from wanted w
        on conflict do nothing
        returning aggregate_type, aggregate_id, applied_seq
      ), locked as (
        select m.aggregate_type, m.aggregate_id, m.applied_seq from consumer_watermarks m
        where m.handler = ${handler} and (m.aggregate_type, m.aggregate_id) in (select aggregate_type, aggregate_id from wanted)
        order by m.aggregate_type, m.aggregate_id
        for update
      )
      select aggregate_type, aggregate_id, applied_seq from inserted
      union all
      select aggregate_type, aggregate_id, applied_seq from locked`.execute(tx);
    for (const r of rows) applied.set(aggregateKey(r.aggregate_type, r.aggregate_id), Number(r.applied_seq));
  }
  return applied;
}

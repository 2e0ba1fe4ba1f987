/**
 * The user handler's external effect log: one row per application of an event, in its own schema
 * of the run's database. There is deliberately no unique constraint, so an effect applied twice
 * shows as two rows instead of being refused.
 */
import type pg from "pg";

/** The effect log table, schema-qualified (the handler's transaction has Tidemark's search_path). */
export const EFFECTS_TABLE = "chaos.effects";

/** The handler's name: its registry key and, with the default prefix, its consumer group suffix. */
export const CHAOS_HANDLER = "chaos-effects";

/** Creates the effect log when it is missing. */
export async function createEffectsTable(client: pg.ClientBase | pg.Pool): Promise<void> {
  await client.query(`create schema if not exists chaos`);
  await client.query(`create table if not exists ${EFFECTS_TABLE} (
    n bigserial primary key,
    handler text not null,
    event_id text not null,
    aggregate_type text not null,
    aggregate_id text not null,
    seq bigint not null,
    global_position bigint not null,
    attempt int not null,
    applied_at timestamptz not null default clock_timestamp())`);
}

/** One row of the effect log. */
export interface EffectRow {
  readonly n: number;
  readonly handler: string;
  readonly eventId: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly seq: number;
}

/** Every effect, in the order they were written (`n`). */
export async function readEffects(client: pg.ClientBase | pg.Pool): Promise<EffectRow[]> {
  const { rows } = await client.query<{ n: string; handler: string; event_id: string; aggregate_type: string; aggregate_id: string; seq: string }>(
    `select n, handler, event_id, aggregate_type, aggregate_id, seq from ${EFFECTS_TABLE} order by n`,
  );
  return rows.map((r) => ({ n: Number(r.n), handler: r.handler, eventId: r.event_id, aggregateType: r.aggregate_type, aggregateId: r.aggregate_id, seq: Number(r.seq) }));
}

/**
 * True for about one event in twenty, by its id: such an event's first attempt fails after its
 * effect was written, as with a flaky downstream call, so retries (C3) are part of every run.
 */
export function flakyOnFirstAttempt(eventId: string): boolean {
  let h = 2166136261;
  for (let i = 0; i < eventId.length; i++) h = Math.imul(h ^ eventId.charCodeAt(i), 16777619) >>> 0;
  return h % 20 === 0;
}

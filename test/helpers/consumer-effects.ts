/**
 * The side effect of consumer tests: one row in `effects` per application of an event, written in
 * the handler's transaction (so it rolls back with it). Free of vitest imports: child processes use it.
 */
import { sql, type Kysely, type Transaction } from "kysely";
import { defineHandler, type Handler } from "../../consumers/index.js";

/** Creates the `effects` table (one row per application of an event) when it is missing. */
export async function createEffectsTable(db: Kysely<any>): Promise<void> {
  await sql`create table if not exists effects (
    n bigserial primary key, handler text not null, event_id text not null, seq bigint not null,
    aggregate_id text not null, at timestamptz not null default clock_timestamp())`.execute(db);
}

/** Records one side effect in the handler's transaction (rolled back with it). */
export async function recordEffect(tx: Transaction<any> | Kysely<any>, handler: string, eventId: string, seq: number, aggregateId: string): Promise<void> {
  await sql`insert into effects (handler, event_id, seq, aggregate_id) values (${handler}, ${eventId}, ${seq}, ${aggregateId})`.execute(tx);
}

/** A handler whose side effect is a row in `effects`; `before` runs first (gates, failures). */
export function effectHandler(name: string, before?: (eventId: string, attempt: number) => Promise<void>): Handler {
  return defineHandler({
    name,
    async handle(event, tx, context) {
      await before?.(event.eventId, context.attempt);
      await recordEffect(tx, name, event.eventId, event.seq, event.aggregateId);
    },
  });
}


/**
 * The same handler with `handleBatch`: a group runs `handle` for each of its events, in order, in
 * the group's one transaction. Runs the contract suites through the runtime's group path (claim
 * many, one transaction, fall back to one by one on any failure) with unchanged expectations.
 */
export function grouped<DB>(handler: Handler<DB>): Handler<DB> {
  return defineHandler<DB>({
    ...handler,
    async handleBatch(events, tx, context) {
      for (const event of events) {
        await handler.handle(event, tx, { attempt: 1, signal: context.signal, log: context.log, traceparent: event.traceparent });
      }
    },
  });
}

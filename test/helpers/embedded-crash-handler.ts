/**
 * A handler module for `tidemark start --consumer` in crash tests: it records each application of a
 * `Crash` event in `crash_effects` (in the registry's transaction, so it rolls back with it), and
 * for the event named by TIDEMARK_TEST_BLOCK_EVENT prints `{"blocked": …}` and hangs inside the
 * transaction, so the test can kill -9 the process exactly there. Events of aggregates `hang-*`
 * hang on every attempt and ignore the abort signal: a handler that never returns.
 */
import { sql } from "kysely";
import { defineHandler } from "../../consumers/index.js";

export default defineHandler({
  name: "crashy",
  aggregateTypes: ["Crash"],
  async handle(event, tx, context) {
    await sql`create table if not exists crash_effects (event_id text not null, attempt integer not null)`.execute(tx);
    await sql`insert into crash_effects (event_id, attempt) values (${event.eventId}, ${context.attempt})`.execute(tx);
    if (event.aggregateId.startsWith("hang-")) await new Promise(() => {});
    if (process.env["TIDEMARK_TEST_BLOCK_EVENT"] === event.eventId) {
      process.stdout.write(`${JSON.stringify({ blocked: event.eventId, attempt: context.attempt })}\n`);
      await new Promise(() => {});
    }
  },
});

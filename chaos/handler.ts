/**
 * The chaos run's user handler, run as users run theirs: `tidemark consumer ./chaos/handler.ts`.
 * Its side effect is a row in the effect log written in the handler's transaction, so it commits
 * with "done" or not at all (C1). About one event in twenty fails its first attempt after writing
 * the row, which the rollback undoes and the retry writes again (C3).
 *
 * `CHAOS_PLANT=double-apply` plants the classic bug: the row is written on a connection of the
 * handler's own, outside the registry's transaction, so a failed attempt leaves its row behind
 * and the retry adds a second one. The checker must report those as duplicate side effects.
 */
import { CompiledQuery, type Transaction } from "kysely";
import pg from "pg";
import { CHAOS_HANDLER, EFFECTS_TABLE, flakyOnFirstAttempt } from "./effects.js";

// A user module reads its own settings; Tidemark passes its environment through.
const plant = process.env["CHAOS_PLANT"] ?? "";
const outside = plant === "double-apply" ? new pg.Pool({ connectionString: process.env["CHAOS_EFFECTS_PG_URL"], max: 4 }) : undefined;

interface Event {
  readonly eventId: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly seq: number;
  readonly globalPosition: number;
}

const INSERT = `insert into ${EFFECTS_TABLE} (handler, event_id, aggregate_type, aggregate_id, seq, global_position, attempt) values ($1, $2, $3, $4, $5, $6, $7)`;

export default {
  name: CHAOS_HANDLER,
  async handle(event: Event, tx: Transaction<unknown>, context: { readonly attempt: number }): Promise<void> {
    const values = [CHAOS_HANDLER, event.eventId, event.aggregateType, event.aggregateId, event.seq, event.globalPosition, context.attempt];
    if (outside !== undefined) await outside.query(INSERT, values);
    else await tx.executeQuery(CompiledQuery.raw(INSERT, values));
    if (context.attempt === 1 && flakyOnFirstAttempt(event.eventId)) throw new Error("chaos: the downstream call timed out (planned, first attempt only)");
  },
};

/**
 * Gives the planner statistics for a benchmark's schema, as autovacuum does within about a minute
 * of a real store starting to take writes. Without it the measured windows (seconds after the
 * schema was created) run on plans PL/pgSQL cached while the tables were empty: commit_slots then
 * joined the commit log by sequential scan, about 1 300 rows read per event at concurrency 8.
 * ANALYZE also invalidates those cached plans, so every connection plans again with the numbers.
 */
import { sql, type Kysely } from "kysely";

/** The write-side tables whose statistics the append path's plans depend on. */
const TABLES = ["event_log", "stream_heads", "global_counter"] as const;

/** Runs ANALYZE on the write-side tables of `schema`. */
export async function analyzeSchema(db: Kysely<any>, schema: string): Promise<void> {
  for (const table of TABLES) await sql`analyze ${sql.id(schema, table)}`.execute(db);
}

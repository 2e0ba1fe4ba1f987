/**
 * Pages a statement reads, from PostgreSQL's statistics views: for tests that a statement's cost
 * does not grow with a table (heap pages, and the table's index pages when asked). A backend
 * reports its counts within a second; `onFlushedConnection` reports them at once.
 */
import { sql, type Kysely } from "kysely";

/** Pages of `table` read so far (hits and reads): its heap's, plus its indexes' with `withIndexes`. */
export async function pagesRead(db: Kysely<any>, table: string, withIndexes = false): Promise<number> {
  const { rows } = await sql<{ heap: string | null; idx: string | null }>`
    select heap_blks_read + heap_blks_hit as heap, idx_blks_read + idx_blks_hit as idx
    from pg_statio_user_tables where relid = ${table}::regclass`.execute(db);
  return Number(rows[0]!.heap ?? 0) + (withIndexes ? Number(rows[0]!.idx ?? 0) : 0);
}

/** Runs `work` on one connection of `db`, whose page counts then reach the statistics views at once. */
export async function onFlushedConnection<DB, T>(db: Kysely<DB>, work: (db: Kysely<DB>) => Promise<T>): Promise<T> {
  return db.connection().execute(async (c) => {
    const out = await work(c);
    await sql`select pg_stat_force_next_flush()`.execute(c);
    return out;
  });
}

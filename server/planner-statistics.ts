/**
 * Keeps PostgreSQL's planner statistics of the write path's tables current while they are young
 * (docs/OPERATIONS.md "PostgreSQL").
 *
 * The reserve and commit functions (core/db/functions/) run as PL/pgSQL, whose statement plans are
 * made once per connection and kept: made on a table that is new — never analysed, a few pages —
 * a plan that scans it (cheaper than an index while it is that small) goes on scanning it as it
 * grows, until an ANALYZE invalidates the plan. Autovacuum analyses a table once 50 rows and 10 %
 * of it changed, but only at its next round (`autovacuum_naptime`, a minute by default): a store's
 * first minute, a benchmark's whole run. A bench server on a fresh schema read 3.6 million
 * `event_log` rows by sequential scans in 14 s of appends (`pg_stat_user_tables`).
 *
 * So each server analyses `event_log`, `stream_heads` and `segments` itself whenever one has at
 * least doubled in size since it was last analysed: checked after this process has committed 512
 * events, then 1 024, 2 048, … up to about a million, by which time autovacuum has long taken
 * over. A check is one catalog query; an ANALYZE samples at most 30 000 rows and takes no lock that
 * appends wait for. Several servers may analyse the same table at once: harmless.
 */
import { sql, type Kysely } from "kysely";
import type { Logger, WriteSideTables } from "../core/index.js";

/** The tables whose plans the write path depends on. */
export const WRITE_PATH_TABLES = ["event_log", "stream_heads", "segments"] as const;

/** A table is analysed once it holds at least this many pages (8 KiB each) and twice those of its last analysis. */
const MIN_PAGES = 8;
/** The first check, after this many committed events; each next one after twice as many. */
const FIRST_CHECK = 512;
/** No check after this many committed events: autovacuum keeps the statistics from there on. */
const LAST_CHECK = 1 << 20;

/**
 * Analyses each of `tables` that holds at least twice the pages it held when last analysed (and
 * at least MIN_PAGES). Returns the names analysed.
 */
export async function analyzeGrownTables(db: Kysely<WriteSideTables>, tables: readonly string[] = WRITE_PATH_TABLES): Promise<string[]> {
  const { rows } = await sql<{ name: string; analysed: number; pages: number }>`
    select c.relname as name, c.relpages as analysed, (pg_relation_size(c.oid) / current_setting('block_size')::int)::int as pages
      from unnest(${[...tables]}::text[]) as t(name)
      join pg_class c on c.oid = to_regclass(t.name)`.execute(db);
  const grown = rows.filter((r) => Number(r.pages) >= MIN_PAGES && Number(r.pages) >= 2 * Number(r.analysed)).map((r) => r.name);
  for (const name of grown) await sql`analyze ${sql.id(name)}`.execute(db);
  return grown;
}

/** Runs {@link analyzeGrownTables} as this process's commits double, in the background, one at a time. */
export class PlannerStatistics {
  private next = FIRST_CHECK;
  private running = false;
  private timer: NodeJS.Timeout | undefined;
  /** Tables analysed so far (for metrics and tests). */
  analysed = 0;

  constructor(
    private readonly db: Kysely<WriteSideTables>,
    private readonly log: Logger,
    /** Events this process has committed so far. */
    private readonly committed: () => number,
    private readonly intervalMs = 250,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.tick(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  private tick(): void {
    const committed = this.committed();
    if (this.running || committed < this.next) return;
    while (this.next <= committed) this.next *= 2;
    // This check is the last: autovacuum keeps the statistics from here on.
    if (this.next > LAST_CHECK) this.stop();
    this.running = true;
    analyzeGrownTables(this.db)
      .then((tables) => {
        this.analysed += tables.length;
        if (tables.length > 0) this.log.info({ tables, committed }, "analysed the write path's young tables (their cached plans are made again)");
      })
      .catch((e: unknown) => this.log.warn({ err: e }, "analysing the write path's tables failed; autovacuum will"))
      .finally(() => {
        this.running = false;
      });
  }
}

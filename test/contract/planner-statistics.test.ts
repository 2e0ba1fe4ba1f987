/**
 * A young store keeps its planner statistics current (server/planner-statistics.ts,
 * docs/OPERATIONS.md "PostgreSQL planner statistics on a young store"): a write-path table that
 * has doubled in size since its last analysis is analysed, one that has not is left alone, and a
 * server analyses its own tables as its commits grow. Both storages.
 */
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { analyzeGrownTables } from "../../server/planner-statistics.js";
import { startTestServer, testServerConfig, type TestServer } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";

let off: TestServer;
let on: TestServer;
beforeAll(async () => {
  [off, on] = await Promise.all([startTestServer(testServerConfig({ TIDEMARK_PG_ANALYZE_YOUNG_TABLES: "false" })), startTestServer()]);
});
afterAll(async () => {
  await Promise.all([off?.close(), on?.close()]);
});

const any = { case: "any", value: {} } as const;

/** `calls` appends of 100 one-KiB events each, to fresh streams. */
async function appendMany(t: TestServer, prefix: string, calls: number): Promise<void> {
  for (let c = 0; c < calls; c++) {
    const events = Array.from({ length: 100 }, (_, i) => ({ eventId: `${prefix}-${c}-${i}`, eventType: "Noted", data: { n: i, pad: "x".repeat(1000) } as never }));
    await t.events.appendEvents({ aggregateType: "Order", aggregateId: `${prefix}-${c}`, expectation: any, events });
  }
}

/** The pages `table` held when last analysed (0: never). */
async function analysedPages(t: TestServer, table: string): Promise<number> {
  const { rows } = await sql<{ pages: number }>`select relpages as pages from pg_class where oid = to_regclass(${table})`.execute(t.server.database.db);
  return Number(rows[0]!.pages);
}

describe("planner statistics of the write path's tables", () => {
  it("analyses a table that has doubled since its last analysis, and leaves it alone until it doubles again", async () => {
    const db = off.server.database.db;
    expect(await analysedPages(off, "event_log")).toBe(0);
    await appendMany(off, "ps-a", 3);
    expect(await analyzeGrownTables(db)).toContain("event_log");
    const pages = await analysedPages(off, "event_log");
    expect(pages).toBeGreaterThanOrEqual(8);
    // Not doubled since: nothing to do.
    expect(await analyzeGrownTables(db)).not.toContain("event_log");
    expect(await analysedPages(off, "event_log")).toBe(pages);
    // The server with the setting off never analysed it by itself: still the pages of our analysis.
    await appendMany(off, "ps-b", 6);
    expect(await analysedPages(off, "event_log")).toBe(pages);
    expect(await analyzeGrownTables(db)).toContain("event_log");
    expect(await analysedPages(off, "event_log")).toBeGreaterThanOrEqual(2 * pages);
  });

  it("a server analyses its own young tables as its commits pass 512, 1 024, …", async () => {
    expect(await analysedPages(on, "event_log")).toBe(0);
    await appendMany(on, "ps-c", 6);
    await waitFor(async () => (await analysedPages(on, "event_log")) > 0, { what: "the server to analyse event_log" });
    // Counted for operators.
    const metric = await waitFor(async () => {
      const text = await on.server.registry.getSingleMetricAsString("tidemark_pg_young_table_analyses_total");
      const value = Number(/ (\d+)$/m.exec(text)?.[1] ?? 0);
      return value > 0 && value;
    }, { what: "the analyses to be counted" });
    expect(metric).toBeGreaterThanOrEqual(1);
  });
});

/**
 * One flush reserves at a time (server/segment-writer.ts): while a flush's reservation waits — here
 * on a head row another transaction holds — the appends after it queue instead of starting a second
 * reservation beside it, and then go into the next segment together, although a second flush place
 * is free (TIDEMARK_SEGMENT_MAX_IN_FLIGHT 2, the default). Services only: the held row lock needs a
 * second connection, which the embedded database does not have.
 */
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t?.close();
});

const noted = (eventId: string) => ({ eventId, eventType: "Noted", data: { n: 1 } as never });
const any = { case: "any", value: {} } as const;

describe("segment writer", () => {
  it("starts the next flush only once the one before it has reserved, with everything queued meanwhile", async () => {
    const db = t.server.database.db;
    const stats = t.server.store.segmentStats;
    await t.events.appendEvents({ aggregateType: "Order", aggregateId: "fo-locked", expectation: any, events: [noted("fo-0")] });
    expect(stats.inFlight).toBe(0);
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let locked!: () => void;
    const holding = new Promise<void>((r) => (locked = r));
    const holder = db.transaction().execute(async (tx) => {
      await sql`select 1 from stream_heads where aggregate_type = 'Order' and aggregate_id = 'fo-locked' for update`.execute(tx);
      locked();
      await released;
    });
    await holding;
    try {
      await flushesAfterTheHeldOne(release);
    } finally {
      release();
      await holder;
    }
  });
});

/** The part of the test that runs while the head row of fo-locked is held; `release` lets it go. */
async function flushesAfterTheHeldOne(release: () => void): Promise<void> {
  const db = t.server.database.db;
  const stats = t.server.store.segmentStats;
  const before = stats.segments;
  // This flush's reservation waits for the row lock.
  const first = t.events.appendEvents({ aggregateType: "Order", aggregateId: "fo-locked", expectation: any, events: [noted("fo-1")] });
  await waitFor(() => stats.inFlight === 1 && stats.queued === 0, { what: "the first flush to reserve" });
  const others = ["fo-a", "fo-b", "fo-c"].map((id) => t.events.appendEvents({ aggregateType: "Order", aggregateId: id, expectation: any, events: [noted(`${id}-1`)] }));
  // With a second reservation allowed beside the first, they would be in flight now, not queued.
  await waitFor(() => stats.queued === 3, { what: "the appends after it to queue" });
  expect(stats.inFlight).toBe(1);
  release();
  const answers = await Promise.all([first, ...others]);
  expect(answers.map((a) => Number(a.events[0]!.sequenceNumber))).toEqual([2, 1, 1, 1]);
  const rows = await db.selectFrom("event_log").select(["event_id", "segment"]).where("event_id", "in", ["fo-1", "fo-a-1", "fo-b-1", "fo-c-1"]).orderBy("event_id").execute();
  const segmentOf = new Map(rows.map((r) => [r.event_id, Number(r.segment)]));
  expect(new Set(["fo-a-1", "fo-b-1", "fo-c-1"].map((id) => segmentOf.get(id))).size).toBe(1);
  expect(segmentOf.get("fo-a-1")).not.toBe(segmentOf.get("fo-1"));
  expect(stats.segments - before).toBe(2);
}

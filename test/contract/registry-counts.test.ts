/**
 * The registry's kept counts (migration 2026-12-04-01-registry-counts), which ListHandlers reads
 * instead of counting every registry row: through every way a row is written — claims (new, retry
 * takeovers), outcomes of a group, retries, dead letters, lease renewals, replay requests,
 * discards, pruning — the counts equal a count of the rows, before and after housekeeping folds
 * the deltas; a handler whose rows are all pruned stays listed with its applied position.
 */
import type { Kysely } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ConsumerDatabase } from "../../core/db/schema.js";
import { discardDeadLetters, requestReplay } from "../../core/dead-letters.js";
import { handlerCounts, handlerCountsByScan, type HandlerCounts } from "../../core/inspection.js";
import type { RegistryEvent } from "../../core/processing-status.js";
import { claimEvents, finishClaims, foldRegistryCounts, markDeadLettered, pruneDone, renewLeases, scheduleRetry, type Claim } from "../../consumers/registry.js";
import { InspectionService } from "../../gen/tidemark/v1/inspection_pb.js";
import { createClient } from "../../server/grpc/client.js";
import { startTestServer, type TestServer } from "../helpers/test-server.js";

let t: TestServer;
let db: Kysely<ConsumerDatabase>;

beforeAll(async () => {
  t = await startTestServer();
  db = t.server.database.db as unknown as Kysely<ConsumerDatabase>;
});

afterAll(async () => {
  await t?.close();
});

const OWNER = "counts-test";
const LEASE_MS = 60_000;

/** Event `i` of `handler`: its own aggregate, seq 1, at global position `i + 1`. */
function event(handler: string, i: number): RegistryEvent {
  return { handler, eventId: `${handler}-e${i}`, aggregateType: "Counted", aggregateId: `agg-${i}`, seq: 1, globalPosition: i + 1, eventType: "Happened", commandId: null };
}

async function claimed(handler: string, from: number, to: number): Promise<Claim[]> {
  const events = Array.from({ length: to - from }, (_, k) => event(handler, from + k));
  const granted = await claimEvents(db, handler, OWNER, LEASE_MS, events);
  expect(granted.size).toBe(events.length);
  return events.map((e) => granted.get(e.eventId)!);
}

const rowsOf = (h: HandlerCounts) => h.processing + h.retryScheduled + h.deadLettered + h.done + h.skippedStale + h.parked + h.replayRequested + h.discarded;
const withoutTime = ({ lastUpdatedAt: _, ...rest }: HandlerCounts) => rest;

/** The kept counts of `handler` after checking that every handler's equal a count of its rows. */
async function agreed(handler: string): Promise<Omit<HandlerCounts, "lastUpdatedAt">> {
  const kept = await handlerCounts(db);
  const scanned = await handlerCountsByScan(db);
  expect(kept.filter((h) => rowsOf(h) > 0).map(withoutTime)).toEqual(scanned.map(withoutTime));
  return withoutTime(kept.find((h) => h.handler === handler)!);
}

const NONE = { processing: 0, retryScheduled: 0, deadLettered: 0, done: 0, skippedStale: 0, parked: 0, replayRequested: 0, discarded: 0 };
const MESSAGE = { topic: "t", partition: 0, offset: "0", value: null, headers: {} };

describe("the registry's kept counts", () => {
  it("equal a count of the rows through every kind of registry write, folded or not", async () => {
    const a = await claimed("counts-a", 0, 30);
    expect(await agreed("counts-a")).toEqual({ handler: "counts-a", ...NONE, processing: 30, appliedPosition: 0 });

    await db.transaction().execute((tx) =>
      finishClaims(tx, [...a.slice(0, 20).map((claim) => ({ claim, state: "done" as const })), ...a.slice(20, 23).map((claim) => ({ claim, state: "skipped_stale" as const }))]),
    );
    expect(await agreed("counts-a")).toEqual({ handler: "counts-a", ...NONE, processing: 7, done: 20, skippedStale: 3, appliedPosition: 23 });

    for (const claim of a.slice(23, 25)) expect(await scheduleRetry(db, claim, 0, "try again")).toBe(true);
    for (const claim of a.slice(25, 27)) expect(await markDeadLettered(db, claim, "poison", MESSAGE)).toBe(true);
    // A lease renewal moves no row between states.
    expect(await renewLeases(db, a.slice(27), LEASE_MS)).toBe(3);
    expect(await agreed("counts-a")).toEqual({ handler: "counts-a", ...NONE, processing: 3, retryScheduled: 2, deadLettered: 2, done: 20, skippedStale: 3, appliedPosition: 23 });

    // Housekeeping's fold moves the deltas into the counts: the same figures, no delta left.
    expect(await foldRegistryCounts(db)).toBeGreaterThan(0);
    expect(Number((await db.selectFrom("registry_count_deltas").select((eb) => eb.fn.countAll<string>().as("n")).executeTakeFirstOrThrow()).n)).toBe(0);
    expect(await agreed("counts-a")).toEqual({ handler: "counts-a", ...NONE, processing: 3, retryScheduled: 2, deadLettered: 2, done: 20, skippedStale: 3, appliedPosition: 23 });

    // A due retry taken over by a claim (an update of the claim's upsert), an operator's replay
    // request and discard, and a second handler.
    await claimed("counts-a", 23, 24);
    expect(await requestReplay(db, "counts-a", { type: "event", eventId: "counts-a-e25" }, "ops")).toEqual(["counts-a-e25"]);
    expect(await discardDeadLetters(db, "counts-a", { type: "event", eventId: "counts-a-e26" }, "ops", "by design")).toEqual(["counts-a-e26"]);
    const b = await claimed("counts-b", 100, 110);
    await db.transaction().execute((tx) => finishClaims(tx, b.map((claim) => ({ claim, state: "done" as const }))));
    expect(await agreed("counts-a")).toEqual({ handler: "counts-a", ...NONE, processing: 4, retryScheduled: 1, replayRequested: 1, discarded: 1, done: 20, skippedStale: 3, appliedPosition: 23 });
    expect(await agreed("counts-b")).toEqual({ handler: "counts-b", ...NONE, done: 10, appliedPosition: 110 });

    // Pruning every done row: counts-b has none left, and stays listed with how far it applied the
    // log (a count of its rows no longer knows it).
    expect(await pruneDone(db, { retentionMs: 0 })).toBe(30);
    expect(await agreed("counts-a")).toEqual({ handler: "counts-a", ...NONE, processing: 4, retryScheduled: 1, replayRequested: 1, discarded: 1, skippedStale: 3, appliedPosition: 23 });
    expect(await agreed("counts-b")).toEqual({ handler: "counts-b", ...NONE, appliedPosition: 110 });
    expect((await handlerCountsByScan(db)).map((h) => h.handler)).not.toContain("counts-b");

    // ListHandlers serves the kept counts.
    const inspection = createClient(InspectionService, t.server.address);
    try {
      const listed = (await inspection.listHandlers({})).handlers.find((h) => h.handler === "counts-a")!;
      expect({ processing: listed.processing, skipped: listed.skippedStale, done: listed.done, applied: listed.appliedPosition, at: listed.lastUpdatedAt !== undefined }).toEqual({
        processing: 4n,
        skipped: 3n,
        done: 0n,
        applied: 23n,
        at: true,
      });
    } finally {
      inspection.close();
    }
  });
});

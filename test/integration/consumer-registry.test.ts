/**
 * The processed-event registry against real PostgreSQL: concurrent claims (exactly one wins),
 * fencing of a holder whose lease expired (its side effect rolls back), leases on the database
 * clock, the cross-worker ordering guard, and housekeeping that prunes only old `done` rows while
 * the watermark still recognises a redelivered old event (C1, C2, C4, C7). And the registry's
 * statements whose cost must not grow with its tables (counted in heap pages read): the claim's
 * ordering guard, the prune, the watermarks GetProcessingStatus reads.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Kysely, type RawBuilder, sql } from "kysely";
import type { Database } from "../../core/db/database.js";
import { handlerCounts, handlerCountsByScan } from "../../core/inspection.js";
import { isLeaseLostError, pruneDone, startConsumer } from "../../consumers/index.js";
import {
  claimEvent,
  claimEvents,
  finishClaim,
  finishClaims,
  lockWatermark,
  lockWatermarks,
  renewLease,
  renewLeases,
  scheduleRetry,
  type Claim,
  type ClaimRequest,
} from "../../consumers/registry.js";
import { consumerTestConfig, consumerTestId, dropTestDatabase, effectCounts, effectHandler, openTestDatabase, recordEffect, registryRow, testEnvelope } from "../helpers/consumer-env.js";
import { openTestKafka, type TestKafka } from "../helpers/consumer-kafka.js";
import { onFlushedConnection, pagesRead } from "../helpers/pages-read.js";
import { waitFor } from "../helpers/wait-for.js";
import { type ConsumerDatabase, watermarksOf } from "../../core/index.js";

const id = consumerTestId("creg");
let database: Database<ConsumerDatabase>;

beforeAll(async () => {
  database = await openTestDatabase(id);
});
afterAll(async () => {
  await dropTestDatabase(database);
});

const request = (eventId: string, seq: number, extra: Partial<ClaimRequest> = {}): ClaimRequest => ({
  handler: "reg",
  eventId,
  aggregateType: "Task",
  aggregateId: extra.aggregateId ?? "agg",
  seq,
  globalPosition: null,
  eventType: "Noted",
  commandId: null,
  owner: "worker-a",
  leaseMs: 30_000,
  ...extra,
});

async function claimed(eventId: string, seq: number, extra: Partial<ClaimRequest> = {}): Promise<Claim> {
  const outcome = await claimEvent(database.db, request(eventId, seq, extra));
  if (outcome.type !== "claimed") throw new Error(`expected a claim, got ${JSON.stringify(outcome)}`);
  return outcome.claim;
}

/** The side effect and "done" in one transaction, as the runtime does it. */
async function applyAndFinish(claim: Claim, beforeFinish?: () => Promise<void>): Promise<void> {
  await database.db.transaction().execute(async (tx) => {
    await lockWatermark(tx, claim.handler, claim.aggregateType, claim.aggregateId);
    await recordEffect(tx, claim.handler, claim.eventId, claim.seq, claim.aggregateId);
    await beforeFinish?.();
    await finishClaim(tx, claim, "done");
  });
}

/** Waits until the database clock is past the claim's lease. */
async function untilLeaseExpired(eventId: string): Promise<void> {
  await waitFor(async () => {
    const { rows } = await sql<{ expired: boolean }>`
      select lease_expires_at <= clock_timestamp() as expired from processed_events where handler = 'reg' and event_id = ${eventId}`.execute(database.db);
    return rows[0]?.expired === true;
  }, { what: "the lease to expire on the database clock" });
}

const heapPages = (table: string) => pagesRead(database.db, table);
const counted = <T>(work: (db: Kysely<ConsumerDatabase>) => Promise<T>) => onFlushedConnection(database.db, work);

/**
 * Fills `table` by `insert` (a statement over `generate_series`), analyses it and returns its
 * pages; autovacuum is off for it, so that no pass of these rows lands its reads in a measurement.
 */
async function grown(table: string, insert: RawBuilder<unknown>): Promise<number> {
  await counted(async (c) => {
    await sql`alter table ${sql.id(table)} set (autovacuum_enabled = false)`.execute(c);
    await insert.execute(c);
    await sql`analyze ${sql.id(table)}`.execute(c);
  });
  const { rows } = await sql<{ pages: number }>`select relpages as pages from pg_class where oid = ${table}::regclass`.execute(database.db);
  expect(rows[0]!.pages).toBeGreaterThan(100);
  return rows[0]!.pages;
}

describe("claims", () => {
  it("lets exactly one of many concurrent claims win, each claim with a fresh fencing token", async () => {
    const outcomes = await Promise.all(Array.from({ length: 8 }, (_, i) => claimEvent(database.db, request(`${id}-race`, 1, { owner: `worker-${i}` }))));
    const winners = outcomes.filter((o) => o.type === "claimed");
    expect(winners).toHaveLength(1);
    expect(outcomes.filter((o) => o.type === "wait" && o.reason === "held")).toHaveLength(7);
    const row = await registryRow(database.db, "reg", `${id}-race`);
    expect(row).toMatchObject({ state: "processing", attempts: 1, fence: (winners[0] as { claim: Claim }).claim.fence });
    // The lease is computed on the database clock: exactly the lease after the database's heartbeat time.
    expect(row!.lease_expires_at!.getTime() - row!.heartbeat_at!.getTime()).toBe(30_000);
  });

  it("fences a holder whose lease expired: its done is refused, its side effect rolls back, the taker's lands once", async () => {
    const first = await claimed(`${id}-fence`, 1, { leaseMs: 300 });
    // A heartbeat before expiry extends the lease; after expiry it cannot revive it.
    expect(await renewLease(database.db, first, 300)).toBe(true);
    await untilLeaseExpired(`${id}-fence`);
    expect(await renewLease(database.db, first, 300)).toBe(false);

    let error: unknown;
    await applyAndFinish(first).catch((e: unknown) => (error = e));
    expect(isLeaseLostError(error)).toBe(true);
    expect((await effectCounts(database.db, "reg")).get(`${id}-fence`)).toBeUndefined();

    // A takeover: a new token, one more attempt; the old holder stays fenced even with a live lease.
    const taker = await claimed(`${id}-fence`, 1, { owner: "worker-b" });
    expect(taker).toMatchObject({ attempts: 2, claimedFrom: "processing" });
    expect(taker.fence).toBeGreaterThan(first.fence);
    error = undefined;
    await applyAndFinish(first).catch((e: unknown) => (error = e));
    expect(isLeaseLostError(error)).toBe(true);
    await applyAndFinish(taker);
    expect((await effectCounts(database.db, "reg")).get(`${id}-fence`)).toBe(1);
    expect(await registryRow(database.db, "reg", `${id}-fence`)).toMatchObject({ state: "done", attempts: 2, owner: "worker-b" });
    expect(await claimEvent(database.db, request(`${id}-fence`, 1))).toEqual({ type: "finished", state: "done" });
  });

  it("refuses the done of a holder whose lease expired while its transaction was open", async () => {
    const claim = await claimed(`${id}-slow`, 1, { leaseMs: 300 });
    let error: unknown;
    await applyAndFinish(claim, () => untilLeaseExpired(`${id}-slow`)).catch((e: unknown) => (error = e));
    expect(isLeaseLostError(error)).toBe(true);
    expect((await effectCounts(database.db, "reg")).get(`${id}-slow`)).toBeUndefined();
    expect((await registryRow(database.db, "reg", `${id}-slow`))?.state).toBe("processing");
  });

  it("makes seq n+1 of an aggregate wait while seq n is processing or scheduled for retry, on any worker", async () => {
    const n = await claimed(`${id}-ord-1`, 1, { aggregateId: "ord" });
    expect(await claimEvent(database.db, request(`${id}-ord-2`, 2, { aggregateId: "ord", owner: "worker-b" }))).toMatchObject({ type: "wait", reason: "ordering" });
    // Other aggregates are not held up.
    expect((await claimEvent(database.db, request(`${id}-other-1`, 5, { aggregateId: "other" }))).type).toBe("claimed");

    expect(await scheduleRetry(database.db, n, 60_000, "flaky")).toBe(true);
    expect(await claimEvent(database.db, request(`${id}-ord-2`, 2, { aggregateId: "ord" }))).toMatchObject({ type: "wait", reason: "ordering" });
    expect(await claimEvent(database.db, request(`${id}-ord-1`, 1, { aggregateId: "ord" }))).toMatchObject({ type: "wait", reason: "not_due" });

    await sql`update processed_events set next_attempt_at = clock_timestamp() where event_id = ${`${id}-ord-1`}`.execute(database.db);
    const retry = await claimed(`${id}-ord-1`, 1, { aggregateId: "ord" });
    expect(retry).toMatchObject({ attempts: 2, claimedFrom: "retry_scheduled", lastError: "flaky" });
    await applyAndFinish(retry);
    const next = await claimed(`${id}-ord-2`, 2, { aggregateId: "ord" });
    await applyAndFinish(next);
    expect(await database.db.selectFrom("consumer_watermarks").select("applied_seq").where("aggregate_id", "=", "ord").executeTakeFirst()).toEqual({ applied_seq: 2 });
  });
});

describe("C7 housekeeping", () => {
  let tk: TestKafka;
  beforeAll(async () => {
    tk = await openTestKafka(`${id}.`);
  });
  afterAll(async () => {
    await tk?.close();
  });

  it("prunes only done rows past the retention, in batches; the watermark still recognises a redelivered old event", async () => {
    const topic = `${id}.prune`;
    await tk.createTopic(topic);
    const config = consumerTestConfig(id, { TIDEMARK_CONSUMER_TOPICS: topic });
    const events = [1, 2, 3].map((seq) => testEnvelope({ eventId: `${id}-hk-${seq}`, aggregateId: "hk", seq }));
    await tk.produce(topic, events);
    const handle = await startConsumer(config, effectHandler("hk"), { database, housekeeping: false });
    try {
      await waitFor(async () => (await registryRow(database.db, "hk", `${id}-hk-3`))?.state === "done", { what: "the events to be done" });

      // Age the rows: two old done rows, one recent; old rows in every other state must stay.
      const age = (eventId: string, days: number, state?: string) =>
        sql`update processed_events set finished_at = now() - ${days} * interval '1 day', updated_at = now() - ${days} * interval '1 day'
            ${state === undefined ? sql`` : sql`, state = ${state}`} where event_id = ${eventId}`.execute(database.db);
      await age(`${id}-hk-1`, 8);
      await age(`${id}-hk-2`, 9);
      await age(`${id}-hk-3`, 1);
      const keep = ["dead_lettered", "skipped_stale", "retry_scheduled", "processing"];
      for (const [i, state] of keep.entries()) {
        await claimed(`${id}-keep-${i}`, 1, { aggregateId: `keep${i}`, handler: "hk" });
        await age(`${id}-keep-${i}`, 30, state);
      }

      expect(await pruneDone(database.db, { batchSize: 1, maxBatches: 1 })).toBe(1);
      expect(await pruneDone(database.db, { batchSize: 1 })).toBe(1);
      expect(await pruneDone(database.db)).toBe(0);
      const left = await database.db.selectFrom("processed_events").select(["event_id", "state"]).where("handler", "=", "hk").orderBy("event_id").execute();
      expect(left.map((r) => r.event_id)).toEqual([`${id}-hk-3`, ...keep.map((_, i) => `${id}-keep-${i}`)]);

      // The pruned seq 1 arrives again (a replay from an old offset): recognised as stale, not applied.
      await tk.produce(topic, [events[0]!]);
      await waitFor(async () => (await registryRow(database.db, "hk", `${id}-hk-1`))?.state === "skipped_stale", { what: "the redelivered old event to be skipped" });
      expect((await effectCounts(database.db, "hk")).get(`${id}-hk-1`)).toBe(1);
    } finally {
      await handle.stop();
    }
  });

  it("reads the done rows past the retention, not the recent ones: a prune's cost does not grow with the registry", async () => {
    const handler = "prune-scan";
    // 40 000 done rows within the retention and 5 beyond it.
    const pages = await grown(
      "processed_events",
      sql`insert into processed_events (handler, event_id, aggregate_type, aggregate_id, seq, event_type, state, fence, owner, attempts, finished_at)
        select ${handler}, ${id} || '-recent-' || g, 'Task', 'recent' || g, 1, 'Noted', 'done', 0, 'worker-old', 1,
          now() - case when g < 5 then interval '10 days' else interval '1 hour' end
        from generate_series(0, 40004) g`,
    );
    const before = await heapPages("processed_events");
    expect(await counted((c) => pruneDone(c))).toBe(5);
    // A cutoff that cannot bound the scan of the done index reads every done row on each run.
    expect((await heapPages("processed_events")) - before).toBeLessThan(pages / 4);
    const left = await sql<{ n: string }>`select count(*) as n from processed_events where handler = ${handler}`.execute(database.db);
    expect(Number(left.rows[0]!.n)).toBe(40_000);
  });

  it("keeps counts by handler and state: ListHandlers reads none of the registry's rows, however many it holds", async () => {
    const handler = "list-counts";
    const pages = await grown(
      "processed_events",
      sql`insert into processed_events (handler, event_id, aggregate_type, aggregate_id, seq, global_position, event_type, state, fence, owner, attempts, finished_at)
        select ${handler}, ${id} || '-listed-' || g, 'Task', 'listed' || g, 1, g + 1, 'Noted', case when g % 1000 = 0 then 'dead_lettered' else 'done' end, 0, 'worker-old', 1, now()
        from generate_series(0, 39999) g`,
    );
    const before = await heapPages("processed_events");
    const kept = await counted((c) => handlerCounts(c));
    expect((await heapPages("processed_events")) - before).toBeLessThan(pages / 100);
    expect(kept.find((h) => h.handler === handler)).toMatchObject({ done: 39_960, deadLettered: 40, appliedPosition: 40_000 });
    // The count the kept one replaces reads them all (and agrees).
    const scanBefore = await heapPages("processed_events");
    const scanned = await counted((c) => handlerCountsByScan(c));
    expect((await heapPages("processed_events")) - scanBefore).toBeGreaterThanOrEqual(pages / 2);
    expect(scanned.find((h) => h.handler === handler)).toMatchObject({ done: 39_960, deadLettered: 40, appliedPosition: 40_000 });
  });
});

describe("group claims (handlers with handleBatch)", () => {
  it("probes only in-flight and unresolved rows for the ordering guard: a claim's cost does not grow with the done rows the registry holds", async () => {
    const handler = "guard";
    // A busy projection's registry between two prunes: 40 000 done rows of 10 000 aggregates.
    const pages = await grown(
      "processed_events",
      sql`insert into processed_events (handler, event_id, aggregate_type, aggregate_id, seq, event_type, state, fence, owner, attempts, finished_at)
        select ${handler}, ${id} || '-old-' || g, 'Task', 'old' || (g / 4), g % 4 + 1, 'Noted', 'done', 0, 'worker-old', 1, now()
        from generate_series(0, 39999) g`,
    );
    // The next seq of 20 of those aggregates: the guard looks for an unfinished lower seq of each.
    const events = Array.from({ length: 20 }, (_, i) => request(`${id}-guard-${i}`, 5, { handler, aggregateId: `old${i}` }));
    const before = await heapPages("processed_events");
    const granted = await counted((c) => claimEvents(c, handler, "worker-a", 30_000, events));
    expect(granted.size).toBe(20);
    // A guard the partial indexes cannot answer reads every row of the handler for each event
    // (20 passes over the table); answered by them, the claim touches a few pages to insert.
    expect((await heapPages("processed_events")) - before).toBeLessThan(pages / 4);

    // And the guard still refuses: seq 6 behind a seq 5 in flight, on any worker.
    const behind = await claimEvents(database.db, handler, "worker-b", 30_000, [request(`${id}-guard-behind`, 6, { handler, aggregateId: "old0" })]);
    expect(behind.size).toBe(0);
    // Behind a seq 5 waiting for its replay too (C9); not behind one whose lease ran out (C4: taken over).
    const state = (eventId: string, set: RawBuilder<unknown>) => sql`update processed_events set ${set} where handler = ${handler} and event_id = ${eventId}`.execute(database.db);
    await state(`${id}-guard-1`, sql`state = 'replay_requested'`);
    expect((await claimEvents(database.db, handler, "worker-b", 30_000, [request(`${id}-guard-replay`, 6, { handler, aggregateId: "old1" })])).size).toBe(0);
    await state(`${id}-guard-2`, sql`lease_expires_at = clock_timestamp() - interval '1 second'`);
    expect((await claimEvents(database.db, handler, "worker-b", 30_000, [request(`${id}-guard-expired`, 6, { handler, aggregateId: "old2" })])).size).toBe(1);
  });

  it("grants and refuses in one statement exactly as one claim at a time would", async () => {
    const g = (name: string) => `${id}-grp-${name}`;
    // Already done; held by another worker; behind a held lower seq; a new aggregate with seq 1 and 2.
    await applyAndFinish(await claimed(g("done"), 1, { aggregateId: "g-done" }));
    await claimed(g("held"), 1, { aggregateId: "g-held", owner: "worker-b" });
    const requests = [
      request(g("done"), 1, { aggregateId: "g-done" }),
      request(g("held"), 1, { aggregateId: "g-held" }),
      request(g("behind"), 2, { aggregateId: "g-held" }),
      request(g("new-1"), 1, { aggregateId: "g-new" }),
      request(g("new-2"), 2, { aggregateId: "g-new" }),
    ];
    const granted = await claimEvents(database.db, "reg", "worker-a", 30_000, requests);
    expect([...granted.keys()].sort()).toEqual([g("new-1"), g("new-2")]);
    const [one, two] = [granted.get(g("new-1"))!, granted.get(g("new-2"))!];
    expect(one).toMatchObject({ attempts: 1, claimedFrom: null, seq: 1 });
    expect(two.fence).not.toBe(one.fence);
    // Each refusal is what a single claim says about it.
    expect(await claimEvent(database.db, requests[0]!)).toEqual({ type: "finished", state: "done" });
    expect(await claimEvent(database.db, requests[1]!)).toMatchObject({ type: "wait", reason: "held" });
    expect(await claimEvent(database.db, requests[2]!)).toMatchObject({ type: "wait", reason: "ordering" });
    // Asked again by the same worker: its own claim of seq 1 resumes without counting an attempt;
    // seq 2 now waits behind seq 1, which is processing (as one claim at a time would say).
    const again = await claimEvents(database.db, "reg", "worker-a", 30_000, requests.slice(3));
    expect([...again.keys()]).toEqual([g("new-1")]);
    expect(again.get(g("new-1"))).toMatchObject({ attempts: 1, claimedFrom: "self" });
    const held = [again.get(g("new-1"))!, two];
    expect(await renewLeases(database.db, held, 30_000)).toBe(2);
    expect(await renewLeases(database.db, [one, two], 30_000)).toBe(1);

    // Applied together: both done, the watermark at the higher seq.
    await database.db.transaction().execute(async (tx) => {
      expect(await lockWatermarks(tx, "reg", [{ aggregateType: "Task", aggregateId: "g-new" }, { aggregateType: "Task", aggregateId: "g-done" }])).toEqual(
        new Map([["Task\u0000g-new", 0], ["Task\u0000g-done", 1]]),
      );
      for (const c of held) await recordEffect(tx, "reg", c.eventId, c.seq, c.aggregateId);
      await finishClaims(tx, held.map((claim) => ({ claim, state: "done" as const })));
    });
    expect(await registryRow(database.db, "reg", g("new-2"))).toMatchObject({ state: "done", attempts: 1 });
    const mark = await database.db.selectFrom("consumer_watermarks").select("applied_seq").where("handler", "=", "reg").where("aggregate_id", "=", "g-new").executeTakeFirstOrThrow();
    expect(mark.applied_seq).toBe(2);
  });

  it("refuses the whole group's done when one lease expired: every side effect of the group rolls back", async () => {
    const g = (name: string) => `${id}-grl-${name}`;
    const live = await claimed(g("live"), 1, { aggregateId: "grl-a" });
    const late = await claimed(g("late"), 1, { aggregateId: "grl-b", leaseMs: 300 });
    await untilLeaseExpired(g("late"));
    expect(await renewLeases(database.db, [live, late], 30_000)).toBe(1);
    let error: unknown;
    await database.db
      .transaction()
      .execute(async (tx) => {
        await lockWatermarks(tx, "reg", [live, late]);
        for (const c of [live, late]) await recordEffect(tx, "reg", c.eventId, c.seq, c.aggregateId);
        await finishClaims(tx, [{ claim: live, state: "done" }, { claim: late, state: "done" }]);
      })
      .catch((e: unknown) => (error = e));
    expect(isLeaseLostError(error)).toBe(true);
    const effects = await effectCounts(database.db, "reg");
    expect(effects.get(g("live"))).toBeUndefined();
    expect(effects.get(g("late"))).toBeUndefined();
    expect((await registryRow(database.db, "reg", g("live")))?.state).toBe("processing");
  });
});

describe("processing status", () => {
  it("reads one aggregate's watermarks by index: GetProcessingStatus does not scan the never-pruned watermarks", async () => {
    // Three handlers' watermarks of 20 000 aggregates each.
    const pages = await grown(
      "consumer_watermarks",
      sql`insert into consumer_watermarks (handler, aggregate_type, aggregate_id, applied_seq)
        select 'wm-' || (g % 3), 'Task', 'wm' || (g / 3), 1 + g % 7 from generate_series(0, 59999) g`,
    );
    const before = await heapPages("consumer_watermarks");
    const marks = await counted((c) => watermarksOf(c, "Task", "wm100"));
    expect(marks).toEqual(new Map([["wm-0", 1 + (300 % 7)], ["wm-1", 1 + (301 % 7)], ["wm-2", 1 + (302 % 7)]]));
    expect((await heapPages("consumer_watermarks")) - before).toBeLessThan(pages / 4);
  });
});

/**
 * Consumers against real Kafka and PostgreSQL: duplicate delivery (C1), retries with backoff and
 * dead letters with their cause (C3), per-aggregate order without head-of-line blocking (C2,
 * weakness 13), and offsets committed only over recorded outcomes (C5). Run twice: with handlers
 * as written (one transaction per event), and with the same handlers given `handleBatch`, so the
 * runtime's group path must meet the same expectations (consumer-delivery*.test.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Database } from "../../core/db/database.js";
import { sql } from "kysely";
import {
  type ConsumerHandle,
  DEAD_LETTER_HEADERS,
  defineHandler,
  type Handler,
  PoisonError,
  startConsumer,
} from "../../consumers/index.js";
import {
  consumerTestConfig,
  consumerTestId,
  dropTestDatabase,
  effectCounts,
  effectHandler,
  effectOrder,
  openTestDatabase,
  recordEffect,
  registryRow,
  testEnvelope,
} from "../helpers/consumer-env.js";
import { collectTopic, openTestKafka, type TestKafka } from "../helpers/consumer-kafka.js";
import { waitFor } from "../helpers/wait-for.js";
import type { ConsumerDatabase } from "../../core/index.js";

/** How one run of the suite builds its handlers. */
export interface DeliveryMode {
  readonly title: string;
  /** Prefix of the run's topics, schema and groups. */
  readonly prefix: string;
  readonly wrap: (handler: Handler) => Handler;
  /** True when the handlers have `handleBatch`: the tests then check that groups really formed. */
  readonly grouped: boolean;
}

/** Events applied in groups, and groups rolled back, as the runtime counted them. */
async function groupStats(handle: ConsumerHandle): Promise<{ groupedEvents: number; fallbacks: number }> {
  const size = await handle.metrics.groupSize.get();
  const fallbacks = await handle.metrics.groupFallbacks.get();
  return {
    groupedEvents: size.values.filter((v) => v.metricName === "tidemark_consumer_group_size_sum").reduce((a, v) => a + v.value, 0),
    fallbacks: fallbacks.values.reduce((a, v) => a + v.value, 0),
  };
}

/** Defines the delivery tests for one mode. */
export function deliverySuite(mode: DeliveryMode): void {
describe(mode.title, () => {
  const id = consumerTestId(mode.prefix);
  let database: Database<ConsumerDatabase>;
  let tk: TestKafka;
  const handles: ConsumerHandle[] = [];

  beforeAll(async () => {
    database = await openTestDatabase(id);
    tk = await openTestKafka(`${id}.`);
  });
  afterAll(async () => {
    for (const h of handles) await h.stop();
    await tk?.close();
    await dropTestDatabase(database);
  });

  /** A topic of its own for one test, and a consumer config subscribed to it. */
  async function setup(name: string, partitions = 1, extra: Record<string, string> = {}) {
    const topic = `${id}.${name}`;
    await tk.createTopic(topic, partitions);
    const config = consumerTestConfig(id, { TIDEMARK_CONSUMER_TOPICS: topic, ...extra });
    return { topic, config };
  }

  async function start(config: ReturnType<typeof consumerTestConfig>, handler: Handler) {
    const handle = await startConsumer(config, mode.wrap(handler), { database, housekeeping: false });
    handles.push(handle);
    return handle;
  }

  const doneRow = (handler: string, eventId: string) => async () => {
    const row = await registryRow(database.db, handler, eventId);
    return row !== undefined && row.state !== "processing" && row.state !== "retry_scheduled" ? row : undefined;
  };

  describe("C1 exactly-once effect", () => {
    it("applies a duplicated delivery once, with attempt count 1, and commits past both copies", async () => {
      const { topic, config } = await setup("dup");
      const e1 = testEnvelope({ eventId: `${id}-dup-1`, aggregateId: "d1", seq: 1 });
      const e2 = testEnvelope({ eventId: `${id}-dup-2`, aggregateId: "d1", seq: 2 });
      await tk.produce(topic, [e1, e1, e2, e1]);
      const handle = await start(config, effectHandler("dup"));

      await waitFor(async () => (await tk.committed(`${id}.dup`, topic))[0] === 4, { what: "offsets committed past all four messages" });
      expect(await effectCounts(database.db, "dup")).toEqual(new Map([[e1.eventId, 1], [e2.eventId, 1]]));
      expect(await registryRow(database.db, "dup", e1.eventId)).toMatchObject({ state: "done", attempts: 1, seq: 1 });
      expect(await registryRow(database.db, "dup", e2.eventId)).toMatchObject({ state: "done", attempts: 1, seq: 2 });
      const duplicates = await handle.metrics.processed.get();
      expect(duplicates.values.find((v) => v.labels["outcome"] === "duplicate")?.value).toBe(2);

      // Redelivered much later (a relay re-publishing its unacknowledged tail): still once.
      await tk.produce(topic, [e2]);
      await waitFor(async () => (await tk.committed(`${id}.dup`, topic))[0] === 5, { what: "the redelivery to be acknowledged" });
      expect((await effectCounts(database.db, "dup")).get(e2.eventId)).toBe(1);
    });
  });

  describe("C1 competing consumers", () => {
    it("lets two consumers that both receive every event (two groups) apply each event exactly once", async () => {
      const { topic, config } = await setup("race", 2);
      const events = Array.from({ length: 40 }, (_, i) => testEnvelope({ eventId: `${id}-race-${i}`, aggregateId: `r${i % 8}`, seq: Math.floor(i / 8) + 1 }));
      await tk.produce(topic, events);
      const slow = () => new Promise<void>((r) => setTimeout(r, 5));
      // Same handler name (one registry key), different consumer groups: every message arrives twice.
      const consumers = await Promise.all([
        start({ ...config, groupPrefix: `${id}.a.` }, effectHandler("race", slow)),
        start({ ...config, groupPrefix: `${id}.b.` }, effectHandler("race", slow)),
      ]);
      await waitFor(async () => {
        const [a, b] = await Promise.all([tk.committed(`${id}.a.race`, topic), tk.committed(`${id}.b.race`, topic)]);
        return [...a, ...b].reduce((x, y) => x + y, 0) === 80;
      }, { what: "both groups to commit every offset" });
      const counts = await effectCounts(database.db, "race");
      expect(counts.size).toBe(40);
      expect([...counts.values()].every((n) => n === 1)).toBe(true);
      for (let a = 0; a < 8; a++) expect(await effectOrder(database.db, "race", `r${a}`)).toEqual([1, 2, 3, 4, 5]);
      const stats = await Promise.all(consumers.map(groupStats));
      expect(stats.reduce((a, s) => a + s.groupedEvents, 0) > 0).toBe(mode.grouped);
    });
  });

  describe("C1 fencing in the runtime", () => {
    it("rolls back the side effect of a holder whose lease expired before done, then applies the event once", async () => {
      const { topic, config } = await setup("stall");
      const eventId = `${id}-stall-1`;
      const handler = defineHandler({
        name: "stall",
        async handle(event, tx, context) {
          await recordEffect(tx, "stall", event.eventId, event.seq, event.aggregateId);
          // The first holder stalls past its lease (a GC pause, a frozen VM): the database clock says it is over.
          if (context.attempt === 1) await sql`update processed_events set lease_expires_at = clock_timestamp() - interval '1 second' where handler = 'stall' and event_id = ${eventId}`.execute(database.db);
        },
      });
      await tk.produce(topic, [testEnvelope({ eventId, aggregateId: "st", seq: 1 })]);
      const handle = await start(config, handler);
      expect(await waitFor(doneRow("stall", eventId))).toMatchObject({ state: "done", attempts: 2 });
      expect((await effectCounts(database.db, "stall")).get(eventId)).toBe(1);
      expect((await handle.metrics.leaseLost.get()).values[0]?.value).toBe(1);
    });
  });

  describe("C3 retries and dead letters", () => {
    it("dead-letters poison with its cause while the rest of the partition flows; retries with backoff, then succeeds", async () => {
      const { topic, config } = await setup("poison");
      const dlq = await collectTopic(tk.kafka, config.deadLetterTopic);
      const failuresLeft = new Map([[`${id}-flaky`, 2]]);
      const attemptsAt: number[] = [];
      const handler = effectHandler("poison", async (eventId, attempt) => {
        if (eventId === `${id}-invalid`) throw new PoisonError("amount must be positive");
        if (eventId === `${id}-always`) throw new Error("downstream keeps failing");
        const left = failuresLeft.get(eventId) ?? 0;
        // The start of each attempt (a rolled-back group's try and its one-by-one rerun are one attempt).
        if (eventId === `${id}-flaky`) attemptsAt[attempt - 1] = Date.now();
        if (left > 0) {
          failuresLeft.set(eventId, left - 1);
          throw new Error("downstream timed out", { cause: new Error("ETIMEDOUT") });
        }
      });
      const good = (n: number) => testEnvelope({ eventId: `${id}-good-${n}`, aggregateId: `g${n}`, seq: 1 });
      await tk.produce(topic, [good(1)]);
      await tk.produceRaw(topic, "Task/broken", "{ this is not json", { event_id: `${id}-garbage` });
      await tk.produceRaw(topic, "Task/noseq", JSON.stringify({ event_id: `${id}-noseq`, event_type: "Noted", aggregate_type: "Task", aggregate_id: "n" }));
      await tk.produce(topic, [
        testEnvelope({ eventId: `${id}-invalid`, aggregateId: "v", seq: 1 }),
        testEnvelope({ eventId: `${id}-flaky`, aggregateId: "f", seq: 1 }),
        testEnvelope({ eventId: `${id}-always`, aggregateId: "a", seq: 1 }),
        good(2),
        good(3),
      ]);
      const handle = await start(config, handler);

      const garbage = await waitFor(doneRow("poison", `${id}-garbage`), { what: "the undecodable message to be dead-lettered" });
      expect(garbage).toMatchObject({ state: "dead_lettered", attempts: 1 });
      expect(garbage.last_error).toContain("not EventEnvelope JSON");
      const noseq = await waitFor(async () => {
        const { rows } = await database.pool.query("select * from processed_events where handler = 'poison' and event_id like 'kafka:%'");
        const row = rows[0] as { state: string; last_error: string } | undefined;
        // Its row exists from the first attempt on ('processing'): wait for a final state, as doneRow does.
        return row !== undefined && row.state !== "processing" && row.state !== "retry_scheduled" ? row : undefined;
      }, { what: "the invalid envelope to be dead-lettered" });
      expect(noseq.state).toBe("dead_lettered");
      expect(noseq.last_error).toContain("sequence_number");
      expect(await waitFor(doneRow("poison", `${id}-invalid`))).toMatchObject({ state: "dead_lettered", attempts: 1, last_error: expect.stringContaining("amount must be positive") });

      // The rest of the partition is applied while the flaky event is still retrying.
      for (const n of [1, 2, 3]) expect(await waitFor(doneRow("poison", `${id}-good-${n}`))).toMatchObject({ state: "done", attempts: 1 });

      const flaky = await waitFor(doneRow("poison", `${id}-flaky`), { what: "the flaky event to succeed" });
      expect(flaky).toMatchObject({ state: "done", attempts: 3 });
      expect(flaky.last_error).toContain("ETIMEDOUT");
      // Exponential: ~100 ms then ~200 ms (±10 % jitter), measured between attempts.
      expect(attemptsAt[1]! - attemptsAt[0]!).toBeGreaterThanOrEqual(85);
      expect(attemptsAt[2]! - attemptsAt[1]!).toBeGreaterThanOrEqual(170);
      expect(flaky.finished_at!.getTime()).toBeGreaterThan((await registryRow(database.db, "poison", `${id}-good-3`))!.finished_at!.getTime());

      const always = await waitFor(doneRow("poison", `${id}-always`), { timeoutMs: 30_000, what: "the failing event to exhaust its attempts" });
      expect(always).toMatchObject({ state: "dead_lettered", attempts: 4 });
      expect(always.last_error).toContain("gave up after 4 attempts");

      await dlq.waitFor(4, "four dead letters");
      const byEvent = new Map(dlq.messages.map((m) => [m.headers[DEAD_LETTER_HEADERS.eventId]!, m]));
      expect(byEvent.get(`${id}-garbage`)).toMatchObject({ value: "{ this is not json", headers: { [DEAD_LETTER_HEADERS.reason]: "poison", [DEAD_LETTER_HEADERS.handler]: "poison", [DEAD_LETTER_HEADERS.sourceTopic]: topic } });
      expect(byEvent.get(`${id}-garbage`)!.headers[DEAD_LETTER_HEADERS.cause]).toContain("not EventEnvelope JSON");
      expect(byEvent.get(`${id}-invalid`)!.headers[DEAD_LETTER_HEADERS.cause]).toContain("PoisonError: amount must be positive");
      expect(byEvent.get(`${id}-always`)!.headers).toMatchObject({ [DEAD_LETTER_HEADERS.reason]: "exhausted", [DEAD_LETTER_HEADERS.attempts]: "4", event_id: `${id}-always` });
      expect(JSON.parse(byEvent.get(`${id}-always`)!.value)).toMatchObject({ event_id: `${id}-always` });
      expect(dlq.messages).toHaveLength(4);
      await waitFor(async () => (await tk.committed(`${id}.poison`, topic))[0] === 8, { what: "offsets committed to the end" });
      await dlq.close();
      expect((await effectCounts(database.db, "poison")).get(`${id}-flaky`)).toBe(1);
      // Grouped: the failing events rolled their groups back, and every event still ended as above.
      expect((await groupStats(handle)).fallbacks > 0).toBe(mode.grouped);
    });
  });

  describe("C2 ordering guard", () => {
    it("holds seq n+1 while n is in flight, without stalling other aggregates of the partition", async () => {
      const { topic, config } = await setup("order");
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const handler = effectHandler("order", async (eventId) => {
        if (eventId === `${id}-slow-1`) await gate;
      });
      await tk.produce(topic, [
        testEnvelope({ eventId: `${id}-slow-1`, aggregateId: "slow", seq: 1 }),
        testEnvelope({ eventId: `${id}-slow-2`, aggregateId: "slow", seq: 2 }),
        ...[1, 2, 3, 4, 5].map((n) => testEnvelope({ eventId: `${id}-fast-${n}`, aggregateId: `fast${n % 2}`, seq: Math.ceil(n / 2) })),
      ]);
      await start(config, handler);

      for (const n of [1, 2, 3, 4, 5]) await waitFor(doneRow("order", `${id}-fast-${n}`), { what: `fast event ${n}` });
      expect((await registryRow(database.db, "order", `${id}-slow-1`))?.state).toBe("processing");
      expect(await registryRow(database.db, "order", `${id}-slow-2`)).toBeUndefined();
      // The offset may not pass the message in flight.
      expect((await tk.committed(`${id}.order`, topic))[0]).toBeLessThanOrEqual(0);

      release();
      await waitFor(doneRow("order", `${id}-slow-2`), { what: "seq 2 after seq 1" });
      expect(await effectOrder(database.db, "order", "slow")).toEqual([1, 2]);
      expect(await effectOrder(database.db, "order", "fast1")).toEqual([1, 2, 3]);
      await waitFor(async () => (await tk.committed(`${id}.order`, topic))[0] === 7, { what: "offsets committed to the end" });
    });

    it("records an older event that arrives after a newer one as skipped_stale and never applies it", async () => {
      const { topic, config } = await setup("stale");
      await tk.produce(topic, [1, 3, 2].map((seq) => testEnvelope({ eventId: `${id}-stale-${seq}`, aggregateId: "s", seq })));
      const handle = await start(config, effectHandler("stale"));
      expect(await waitFor(doneRow("stale", `${id}-stale-2`))).toMatchObject({ state: "skipped_stale", attempts: 1 });
      expect(await effectOrder(database.db, "stale", "s")).toEqual([1, 3]);
      const mark = await database.db.selectFrom("consumer_watermarks").selectAll().where("handler", "=", "stale").executeTakeFirstOrThrow();
      expect(mark).toMatchObject({ aggregate_id: "s", applied_seq: 3, applied_event_id: `${id}-stale-3` });
      expect((await handle.metrics.skippedStale.get()).values[0]?.value).toBe(1);
    });
  });
});
}

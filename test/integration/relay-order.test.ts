/**
 * Nothing skipped, per-key order (docs/CONTRACT.md R1, R2) against real PostgreSQL, S3Proxy and Kafka:
 * 16 concurrent writers over 50 aggregates, and a commit deliberately held open while other appends
 * run — with a control run that proves the check detects a skipped event.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RelayHandle } from "../../relay/app.js";
import { copiesByEvent, deleteTopics, orderViolations, startCollector, type Collected, type Collector } from "../helpers/relay-kafka.js";
import { relayTestConfig, relayTopics, startTestRelay, stopAllRelays } from "../helpers/relay-test.js";
import { beginCommit, writeSlot } from "../helpers/relay-writes.js";
import { startTestServer, stackBrokers, type TestServer } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";


/** Every committed event of the schema, in position order. */
async function committedEvents(t: TestServer) {
  return t.server.database.db
    .selectFrom("event_log")
    .select(["event_id", "aggregate_type", "aggregate_id", "seq", "global_position"])
    .where("state", "=", "committed")
    .orderBy("global_position")
    .execute();
}

/** Events committed in the log but absent from Kafka. */
function missingFrom(messages: readonly Collected[], committed: ReadonlyArray<{ event_id: string }>): string[] {
  const seen = new Set(messages.map((m) => m.eventId));
  return committed.filter((c) => !seen.has(c.event_id)).map((c) => c.event_id);
}

/** Waits until the relay's checkpoint reaches the commit counter. */
async function caughtUp(t: TestServer, relay: RelayHandle, timeoutMs = 90_000): Promise<number> {
  return waitFor(
    async () => {
      const head = (await t.server.database.db.selectFrom("global_counter").select("position").executeTakeFirstOrThrow()).position;
      return relay.status().checkpoint === head ? head : undefined;
    },
    { timeoutMs, what: "the relay to reach the head of the log" },
  );
}

/** A server and a relay on fresh topics with a collector, for one describe block; `settings` tune the relay. */
function relayFixture(prefix: string, settings: Record<string, string>) {
  const names = relayTopics(prefix);
  const fx = {} as { t: TestServer; relay: RelayHandle; collector: Collector };
  beforeAll(async () => {
    fx.t = await startTestServer();
    fx.relay = await startTestRelay(relayTestConfig(fx.t.config, { TIDEMARK_RELAY_TOPIC: names.topic, TIDEMARK_DEAD_LETTER_TOPIC: names.deadLetter, ...settings }));
    await waitFor(() => fx.relay.status().topicsReady, { what: "topics", timeoutMs: 60_000 });
    fx.collector = await startCollector(stackBrokers(), [names.topic]);
  });
  afterAll(async () => {
    await fx.collector?.close();
    await stopAllRelays();
    await deleteTopics(stackBrokers(), [names.topic, names.deadLetter]);
    await fx.t?.close();
  });
  return fx;
}

describe("R1/R2 under 16 concurrent writers across 50 aggregates", () => {
  const fx = relayFixture("ro", { TIDEMARK_RELAY_PARTITIONS: "6", TIDEMARK_RELAY_BATCH_SIZE: "50" });

  it("publishes every committed event once, each key's events in order", { timeout: 180_000 }, async () => {
    const { t, relay, collector } = fx;
    const writers = 16;
    const appendsPerWriter = 40;
    let n = 0;
    // Aggregates 0-9 share ordering keys two by two: their order is the key's, across aggregates.
    const write = async (w: number) => {
      for (let i = 0; i < appendsPerWriter; i++) {
        const a = (w * 7 + i * 13) % 50;
        const size = i % 5 === 0 ? 3 : 1;
        const events = Array.from({ length: size }, (_, k) => ({
          eventId: `w${w}-${i}-${k}`,
          eventType: "Counted",
          data: { w, i, k, n: n++ } as never,
          metadata: a < 10 ? { ordering_key: `pair-${a >> 1}` } : {},
        }));
        await t.events.appendEvents({ aggregateType: "Counter", aggregateId: `agg-${a}`, expectation: { case: "any", value: {} }, events });
      }
    };
    await Promise.all(Array.from({ length: writers }, (_, w) => write(w)));
    await caughtUp(t, relay);
    const committed = await committedEvents(t);
    expect(committed.length).toBe(writers * appendsPerWriter + writers * (appendsPerWriter / 5) * 2);
    await collector.waitForEvents(committed.map((c) => c.event_id));

    expect(missingFrom(collector.messages, committed)).toEqual([]);
    expect(orderViolations(collector.messages)).toEqual([]);
    // Per aggregate: first copies, in partition order, are the stream's seqs 1..head.
    const seqsByAggregate = new Map<string, number[]>();
    const firsts = [...copiesByEvent(collector.messages).values()].map((copies) => copies.sort((a, b) => a.offset - b.offset)[0]!);
    for (const m of firsts.sort((a, b) => a.offset - b.offset)) {
      const list = seqsByAggregate.get(m.envelope["aggregate_id"]) ?? [];
      list.push(Number(m.envelope["sequence_number"]));
      seqsByAggregate.set(m.envelope["aggregate_id"], list);
    }
    for (const [aggregate, seqs] of seqsByAggregate) expect(seqs, aggregate).toEqual(seqs.map((_, i) => i + 1));
    // Without a produce failure (the Kafka outage test may run in parallel) nothing is repeated.
    const failures = (await relay.metrics.registry.getSingleMetric("tidemark_relay_produce_errors_total")?.get())?.values[0]?.value ?? 0;
    if (failures === 0) expect(collector.messages.length).toBe(committed.length);
  });
});

describe("R1 a deliberately delayed commit", () => {
  // One partition: Kafka's offsets show the order in which the relay produced.
  const fx = relayFixture("rd", { TIDEMARK_RELAY_PARTITIONS: "1", TIDEMARK_RELAY_BATCH_SIZE: "4", TIDEMARK_RELAY_POLL_MS: "50" });

  it("publishes an event whose commit was held open while later appends ran, in position order, nothing missing", { timeout: 120_000 }, async () => {
    const { t, relay, collector } = fx;
    await t.events.appendEvents({ aggregateType: "Early", aggregateId: "e", expectation: { case: "any", value: {} }, events: [{ eventId: "before", eventType: "Noted", data: {} as never }] });
    await collector.waitForEvents(["before"]);

    // A writer that reserved first and commits last: its commit transaction holds the counter.
    const slot = await writeSlot(t.server, "Slow", "s", "delayed");
    const open = await beginCommit(t.server, slot);
    const appends = Array.from({ length: 20 }, (_, i) =>
      t.events.appendEvents({ aggregateType: "Fast", aggregateId: `f${i % 5}`, expectation: { case: "any", value: {} }, events: [{ eventId: `later-${i}`, eventType: "Noted", data: { i } as never }] }),
    );
    // Every later append has reserved its slot and written S3; each waits to commit.
    await waitFor(
      async () => {
        const rows = await t.server.database.db.selectFrom("event_log").select("state").where("event_id", "like", "later-%").execute();
        return rows.length === 20 && rows.every((r) => r.state === "pending");
      },
      { what: "20 later appends to be pending behind the open commit" },
    );
    // Meanwhile the relay sees nothing past the open commit and keeps polling (every 50 ms).
    const checkpointDuringHold = relay.status().checkpoint;
    expect(checkpointDuringHold).toBe(open.position - 1);

    await open.commit();
    const results = await Promise.all(appends);
    const laterPositions = results.map((r) => Number(r.events[0]!.globalPosition));
    expect(Math.min(...laterPositions)).toBeGreaterThan(open.position);

    const committed = await committedEvents(t);
    await collector.waitForEvents(committed.map((c) => c.event_id));
    expect(missingFrom(collector.messages, committed)).toEqual([]);
    const produced = [...collector.messages].sort((a, b) => a.offset - b.offset).map((m) => m.position);
    expect(produced).toEqual(committed.map((c) => c.global_position));
  });
});

describe("control: the same check catches a commit that lands below the relay's position", () => {
  const fx = relayFixture("rc", { TIDEMARK_RELAY_PARTITIONS: "1", TIDEMARK_RELAY_POLL_MS: "50" });

  it("reports the event as missing when a writer takes its position without holding the counter until commit", async () => {
    const { t, relay, collector } = fx;
    // The broken write path R1 forbids: the position is allocated (counter bumped and committed at
    // once) and the event's own commit comes later, so allocation order and commit order differ.
    const slot = await writeSlot(t.server, "Slow", "s", "allocated-early");
    const { position } = await t.server.database.db
      .updateTable("global_counter")
      .set((eb) => ({ position: eb("position", "+", 1) }))
      .where("id", "=", 1)
      .returning("position")
      .executeTakeFirstOrThrow();
    await t.events.appendEvents({ aggregateType: "Fast", aggregateId: "f", expectation: { case: "any", value: {} }, events: [{ eventId: "overtaker", eventType: "Noted", data: {} as never }] });
    await collector.waitForEvents(["overtaker"]);
    await waitFor(() => relay.status().checkpoint > position, { what: "the relay to pass the allocated position" });
    await t.server.database.db
      .updateTable("event_log")
      .set({ state: "committed", global_position: position, committed_at: new Date() })
      .where("log_id", "=", slot.logId)
      .execute();
    await t.events.appendEvents({ aggregateType: "Fast", aggregateId: "f", expectation: { case: "any", value: {} }, events: [{ eventId: "after-late-commit", eventType: "Noted", data: {} as never }] });
    await collector.waitForEvents(["after-late-commit"]);

    expect(missingFrom(collector.messages, await committedEvents(t))).toEqual(["allocated-early"]);
  });
});

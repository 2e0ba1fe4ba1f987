/**
 * The relay never skips (docs/CONTRACT.md R1) and exports its lag (R7), against real PostgreSQL,
 * S3Proxy and Kafka: a voided slot has no position and is never published; a committed event whose
 * S3 object is gone blocks publication with an alarm (log and metric) until the object is back.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { segmentKey } from "../../core/segment.js";
import type { SlotRow } from "../../core/event-log.js";
import type { RelayHandle } from "../../relay/app.js";
import { deleteTopics, startCollector, type Collector } from "../helpers/relay-kafka.js";
import { rawS3 } from "../helpers/relay-s3.js";
import { captureLog, relayTestConfig, relayTopics, startTestRelay, stopAllRelays } from "../helpers/relay-test.js";
import { startTestServer, stackEnv, testServerConfig, type TestServer } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";

const brokers = () => stackEnv()["TIDEMARK_KAFKA_BROKERS"]!.split(",");
const names = relayTopics("rb");

/** Hooks armed per event id: a gate holds a writer before its S3 write; `lose` deletes its segment right after. */
const gates = new Map<string, Promise<void>>();
const lose = new Map<string, { key: string; body: Buffer } | undefined>();
let s3: ReturnType<typeof rawS3>;

let t: TestServer;
let relay: RelayHandle;
let collector: Collector;
const captured = captureLog("test-relay", "info");

beforeAll(async () => {
  t = await startTestServer(testServerConfig({ TIDEMARK_WRITE_DEADLINE_MS: "1500", TIDEMARK_SWEEP_INTERVAL_MS: "100" }), {
    beforeWrite: async (slot: SlotRow) => {
      await gates.get(slot.eventId);
    },
    afterWrite: async (slot: SlotRow) => {
      if (!lose.has(slot.eventId)) return;
      const key = segmentKey(slot.segment!);
      lose.set(slot.eventId, { key, body: (await t.server.objects.read(key))! });
      await s3.delete(key);
    },
  });
  s3 = rawS3(t.config.s3Bucket);
  relay = await startTestRelay(relayTestConfig(t.config, { TIDEMARK_RELAY_TOPIC: names.topic, TIDEMARK_DEAD_LETTER_TOPIC: names.deadLetter, TIDEMARK_RELAY_PARTITIONS: "1" }), { log: captured.log });
  await waitFor(() => relay.status().topicsReady, { what: "topics", timeoutMs: 60_000 });
  collector = await startCollector(brokers(), [names.topic]);
});

afterAll(async () => {
  await collector?.close();
  await stopAllRelays();
  s3?.close();
  await deleteTopics(brokers(), [names.topic, names.deadLetter]);
  await t?.close();
});

const append = (aggregateId: string, eventId: string) =>
  t.events.appendEvents({ aggregateType: "Block", aggregateId, expectation: { case: "any", value: {} }, events: [{ eventId, eventType: "Noted", data: {} as never }] });

async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
  const json = await relay.metrics.registry.getSingleMetric(name)?.get();
  const values = (json?.values ?? []) as Array<{ value: number; labels: Record<string, string | number> }>;
  return values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((sum, v) => sum + v.value, 0);
}

describe("voided slots", () => {
  it("are never published, and the relay does not stop at them", async () => {
    let release!: () => void;
    gates.set("void-me", new Promise<void>((r) => (release = r)));
    const late = append("v", "void-me");
    late.catch(() => {});
    await waitFor(
      async () => (await t.server.database.db.selectFrom("event_log").select("state").where("event_id", "=", "void-me").executeTakeFirst())?.state === "void",
      { what: "the stalled slot to be voided", timeoutMs: 10_000 },
    );
    const next = await append("v", "after-void");
    expect(next.events[0]!.sequenceNumber).toBe(2n);
    release();
    await expect(late).rejects.toBeDefined();
    gates.delete("void-me");

    await collector.waitForEvents(["after-void"]);
    const row = await t.server.database.db.selectFrom("event_log").select(["state", "global_position"]).where("event_id", "=", "void-me").executeTakeFirstOrThrow();
    expect(row).toEqual({ state: "void", global_position: null });
    await waitFor(() => relay.status().checkpoint >= Number(next.events[0]!.globalPosition), { what: "the checkpoint to pass the stream's later event" });
    expect(collector.messages.filter((m) => m.eventId === "void-me")).toEqual([]);
  });
});

describe("an unreadable committed event", () => {
  it("blocks publication with an alarm and a growing lag, then resumes in order once the object is back", { timeout: 90_000 }, async () => {
    lose.set("lost", undefined);
    const lost = await append("u", "lost");
    const position = Number(lost.events[0]!.globalPosition);
    const behind = [];
    for (const id of ["behind-1", "behind-2", "behind-3"]) behind.push(await append(`u-${id}`, id));

    // The alarm: the relay stops at the event, logs an error naming the object, and says so in metrics.
    await waitFor(() => relay.status().blockedAt === position, { what: "the relay to block at the lost event" });
    await waitFor(async () => (await metric("tidemark_relay_read_errors_total", { reason: "missing" })) >= 3, { what: "repeated read attempts" });
    expect(await metric("tidemark_relay_blocked")).toBe(1);
    expect(await metric("tidemark_relay_blocked_position")).toBe(position);
    const alarm = captured.lines.find((l) => l["alarm"] === "relay_blocked" && l["reason"] === "missing");
    expect(alarm).toMatchObject({ level: 50, position, key: lose.get("lost")!.key });

    // Nothing behind it was published, the checkpoint stays right before it, and the lag grows.
    expect(relay.status().checkpoint).toBe(position - 1);
    expect(collector.messages.filter((m) => m.position >= position)).toEqual([]);
    await waitFor(async () => (await metric("tidemark_relay_lag_positions")) === 4, { what: "position lag 4" });
    const lagBefore = await metric("tidemark_relay_lag_seconds");
    await waitFor(async () => (await metric("tidemark_relay_lag_seconds")) > lagBefore + 1, { what: "the lag in seconds to grow" });

    await s3.put(lose.get("lost")!.key, lose.get("lost")!.body);
    await collector.waitForEvents(["lost", "behind-1", "behind-2", "behind-3"]);
    // One partition: offsets show the production order.
    const order = collector.messages.filter((m) => m.position >= position).sort((a, b) => a.offset - b.offset).map((m) => m.eventId);
    expect(order).toEqual(["lost", "behind-1", "behind-2", "behind-3"]);
    expect(relay.status().blockedAt).toBeUndefined();
    expect(await metric("tidemark_relay_blocked")).toBe(0);
    expect(captured.lines.some((l) => l["msg"] === "relay unblocked: the event is readable again")).toBe(true);
    await waitFor(async () => (await metric("tidemark_relay_lag_positions")) === 0 && (await metric("tidemark_relay_lag_seconds")) === 0, { what: "the lag to return to 0" });
  });
});

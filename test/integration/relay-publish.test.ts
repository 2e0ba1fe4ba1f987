/**
 * The relay against real PostgreSQL, S3Proxy and Kafka: the wire format (docs/CONTRACT.md R3), routing
 * and topic creation (R7), wake-up by NOTIFY with polling as the fallback (R6), and the metrics.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { storedEvent } from "../helpers/stored-events.js";
import { ENVELOPE_CONTENT_TYPE } from "../../core/envelope.js";
import { EventKind } from "../../gen/tidemark/v1/envelope_pb.js";
import type { RelayHandle } from "../../relay/app.js";
import { describeTopic, deleteTopics, startCollector, type Collector } from "../helpers/relay-kafka.js";
import { relayTestConfig, startTestRelay, stopAllRelays, relayTopics } from "../helpers/relay-test.js";
import { beginCommit, writeSlot } from "../helpers/relay-writes.js";
import { startTestServer, stackBrokers, type TestServer } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";

const names = relayTopics("rp");
const orders = `${names.topic}.orders`;
const commands = `${names.topic}.commands`;

let t: TestServer;
let relay: RelayHandle;
let collector: Collector;
const allTopics: string[] = [];

beforeAll(async () => {
  t = await startTestServer();
  const config = relayTestConfig(t.config, {
    TIDEMARK_RELAY_TOPIC: names.topic,
    TIDEMARK_DEAD_LETTER_TOPIC: names.deadLetter,
    TIDEMARK_RELAY_ROUTES: `Order=${orders},kind:command=${commands}`,
    TIDEMARK_RELAY_PARTITIONS: "4",
    TIDEMARK_RELAY_RETENTION_MS: "3600000",
    TIDEMARK_METRICS_ADDR: "127.0.0.1:0",
    // Only a notification can wake this relay within a test's time.
    TIDEMARK_RELAY_POLL_MS: "600000",
  });
  relay = await startTestRelay(config);
  allTopics.push(...relay.topics.topics);
  await waitFor(() => relay.status().topicsReady, { what: "the relay to create its topics", timeoutMs: 60_000 });
  collector = await startCollector(stackBrokers(), [names.topic, orders, commands]);
});

afterAll(async () => {
  await collector?.close();
  await stopAllRelays();
  await deleteTopics(stackBrokers(), allTopics);
  await t?.close();
});

const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

describe("R3 one wire format", () => {
  it("publishes the S3 envelope JSON with global_position, and headers with identity, content type and trace context", async () => {
    const out = await t.events.appendEvents({
      aggregateType: "Shipment",
      aggregateId: "s/1",
      expectation: { case: "noStream", value: {} },
      actor: "alice",
      events: [
        {
          eventId: "r3-e1",
          eventType: "ShipmentBooked",
          data: { weight: 2.5, tags: ["a", "b"] } as never,
          metadata: { traceparent, tracestate: "rojo=00f067aa0ba902b7", correlation_id: "c-9" },
          schemaVersion: 3,
        },
      ],
    });
    const position = Number(out.events[0]!.globalPosition);
    await collector.waitForEvents(["r3-e1"]);
    const m = collector.messages.find((x) => x.eventId === "r3-e1")!;
    expect(m.topic).toBe(names.topic);
    expect(m.key).toBe("Shipment/s/1");

    const stored = JSON.parse((await storedEvent(t.server.objects, "Shipment", "s/1", 1))!.json);
    expect(stored.global_position).toBeUndefined();
    expect(JSON.parse(m.value)).toEqual({ ...stored, global_position: String(position) });
    expect(m.envelope).toMatchObject({ event_id: "r3-e1", sequence_number: "1", actor: "alice", schema_version: 3, data: { weight: 2.5, tags: ["a", "b"] } });

    expect(m.headers).toEqual({
      event_id: "r3-e1",
      event_type: "ShipmentBooked",
      aggregate_type: "Shipment",
      aggregate_id: "s/1",
      sequence_number: "1",
      global_position: String(position),
      "content-type": ENVELOPE_CONTENT_TYPE,
      traceparent,
      tracestate: "rojo=00f067aa0ba902b7",
    });
  });

  it("publishes data exactly as the client sent it: __proto__, constructor and unicode keys included", async () => {
    const data = JSON.parse('{"__proto__":{"x":1},"constructor":{"prototype":2},"ключ":"\\ufeffv","k":[null,true,1.5]}') as never;
    await t.events.appendEvents({
      aggregateType: "Shipment",
      aggregateId: "s/proto",
      expectation: { case: "noStream", value: {} },
      events: [{ eventId: "r3-proto", eventType: "ShipmentBooked", data }],
    });
    await collector.waitForEvents(["r3-proto"]);
    const m = collector.messages.find((x) => x.eventId === "r3-proto")!;
    const stored = (await storedEvent(t.server.objects, "Shipment", "s/proto", 1))!.json;
    // Byte for byte: the message is the event's bytes in its segment with only global_position put first.
    expect(m.value.replace(/^\{"global_position":"\d+",/, "{")).toBe(stored);
    expect(m.value).toContain(`"data":${JSON.stringify(data)}`);
  });

  it("keys by ordering_key when the event sets one", async () => {
    await t.events.appendEvents({
      aggregateType: "Shipment",
      aggregateId: "s/2",
      expectation: { case: "any", value: {} },
      events: [{ eventId: "r3-ok", eventType: "ShipmentBooked", data: {} as never, metadata: { ordering_key: "customer-7" } }],
    });
    await collector.waitForEvents(["r3-ok"]);
    expect(collector.messages.find((x) => x.eventId === "r3-ok")!.key).toBe("customer-7");
  });
});

describe("R7 routing", () => {
  it("routes by aggregate type and kind, first rule first, everything else to the default topic", async () => {
    const append = (aggregateType: string, eventId: string, kind: EventKind) =>
      t.events.appendEvents({ aggregateType, aggregateId: eventId, expectation: { case: "any", value: {} }, events: [{ eventId, eventType: "Happened", data: {} as never, kind }] });
    await append("Order", "r7-order-domain", EventKind.DOMAIN);
    await append("Order", "r7-order-command", EventKind.COMMAND);
    await append("Task", "r7-task-command", EventKind.COMMAND);
    await append("Task", "r7-task-domain", EventKind.DOMAIN);
    const ids = ["r7-order-domain", "r7-order-command", "r7-task-command", "r7-task-domain"];
    await collector.waitForEvents(ids);
    const topicOf = (id: string) => collector.messages.filter((m) => m.eventId === id).map((m) => m.topic);
    expect(ids.map(topicOf)).toEqual([[orders], [orders], [commands], [names.topic]]);
  });

  it("creates every topic with the configured partitions and retention, and reserves the dead-letter topic", async () => {
    for (const topic of [names.topic, orders, commands, names.deadLetter]) {
      expect(await describeTopic(stackBrokers(), topic)).toEqual({ partitions: 4, retentionMs: "3600000" });
    }
  });
});

describe("R6 low latency", () => {
  it("is woken by the commit notification (its polling interval is 10 minutes)", async () => {
    const started = Date.now();
    await t.events.appendEvents({ aggregateType: "Ping", aggregateId: "p1", expectation: { case: "any", value: {} }, events: [{ eventId: "r6-notified", eventType: "Pinged", data: {} as never }] });
    await collector.waitForEvents(["r6-notified"], 20_000);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it("falls back to polling for a commit nobody announced, and only polling finds it", async () => {
    const polling = await startTestRelay(
      relayTestConfig(t.config, { TIDEMARK_RELAY_NAME: "polling", TIDEMARK_RELAY_TOPIC: `${names.topic}.polled`, TIDEMARK_DEAD_LETTER_TOPIC: names.deadLetter, TIDEMARK_RELAY_POLL_MS: "200" }),
    );
    allTopics.push(`${names.topic}.polled`);
    await waitFor(() => polling.status().topicsReady, { what: "the polling relay's topics" });
    const polled = await startCollector(stackBrokers(), [`${names.topic}.polled`]);
    try {
      const slot = await writeSlot(t.server, "Ping", "p2", "r6-silent");
      const open = await beginCommit(t.server, slot, { notify: false });
      await open.commit();
      await polled.waitForEvents(["r6-silent"], 20_000);
      // The notified relay has not seen it: nothing announced it, and its next poll is minutes away.
      expect(collector.messages.some((m) => m.eventId === "r6-silent")).toBe(false);
      expect(relay.status().checkpoint).toBeLessThan(open.position);
      // The next announced commit makes it look, and it finds both in order.
      await t.events.appendEvents({ aggregateType: "Ping", aggregateId: "p2", expectation: { case: "any", value: {} }, events: [{ eventId: "r6-after", eventType: "Pinged", data: {} as never }] });
      await collector.waitForEvents(["r6-silent", "r6-after"]);
    } finally {
      await polled.close();
      await polling.stop();
    }
  });
});

describe("metrics", () => {
  it("exposes published count, batch sizes, commit-to-ack latency and lag on /metrics", async () => {
    await waitFor(async () => (await relay.database.db.selectFrom("global_counter").select("position").executeTakeFirstOrThrow()).position === relay.status().checkpoint, {
      what: "the relay to catch up",
    });
    const scrape = async () => (await fetch(`http://${relay.metricsAddress}/metrics`)).text();
    const value = (text: string, name: string) => {
      const lines = text.split("\n").filter((l) => l.startsWith(name));
      return lines.reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
    };
    // The lag gauges are refreshed every second: wait for the caught-up values.
    const text = await waitFor(async () => {
      const body = await scrape();
      return value(body, "tidemark_relay_lag_positions") === 0 ? body : undefined;
    }, { what: "lag 0 on /metrics" });
    expect(value(text, "tidemark_relay_published_total")).toBeGreaterThanOrEqual(8);
    expect(text).toMatch(new RegExp(`tidemark_relay_published_total\\{topic="${orders.replace(/\./g, "\\.")}"\\} 2`));
    expect(value(text, "tidemark_relay_batch_size_count")).toBeGreaterThan(0);
    expect(value(text, "tidemark_relay_publish_latency_seconds_count")).toBeGreaterThanOrEqual(8);
    expect(value(text, "tidemark_relay_lag_seconds")).toBe(0);
    expect(value(text, "tidemark_relay_active")).toBe(1);
    expect(value(text, "tidemark_relay_blocked")).toBe(0);
    expect(value(text, "tidemark_relay_checkpoint_position")).toBe(relay.status().checkpoint);
  });
});

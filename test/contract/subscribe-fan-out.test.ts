/**
 * Subscribe at scale (issue #11, finding 8): every live subscriber is fed by one shared tail of
 * the commit log. Many concurrent subscribers each get every event exactly once, in position order,
 * with one caught-up marker; one that stops reading stalls nobody and later gets everything;
 * subscribers joining mid-stream hand over without gap or repeat; and the commit log is read about
 * once per commit whatever the number of subscribers.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { PostgresQueryCompiler, type KyselyPlugin, type PluginTransformQueryArgs, type PluginTransformResultArgs, type QueryResult, type RootOperationNode, type UnknownRow } from "kysely";
import { openBackends } from "../../core/backends.js";
import type { Registry } from "../../core/metrics.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { type EventEnvelope, EventKind } from "../../gen/tidemark/v1/envelope_pb.js";
import type { SubscribeRequestSchema, SubscribeResponse } from "../../gen/tidemark/v1/event_store_pb.js";
import { badFields, collect, expectStatus, grpc } from "../helpers/grpc-errors.js";
import { startTestServer, testBackend, testServerConfig, type EventStoreClient, type TestServer } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";

/** An appended event as the test knows it. */
interface Known {
  readonly eventId: string;
  readonly aggregateType: string;
  readonly eventType: string;
  readonly position: number;
}

/** Small pages and buffers, so that a subscriber that stops reading overflows after a few hundred events. */
const TAIL = { pageSize: 32, bufferSize: 64, historySize: 64 };

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer(testServerConfig(), { logTail: TAIL });
});
afterAll(async () => {
  await t?.close();
});

/** Every subscriber a test opened; each is cancelled after its test, so a failed test leaves none behind for the next. */
const opened = new Set<Subscriber>();
afterEach(() => {
  for (const s of opened) s.cancel();
  opened.clear();
});

/** A Subscribe stream consumed in the background (or only on demand), every message kept. */
class Subscriber {
  readonly messages: SubscribeResponse[] = [];
  error: unknown;
  ended = false;
  private readonly controller = new AbortController();
  private readonly stream: AsyncIterator<SubscribeResponse>;

  constructor(client: EventStoreClient, request: MessageInitShape<typeof SubscribeRequestSchema>, consume = true) {
    this.stream = client.subscribe(request, { signal: this.controller.signal })[Symbol.asyncIterator]();
    opened.add(this);
    if (consume) void this.consume();
  }

  /** Reads one message (for a subscriber that is not consumed in the background). */
  async takeOne(): Promise<SubscribeResponse> {
    const next = await this.stream.next();
    if (next.done) throw new Error("stream ended");
    this.messages.push(next.value);
    return next.value;
  }

  /** Consumes the rest of the stream in the background. */
  async consume(): Promise<void> {
    try {
      for (;;) {
        const next = await this.stream.next();
        if (next.done) break;
        this.messages.push(next.value);
      }
    } catch (e) {
      if (!this.controller.signal.aborted) this.error = e;
    } finally {
      this.ended = true;
    }
  }

  /**
   * Every event received, in order, whether it came on its own or in a batch (max_batch). The
   * message position is given for an event that came on its own or last in its batch (the
   * message's position is that event's), and is the event's own position for the others.
   */
  events(): Array<{ eventId: string; position: number; messagePosition: number }> {
    return this.messages.flatMap((m) =>
      eventsOf(m).map((e, i, all) => ({ eventId: e.eventId, position: Number(e.globalPosition), messagePosition: i === all.length - 1 ? Number(m.position) : Number(e.globalPosition) })),
    );
  }

  markers(): number[] {
    return this.messages.flatMap((m) => (m.message.case === "caughtUp" ? [Number(m.position)] : []));
  }

  has(eventId: string): boolean {
    return this.messages.some((m) => eventsOf(m).some((e) => e.eventId === eventId));
  }

  cancel(): void {
    this.controller.abort();
  }
}

/** The events of a message: its one event, or the events of its batch (max_batch). */
function eventsOf(m: SubscribeResponse): readonly EventEnvelope[] {
  return m.message.case === "event" ? [m.message.value] : m.message.case === "events" ? m.message.value.events : [];
}

async function appendBatch(client: EventStoreClient, aggregateType: string, aggregateId: string, eventTypes: readonly string[]): Promise<Known[]> {
  const ids = eventTypes.map((_, i) => `${aggregateId}-${i}`);
  const out = await client.appendEvents({
    aggregateType,
    aggregateId,
    expectation: { case: "any", value: {} },
    events: eventTypes.map((eventType, i) => ({ eventId: ids[i]!, eventType })),
  });
  return out.events.map((e, i) => ({ eventId: e.eventId, aggregateType, eventType: eventTypes[i]!, position: Number(e.globalPosition) }));
}

async function head(client: EventStoreClient): Promise<number> {
  // A marker event: its position is the head once it is acknowledged.
  const [marker] = await appendBatch(client, "FanMark", `mark-${Math.random().toString(36).slice(2)}`, ["Marked"]);
  return marker!.position;
}

async function metric(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const found = registry.getSingleMetric(name);
  if (found === undefined) throw new Error(`metric ${name} is not registered`);
  const { values } = await found.get();
  const value = values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l));
  if (value === undefined) throw new Error(`metric ${name}${JSON.stringify(labels)} has no value`);
  return value.value;
}

/**
 * What a subscriber must have received: after its caught-up marker exactly the known events above
 * the marker that it wants; before the marker, the events between its start and the marker (for
 * from_end: a suffix of them, all committed after the call).
 */
function checkDelivery(
  sub: Subscriber,
  known: readonly Known[],
  spec: { readonly start: number | "end"; readonly headBefore: number; readonly wants: (k: Known) => boolean },
  label: string,
): void {
  expect(sub.error, label).toBeUndefined();
  const markers = sub.markers();
  expect(markers, `${label}: one caught-up marker`).toHaveLength(1);
  const marker = markers[0]!;
  expect(marker, `${label}: caught up at least to the head before the call`).toBeGreaterThanOrEqual(spec.headBefore);
  const events = sub.events();
  for (const e of events) expect(e.messagePosition, `${label}: message position is the event's`).toBe(e.position);
  const markerIndex = sub.messages.findIndex((m) => m.message.case === "caughtUp");
  const before = sub.messages.slice(0, markerIndex).flatMap((m) => eventsOf(m).map((e) => e.eventId));
  const after = sub.messages.slice(markerIndex + 1).flatMap((m) => eventsOf(m).map((e) => e.eventId));
  const wanted = [...known].sort((a, b) => a.position - b.position).filter(spec.wants);
  expect(after, `${label}: live events`).toEqual(wanted.filter((k) => k.position > marker).map((k) => k.eventId));
  if (spec.start === "end") {
    const candidates = wanted.filter((k) => k.position > spec.headBefore && k.position <= marker).map((k) => k.eventId);
    expect(before, `${label}: events before the marker`).toEqual(candidates.slice(candidates.length - before.length));
  } else {
    const start = spec.start;
    expect(before, `${label}: catch-up events`).toEqual(wanted.filter((k) => k.position > start && k.position <= marker).map((k) => k.eventId));
  }
}

describe("Subscribe fan-out", () => {
  it("100 subscribers started while appends run each get every event once, in order, with one caught-up marker", async () => {
    const base = await head(t.events);
    const known: Known[] = [];
    for (let i = 0; i < 30; i++) known.push(...(await appendBatch(t.events, i % 3 === 0 ? "FanB" : "FanA", `pre-${i}`, [i % 2 === 0 ? "Tick.even" : "Tock.odd"])));
    const writers = Promise.all(
      Array.from({ length: 4 }, async (_, w) => {
        for (let i = 0; i < 30; i++) {
          const type = (w + i) % 3 === 0 ? "FanB" : "FanA";
          known.push(...(await appendBatch(t.events, type, `w${w}-${i}`, i % 4 === 0 ? ["Tick.a", "Tock.b", "Tick.c"] : [i % 2 === 0 ? "Tick.x" : "Tock.y"])));
        }
      }),
    );
    const subs: Array<{ sub: Subscriber; start: number | "end"; headBefore: number; wants: (k: Known) => boolean; label: string }> = [];
    const all = () => true;
    for (let wave = 0; wave < 4; wave++) {
      // Each wave starts once the writers are further along, so subscribers join a moving log.
      await waitFor(() => known.length >= 30 + wave * 35, { what: `wave ${wave}` });
      const headBefore = Math.max(...known.map((k) => k.position));
      for (let j = 0; j < 25; j++) {
        const i = wave * 25 + j;
        // Every other one takes its events in batches of up to 7 (max_batch).
        const batched = i % 2 === 1 ? { maxBatch: 7 } : {};
        const label = `subscriber ${i}${i % 2 === 1 ? " (batched)" : ""}`;
        switch (i % 5) {
          case 0:
            subs.push({ sub: new Subscriber(t.events, { start: { case: "afterPosition", value: BigInt(base) }, ...batched }), start: base, headBefore, wants: all, label });
            break;
          case 1:
            subs.push({ sub: new Subscriber(t.events, { start: { case: "fromEnd", value: {} }, ...batched }), start: "end", headBefore, wants: all, label });
            break;
          case 2: {
            const start = Math.max(base, headBefore - (i % 13));
            subs.push({ sub: new Subscriber(t.events, { start: { case: "afterPosition", value: BigInt(start) }, ...batched }), start, headBefore, wants: all, label });
            break;
          }
          case 3:
            subs.push({
              sub: new Subscriber(t.events, { start: { case: "afterPosition", value: BigInt(base) }, aggregateTypes: ["FanA"], ...batched }),
              start: base,
              headBefore,
              wants: (k) => k.aggregateType === "FanA",
              label: `${label} (FanA)`,
            });
            break;
          default: {
            const start = Math.max(base, headBefore - 40);
            subs.push({
              sub: new Subscriber(t.events, { start: { case: "afterPosition", value: BigInt(start) }, eventTypePrefix: "Tick.", ...batched }),
              start,
              headBefore,
              wants: (k) => k.eventType.startsWith("Tick."),
              label: `${label} (Tick.)`,
            });
          }
        }
      }
    }
    await writers;
    // The sentinel matches every filter: a subscriber that has it has everything before it.
    known.push(...(await appendBatch(t.events, "FanA", "sentinel", ["Tick.sentinel"])));
    await waitFor(() => subs.every((s) => s.sub.has("sentinel-0") || s.sub.error !== undefined || s.sub.ended), { timeoutMs: 45_000, what: "every subscriber to reach the sentinel" });
    for (const s of subs) checkDelivery(s.sub, known, s, s.label);
    // Every one of them ends up fed by the shared tail, whether it caught up alone or not.
    await waitFor(async () => (await metric(t.server.registry, "tidemark_subscribers", { state: "live" })) === subs.length, { what: "every subscriber to be live" });
    for (const s of subs) s.sub.cancel();
    await waitFor(async () => (await metric(t.server.registry, "tidemark_subscribers", { state: "live" })) === 0, { what: "cancelled subscribers to leave" });
  });

  it("a subscriber that stops reading stalls nobody, is detached, and later gets everything once, in order", async () => {
    const base = await head(t.events);
    // The slow one takes batches: reading on its own, it loads the events of a batch together.
    const slow = new Subscriber(t.events, { start: { case: "afterPosition", value: BigInt(base) }, maxBatch: 16 }, false);
    expect((await slow.takeOne()).message.case).toBe("caughtUp");
    const fast = new Subscriber(t.events, { start: { case: "afterPosition", value: BigInt(base) } });
    await waitFor(() => fast.markers().length === 1, { what: "the fast subscriber to catch up" });
    const detachedBefore = await metric(t.server.registry, "tidemark_subscribe_slow_detached_total");

    const known: Known[] = [];
    for (let i = 0; i < 20; i++) known.push(...(await appendBatch(t.events, "FanSlow", `slow-${i}`, Array.from({ length: 50 }, () => "Tick.slow"))));
    // The fast one gets everything while the slow one reads nothing.
    await waitFor(() => fast.events().length === known.length, { what: "the fast subscriber to get every event" });
    await waitFor(async () => (await metric(t.server.registry, "tidemark_subscribe_slow_detached_total")) > detachedBefore, { what: "the slow subscriber to be detached" });
    expect(slow.messages).toHaveLength(1);
    checkDelivery(fast, known, { start: base, headBefore: base, wants: () => true }, "fast");

    void slow.consume();
    await waitFor(() => slow.events().length >= known.length, { what: "the slow subscriber to catch up" });
    checkDelivery(slow, known, { start: base, headBefore: base, wants: () => true }, "slow");
    // Back at the tail, it is fed with the others again.
    await waitFor(async () => (await metric(t.server.registry, "tidemark_subscribers", { state: "live" })) === 2, { what: "the slow subscriber to re-join the tail" });
    expect(await metric(t.server.registry, "tidemark_subscribers", { state: "catching_up" })).toBe(0);
    known.push(...(await appendBatch(t.events, "FanSlow", "slow-live", ["Tick.a", "Tick.b"])));
    await waitFor(() => slow.has("slow-live-1") && fast.has("slow-live-1"), { what: "both to get the live events" });
    checkDelivery(slow, known, { start: base, headBefore: base, wants: () => true }, "slow, live again");
    checkDelivery(fast, known, { start: base, headBefore: base, wants: () => true }, "fast, live");
    slow.cancel();
    fast.cancel();
  });

  it("subscribers joining a moving log from many distances hand over without gap or repeat", async () => {
    const base = await head(t.events);
    const known: Known[] = [];
    // History first, so some starts are further back than the tail remembers.
    for (let i = 0; i < 8; i++) known.push(...(await appendBatch(t.events, "FanJoin", `hist-${i}`, Array.from({ length: 100 }, () => "Tick.h"))));
    let writing = true;
    const writer = (async () => {
      for (let i = 0; writing; i++) known.push(...(await appendBatch(t.events, "FanJoin", `live-${i}`, ["Tick.l"])));
    })();
    const ownReadsBefore = await metric(t.server.registry, "tidemark_subscribe_log_reads_total", { reader: "own" });
    const subs: Array<{ sub: Subscriber; start: number; headBefore: number; label: string }> = [];
    try {
      for (const distance of [0, 1, 5, 30, 63, 64, 65, 100, 200, 300, 500, 799]) {
        const headBefore = Math.max(...known.map((k) => k.position));
        const start = Math.max(base, headBefore - distance);
        const batched = distance % 2 === 1 ? { maxBatch: 10 } : {};
        subs.push({ sub: new Subscriber(t.events, { start: { case: "afterPosition", value: BigInt(start) }, ...batched }), start, headBefore, label: `distance ${distance}${distance % 2 === 1 ? " (batched)" : ""}` });
        // The next one starts once a few more events committed.
        const count = known.length;
        await waitFor(() => known.length >= count + 3, { what: "more live events" });
      }
    } finally {
      writing = false;
      await writer;
    }
    known.push(...(await appendBatch(t.events, "FanJoin", "join-end", ["Tick.end"])));
    await waitFor(() => subs.every((s) => s.sub.has("join-end-0") || s.sub.ended), { timeoutMs: 30_000, what: "every subscriber to reach the end" });
    for (const s of subs) checkDelivery(s.sub, known, { ...s, wants: (k) => k.position > base }, s.label);
    // Those far behind caught up on their own first; all of them ended up on the tail.
    expect(await metric(t.server.registry, "tidemark_subscribe_log_reads_total", { reader: "own" })).toBeGreaterThan(ownReadsBefore);
    await waitFor(async () => (await metric(t.server.registry, "tidemark_subscribers", { state: "live" })) === subs.length, { what: "every subscriber to be live" });
    for (const s of subs) s.sub.cancel();
  });

  it("cancelled subscribers leave the tail; bad filters are refused", async () => {
    const subs = Array.from({ length: 5 }, () => new Subscriber(t.events, { start: { case: "fromEnd", value: {} } }));
    await waitFor(async () => (await metric(t.server.registry, "tidemark_subscribers", { state: "live" })) === 5, { what: "five live subscribers" });
    for (const s of subs) s.cancel();
    await waitFor(async () => (await metric(t.server.registry, "tidemark_subscribers", { state: "live" })) === 0, { what: "the cancelled ones to leave" });
    expect(await metric(t.server.registry, "tidemark_subscribers", { state: "catching_up" })).toBe(0);

    const bad = t.events.subscribe({ start: { case: "fromEnd", value: {} }, aggregateTypes: ["ok", "no/slash"] })[Symbol.asyncIterator]();
    const error = await expectStatus(bad.next(), grpc.status.INVALID_ARGUMENT);
    expect(badFields(error)).toEqual(["aggregate_types[1]"]);
  });

  it("hands live subscribers and the next read this process's new events from memory; another process reads them from S3", async () => {
    const requests = (objects: TestServer["server"]["objects"]) => objects.requests.get + objects.requests.getRange;
    const subs = Array.from({ length: 3 }, () => new Subscriber(t.events, { start: { case: "fromEnd", value: {} } }));
    await waitFor(() => subs.every((s) => s.markers().length === 1), { what: "three caught-up subscribers" });
    const before = requests(t.server.objects);
    const known: Known[] = [];
    for (let i = 0; i < 10; i++) known.push(...(await appendBatch(t.events, "FanMem", `mem-${i}`, ["Tick.a", "Tick.b"])));
    await waitFor(() => subs.every((s) => s.has("mem-9-1")), { what: "every subscriber to get the events" });
    for (const s of subs) checkDelivery(s, known, { start: "end", headBefore: 0, wants: () => true }, "in memory");
    const read = await collect(t.events.readStream({ aggregateType: "FanMem", aggregateId: "mem-3" }));
    expect(read.map((r) => r.event!.eventId)).toEqual(["mem-3-0", "mem-3-1"]);
    expect(requests(t.server.objects), "GETs of the process that wrote them").toBe(before);

    // A second server on the same store has no lines of them: it reads the same events from S3.
    // (An embedded data directory serves one process only: the services backend shows this half.)
    if (testBackend() === "embedded") return;
    const other = await startTestServer(t.config, { logTail: TAIL });
    try {
      const otherBefore = requests(other.server.objects);
      const again = await collect(other.events.readStream({ aggregateType: "FanMem", aggregateId: "mem-3" }));
      expect(again.map((r) => [r.event!.eventId, r.event!.globalPosition])).toEqual(read.map((r) => [r.event!.eventId, r.event!.globalPosition]));
      expect(again.map((r) => r.event)).toEqual(read.map((r) => r.event));
      expect(requests(other.server.objects)).toBeGreaterThan(otherBefore);
    } finally {
      // stop, not close: close drops the schema, which is this file's server's too.
      await other.stop();
    }
  });

  it("live subscriptions end cleanly when the server shuts down", async () => {
    const other = await startTestServer(testServerConfig(), { logTail: TAIL });
    try {
      const subs = Array.from({ length: 3 }, () => new Subscriber(other.events, { start: { case: "fromEnd", value: {} } }));
      await waitFor(async () => (await metric(other.server.registry, "tidemark_subscribers", { state: "live" })) === 3, { what: "three live subscribers" });
      await appendBatch(other.events, "FanStop", "before-stop", ["Tick.stop"]);
      await waitFor(() => subs.every((s) => s.has("before-stop-0")), { what: "the event to arrive" });
      await other.server.stop(5000);
      await waitFor(() => subs.every((s) => s.ended), { what: "every stream to end" });
      for (const s of subs) expect(s.error).toBeUndefined();
    } finally {
      await other.close();
    }
  });
});

describe("Subscribe in batches (max_batch, A5)", () => {
  /** Checks the batch messages of a stream and returns its events in order. */
  const batchedEvents = (messages: readonly SubscribeResponse[], maxBatch: number, label: string): EventEnvelope[] => {
    expect(messages.filter((m) => m.message.case === "event"), `${label}: no single-event message`).toEqual([]);
    for (const m of messages) {
      if (m.message.case !== "events") continue;
      const events = m.message.value.events;
      expect(events.length, `${label}: batch size`).toBeGreaterThanOrEqual(1);
      expect(events.length, `${label}: batch size`).toBeLessThanOrEqual(maxBatch);
      expect(Number(m.position), `${label}: a batch's position is its last event's`).toBe(Number(events.at(-1)!.globalPosition));
    }
    return messages.flatMap(eventsOf);
  };
  const sizes = (messages: readonly SubscribeResponse[]) => messages.flatMap((m) => (m.message.case === "events" ? [m.message.value.events.length] : []));

  it("catch-up comes in messages of at most max_batch events, in order; resuming from a batch's position repeats nothing", async () => {
    const base = await head(t.events);
    const known: Known[] = [];
    for (let i = 0; i < 5; i++) known.push(...(await appendBatch(t.events, "FanBatch", `cu-${i}`, Array.from({ length: 12 }, () => "Tick.b"))));
    const messages = await collect(t.events.subscribe({ start: { case: "afterPosition", value: BigInt(base) }, maxBatch: 10, stopAtCaughtUp: true }));
    expect(messages.at(-1)!.message.case).toBe("caughtUp");
    const events = batchedEvents(messages, 10, "catch-up");
    expect(events.map((e) => e.eventId)).toEqual(known.map((k) => k.eventId));
    // Several events per message: far fewer messages than events.
    expect(Math.max(...sizes(messages))).toBeGreaterThan(1);
    expect(messages.length).toBeLessThan(known.length / 2);
    // The same events as one per message, field for field.
    const single = (await collect(t.events.subscribe({ start: { case: "afterPosition", value: BigInt(base) }, stopAtCaughtUp: true }))).flatMap(eventsOf);
    expect(events).toEqual(single);

    const second = messages[1]!;
    expect(second.message.case).toBe("events");
    const resumed = await collect(t.events.subscribe({ start: { case: "afterPosition", value: second.position }, maxBatch: 10, stopAtCaughtUp: true }));
    expect(batchedEvents(resumed, 10, "resumed").map((e) => e.eventId)).toEqual(known.filter((k) => k.position > Number(second.position)).map((k) => k.eventId));
  });

  it("live events come in batches of what is ready, filtered by kind, with no gap or repeat", async () => {
    const sub = new Subscriber(t.events, { start: { case: "fromEnd", value: {} }, maxBatch: 100 });
    const commands = new Subscriber(t.events, { start: { case: "fromEnd", value: {} }, maxBatch: 5, kinds: [EventKind.COMMAND] });
    await waitFor(() => sub.markers().length === 1 && commands.markers().length === 1, { what: "both to catch up" });
    const known: Known[] = [];
    for (let i = 0; i < 3; i++) known.push(...(await appendBatch(t.events, "FanBatch", `blive-${i}`, Array.from({ length: 40 }, () => "Tick.l"))));
    const out = await t.events.appendEvents({
      aggregateType: "FanBatch",
      aggregateId: "live-kinds",
      expectation: { case: "any", value: {} },
      events: Array.from({ length: 20 }, (_, i) => ({ eventId: `live-kinds-${i}`, eventType: "Tick.k", kind: i % 2 === 0 ? EventKind.COMMAND : EventKind.DOMAIN })),
    });
    known.push(...out.events.map((e) => ({ eventId: e.eventId, aggregateType: "FanBatch", eventType: "Tick.k", position: Number(e.globalPosition) })));
    await waitFor(() => sub.has("live-kinds-19") && commands.has("live-kinds-18"), { what: "both to get the last events" });
    const afterMarker = (s: Subscriber) => s.messages.slice(s.messages.findIndex((m) => m.message.case === "caughtUp") + 1);
    expect(batchedEvents(afterMarker(sub), 100, "live").map((e) => e.eventId)).toEqual(known.map((k) => k.eventId));
    // A commit of 40 events is handed to the subscriber at once: it comes in a few messages, not 40.
    expect(Math.max(...sizes(sub.messages))).toBeGreaterThan(1);
    expect(batchedEvents(afterMarker(commands), 5, "commands").map((e) => e.eventId)).toEqual(Array.from({ length: 10 }, (_, i) => `live-kinds-${2 * i}`));
    expect(sub.error).toBeUndefined();
    expect(commands.error).toBeUndefined();
  });

  it("max_batch above 1000 is INVALID_ARGUMENT naming it; 1000 is accepted", async () => {
    const error = await expectStatus(collect(t.events.subscribe({ start: { case: "fromEnd", value: {} }, maxBatch: 1001, stopAtCaughtUp: true })), grpc.status.INVALID_ARGUMENT);
    expect(badFields(error)).toEqual(["max_batch"]);
    const ok = await collect(t.events.subscribe({ start: { case: "fromEnd", value: {} }, maxBatch: 1000, stopAtCaughtUp: true }));
    expect(ok.map((m) => m.message.case)).toEqual(["caughtUp"]);
  });
});

/**
 * Counts reads of the commit log by position (`committedAfter`: event_log rows above a global
 * position), on the real database: the one query a Subscribe reader repeats as commits arrive.
 */
class CommitLogReads implements KyselyPlugin {
  count = 0;
  private readonly compiler = new PostgresQueryCompiler();

  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    if (args.node.kind === "SelectQueryNode" && /from "event_log" where .*"global_position" > \$\d/.test(this.compiler.compileQuery(args.node, args.queryId).sql)) this.count += 1;
    return args.node;
  }

  transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return Promise.resolve(args.result);
  }
}

describe("Subscribe reads of the commit log", () => {
  it("stay about one per commit whatever the number of subscribers", async () => {
    const config = testServerConfig();
    const backends = await openBackends(config);
    const reads = new CommitLogReads();
    const counted = await startTestServer(config, {
      database: { ...backends.database, db: backends.database.db.withPlugin(reads) },
      objects: backends.objects,
      listen: backends.listen,
    });
    const K = 20;
    /** Reads while `n` live subscribers receive K commits, one after another. */
    const readsWith = async (n: number, round: string): Promise<number> => {
      const subs = Array.from({ length: n }, () => new Subscriber(counted.events, { start: { case: "fromEnd", value: {} } }));
      await waitFor(() => subs.every((s) => s.markers().length === 1), { what: `${n} subscribers to catch up` });
      const before = reads.count;
      for (let i = 0; i < K; i++) await appendBatch(counted.events, "FanCount", `${round}-${i}`, ["Counted"]);
      await waitFor(() => subs.every((s) => s.events().length === K), { timeoutMs: 30_000, what: `${n} subscribers to get ${K} events` });
      const used = reads.count - before;
      for (const s of subs) {
        expect(s.error).toBeUndefined();
        expect(s.events().map((e) => e.eventId)).toEqual(Array.from({ length: K }, (_, i) => `${round}-${i}-0`));
        s.cancel();
      }
      return used;
    };
    try {
      const one = await readsWith(1, "one");
      const hundred = await readsWith(100, "hundred");
      // One reader per process: the reads follow the commits, not the subscribers. (One reader per
      // subscriber needs about 100 × K.)
      expect(hundred, `reads with 1 subscriber: ${one}, with 100: ${hundred}`).toBeLessThanOrEqual(3 * K);
      expect(hundred).toBeLessThanOrEqual(2 * one + 10);
    } finally {
      await counted.server.stop(1000);
      await backends.close();
      await counted.close();
    }
  });
});

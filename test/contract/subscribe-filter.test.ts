/**
 * Filtered Subscribe (docs/CONTRACT.md A3): the server sends only the events a filter matches
 * (database, aggregate-type prefix, event-type set, kind), checkpoints while it skips the others so a
 * client resumes without rescanning them, ends with OK after the caught-up marker when the client
 * asks for stop_at_caught_up (A5), and refuses bad filters with INVALID_ARGUMENT naming the field (A2).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { EventKind } from "../../gen/tidemark/v1/envelope_pb.js";
import type { SubscribeRequestSchema, SubscribeResponse } from "../../gen/tidemark/v1/event_store_pb.js";
import { badFields, collect, expectStatus, grpc } from "../helpers/grpc-errors.js";
import { startTestServer, testServerConfig, type TestServer } from "../helpers/test-server.js";

/**
 * Checkpoints every 10 positions (and, in effect, never by time); filtered reads of 16 positions, so
 * that a rescan of a few hundred events shows as many reads of the log.
 */
const TAIL = { checkpointPositions: 10, checkpointMs: 3_600_000, scanWindow: 16 };

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer(testServerConfig({ TIDEMARK_MAX_SUBSCRIBE_FILTER_ENTRIES: "5" }), { logTail: TAIL });
});
afterAll(async () => {
  await t?.close();
});

type Request = MessageInitShape<typeof SubscribeRequestSchema>;
/** The filter fields of a request. */
interface Filter {
  readonly databases?: string[];
  readonly aggregateTypes?: string[];
  readonly aggregateTypePrefix?: string;
  readonly eventTypes?: string[];
  readonly eventTypePrefix?: string;
  readonly kinds?: EventKind[];
}

let unique = 0;
const next = () => `${Date.now().toString(36)}-${unique++}`;

/** Appends events to one aggregate; returns their positions. */
async function append(aggregateType: string, aggregateId: string, events: ReadonlyArray<{ type: string; kind?: EventKind }>): Promise<number[]> {
  const out = await t.events.appendEvents({
    aggregateType,
    aggregateId,
    expectation: { case: "any", value: {} },
    events: events.map((e) => ({ eventId: `ev-${next()}`, eventType: e.type, kind: e.kind ?? EventKind.DOMAIN })),
  });
  return out.events.map((e) => Number(e.globalPosition));
}

/** A batch read: the whole stream of a stop_at_caught_up subscription (it must end by itself). */
async function batch(request: Request & Filter): Promise<SubscribeResponse[]> {
  return collect(t.events.subscribe({ ...request, stopAtCaughtUp: true }));
}

const events = (messages: readonly SubscribeResponse[]) =>
  messages.flatMap((m) => (m.message.case === "event" ? [`${m.message.value.aggregateType}:${m.message.value.aggregateId}:${m.message.value.eventType}`] : []));
const positions = (messages: readonly SubscribeResponse[]) => messages.map((m) => Number(m.position));

/** The log every filter case reads: three databases, two aggregate-type families, both kinds. */
let base = 0;
let head = 0;
beforeAll(async () => {
  base = (await append("FilterMark", `mark-${next()}`, [{ type: "Marked" }]))[0]!;
  for (let i = 0; i < 4; i++) {
    await append("Order.eu", `east/o-${i}`, [{ type: "OrderPlaced" }, { type: "OrderShipped" }]);
    await append("Order.us", `west/o-${i}`, [{ type: "OrderPlaced" }, { type: "OrderCancelled" }]);
    await append("Invoice", `east/i-${i}`, [{ type: "InvoiceSent" }, { type: "SendReminder", kind: EventKind.COMMAND }]);
    await append("Invoice", `nodb-${i}`, [{ type: "InvoiceSent" }]);
  }
  head = (await append("FilterMark", `mark-${next()}`, [{ type: "Marked" }]))[0]!;
});

describe("filtered Subscribe (A3)", () => {
  const from = (): Request & Filter => ({ start: { case: "afterPosition", value: BigInt(base) } });

  it("by database, aggregate-type prefix, event-type set and kind: only matching events, in order, then caught up and OK", async () => {
    const cases: Array<{ filter: Filter; wants: (e: string) => boolean; count: number }> = [
      { filter: { databases: ["east"] }, wants: (e) => e.split(":")[1]!.startsWith("east/"), count: 16 },
      { filter: { aggregateTypePrefix: "Order." }, wants: (e) => e.startsWith("Order."), count: 16 },
      { filter: { eventTypes: ["OrderShipped", "OrderCancelled"] }, wants: (e) => /:(OrderShipped|OrderCancelled)$/.test(e), count: 8 },
      { filter: { kinds: [EventKind.COMMAND] }, wants: (e) => e.endsWith(":SendReminder"), count: 4 },
      { filter: { kinds: [EventKind.DOMAIN], databases: ["east"], aggregateTypePrefix: "Inv" }, wants: (e) => e.startsWith("Invoice:east/") && e.endsWith(":InvoiceSent"), count: 4 },
      { filter: { eventTypes: ["InvoiceSent"], aggregateTypes: ["Invoice"], eventTypePrefix: "Inv" }, wants: (e) => e.startsWith("Invoice:") && e.endsWith(":InvoiceSent"), count: 8 },
    ];
    const all = events(await batch(from())).filter((e) => !e.startsWith("FilterMark:"));
    expect(all).toHaveLength(28);
    for (const c of cases) {
      const label = JSON.stringify(c.filter);
      const messages = await batch({ ...from(), ...c.filter });
      const got = events(messages);
      expect(got, label).toEqual(all.filter(c.wants));
      expect(got, label).toHaveLength(c.count);
      // The stream ended by itself (collect returned) right after the one caught-up marker.
      expect(messages.at(-1)!.message.case, label).toBe("caughtUp");
      expect(messages.filter((m) => m.message.case === "caughtUp"), label).toHaveLength(1);
      expect(Number(messages.at(-1)!.position), label).toBeGreaterThanOrEqual(head);
      const p = positions(messages);
      expect(p, `${label}: positions never go back`).toEqual([...p].sort((a, b) => a - b));
    }
  });

  it("sends checkpoints while nothing matches; resuming from the last one rescans nothing and repeats nothing", async () => {
    const start = (await append("FilterMark", `mark-${next()}`, [{ type: "Marked" }]))[0]!;
    const [early] = await append("Rare", `east/r-${next()}`, [{ type: "RareHappened" }]);
    for (let i = 0; i < 20; i++) await append("Noise", `east/n-${next()}`, Array.from({ length: 10 }, () => ({ type: "Noise" })));
    const end = (await append("FilterMark", `mark-${next()}`, [{ type: "Marked" }]))[0]!;
    const rare: Request & Filter = { start: { case: "afterPosition", value: BigInt(start) }, aggregateTypes: ["Rare"], checkpoints: true };
    // Without asking for them, the same filter sends no checkpoint (clients older than checkpoints).
    expect((await batch({ ...rare, checkpoints: false })).map((m) => m.message.case)).toEqual(["event", "caughtUp"]);

    const readsBefore = t.server.tail.stats.ownReads;
    const first = await batch(rare);
    const fullScan = t.server.tail.stats.ownReads - readsBefore;
    expect(events(first)).toEqual([expect.stringMatching(/^Rare:/)]);
    expect(Number(first[0]!.position)).toBe(early);
    const checkpoints = first.filter((m) => m.message.case === "checkpoint").map((m) => Number(m.position));
    // 200 skipped positions, a checkpoint at least every 10 of them (and never one that repeats).
    expect(checkpoints.length).toBeGreaterThanOrEqual(10);
    expect(new Set(checkpoints).size).toBe(checkpoints.length);
    const p = positions(first);
    for (let i = 1; i < p.length; i++) expect(p[i]!, `message ${i} moves forward`).toBeGreaterThan(p[i - 1]!);
    const caughtUp = Number(first.at(-1)!.position);
    expect(caughtUp).toBeGreaterThanOrEqual(end);

    // Resuming from the last checkpoint: only what came after it, read in a page or two.
    const last = checkpoints.at(-1)!;
    expect(last).toBeGreaterThan(early! + 150);
    const [late] = await append("Rare", `east/r-${next()}`, [{ type: "RareHappened" }]);
    const resumeReads = t.server.tail.stats.ownReads;
    const resumed = await batch({ ...rare, start: { case: "afterPosition", value: BigInt(last) } });
    const resumeScan = t.server.tail.stats.ownReads - resumeReads;
    expect(events(resumed)).toEqual([expect.stringMatching(/^Rare:/)]);
    expect(resumed.filter((m) => m.message.case === "event").map((m) => Number(m.position))).toEqual([late]);
    expect(Math.min(...positions(resumed))).toBeGreaterThan(last);
    expect(fullScan).toBeGreaterThanOrEqual(12);
    expect(resumeScan).toBeLessThanOrEqual(3);
  });

  it("in batches (max_batch): the same events and the same checkpoints, each checkpoint a message of its own (A5)", async () => {
    const start = (await append("FilterMark", `mark-${next()}`, [{ type: "Marked" }]))[0]!;
    await append("Rare", `east/rb-${next()}`, [{ type: "RareHappened" }, { type: "RareHappened" }]);
    for (let i = 0; i < 6; i++) await append("Noise", `east/nb-${next()}`, Array.from({ length: 10 }, () => ({ type: "Noise" })));
    await append("Rare", `east/rb-${next()}`, [{ type: "RareHappened" }]);
    const request: Request & Filter = { start: { case: "afterPosition", value: BigInt(start) }, aggregateTypes: ["Rare"], checkpoints: true };
    const single = await batch(request);
    const batched = await batch({ ...request, maxBatch: 10 });
    const flat = (messages: readonly SubscribeResponse[]) =>
      messages.flatMap((m) => (m.message.case === "events" ? m.message.value.events.map((e) => `event@${e.globalPosition}`) : m.message.case === "event" ? [`event@${m.position}`] : [`${m.message.case}@${m.position}`]));
    expect(batched.filter((m) => m.message.case === "event")).toEqual([]);
    expect(single.filter((m) => m.message.case === "checkpoint").length).toBeGreaterThanOrEqual(3);
    expect(flat(batched)).toEqual(flat(single));
  });

  it("a live filtered subscriber gets a checkpoint past events it does not want", async () => {
    const stop = new AbortController();
    const iterator = t.events.subscribe({ start: { case: "fromEnd", value: {} }, aggregateTypes: ["NeverWritten"], checkpoints: true }, { signal: stop.signal })[Symbol.asyncIterator]();
    try {
      const marker = await iterator.next();
      expect(marker.value?.message.case).toBe("caughtUp");
      const positions: number[] = [];
      for (let i = 0; i < 3; i++) positions.push(...(await append("Noise", `east/live-${next()}`, Array.from({ length: 10 }, () => ({ type: "Noise" })))));
      const last = Math.max(...positions);
      // Checkpoints only (nothing matches), each further on, until one is within a checkpoint interval of the last.
      let reached = Number(marker.value!.position);
      while (reached < last - TAIL.checkpointPositions) {
        const m = await iterator.next();
        expect(m.value?.message.case).toBe("checkpoint");
        expect(Number(m.value!.position)).toBeGreaterThan(reached);
        reached = Number(m.value!.position);
      }
      expect(reached).toBeLessThanOrEqual(last);
    } finally {
      stop.abort();
      await iterator.return?.();
    }
  });

  it("an unfiltered subscriber gets no checkpoints, even when it asks", async () => {
    const messages = await batch({ start: { case: "afterPosition", value: BigInt(base) }, checkpoints: true });
    expect(messages.filter((m) => m.message.case === "checkpoint")).toEqual([]);
  });

  it("stop_at_caught_up from the end: only the marker, then OK", async () => {
    const messages = await batch({ start: { case: "fromEnd", value: {} }, eventTypes: ["OrderPlaced"] });
    expect(messages.map((m) => m.message.case)).toEqual(["caughtUp"]);
  });

  it("bad filters are INVALID_ARGUMENT naming the field", async () => {
    const cases: Array<{ filter: Filter; fields: string[] }> = [
      { filter: { kinds: [99 as EventKind] }, fields: ["kinds[0]"] },
      { filter: { kinds: [EventKind.DOMAIN, EventKind.UNSPECIFIED] }, fields: ["kinds[1]"] },
      { filter: { eventTypes: ["A", "B", "C", "D", "E", "F"] }, fields: ["event_types"] },
      { filter: { eventTypes: ["Good", "not valid"] }, fields: ["event_types[1]"] },
      { filter: { aggregateTypePrefix: "9Order" }, fields: ["aggregate_type_prefix"] },
      { filter: { aggregateTypePrefix: "Order/" }, fields: ["aggregate_type_prefix"] },
      { filter: { aggregateTypePrefix: "O".repeat(65) }, fields: ["aggregate_type_prefix"] },
      { filter: { databases: ["a", "b", "c", "d", "e", "f"] }, fields: ["databases"] },
    ];
    for (const c of cases) {
      const error = await expectStatus(collect(t.events.subscribe({ start: { case: "afterPosition", value: 0n }, stopAtCaughtUp: true, ...c.filter })), grpc.status.INVALID_ARGUMENT);
      expect(badFields(error), JSON.stringify(c.filter)).toEqual(c.fields);
    }
  });
});

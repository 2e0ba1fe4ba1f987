/**
 * Schema evolution on read in the server (docs/CONTRACT.md E1, E2), against both storages: the
 * instance fold reads every event in its latest shape; ReadStream and Subscribe return the stored
 * events unless the client asks for `latest_schema`, and then the upcasted ones (chains v1 → v2 →
 * v3), the stored hashes kept; a version the upcasters cannot bring up to date fails the call with
 * FAILED_PRECONDITION naming it. The stored bytes never change.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Upcasters, type Upcaster } from "../../core/index.js";
import type { SubscribeResponse } from "../../gen/tidemark/v1/event_store_pb.js";
import { collect, expectStatus, grpc } from "../helpers/grpc-errors.js";
import { startTestServer, uniqueId, type TestServer } from "../helpers/test-server.js";

const ORDER = uniqueId("Order");

const UPCASTERS: Upcaster[] = [
  // Order v1 `{ amount }` → v2 `{ total }` → v3 `{ total: { amount, currency } }`.
  { eventType: "OrderPlaced", fromVersion: 1, upcast: (data) => ({ total: data["amount"] ?? 0 }) },
  { eventType: "OrderPlaced", fromVersion: 2, upcast: (data) => ({ total: { amount: data["total"] ?? 0, currency: "EUR" } }) },
  // Only v2 → v3: nothing brings a v1 OrderCancelled up to date.
  { eventType: "OrderCancelled", fromVersion: 2, upcast: (data) => ({ ...data, reason: data["reason"] ?? "unknown" }) },
  // The instance fold: InstanceCreated v1 wrote `fullName`, readers now expect `name`.
  {
    eventType: "InstanceCreated",
    fromVersion: 1,
    upcast: (data) => {
      const properties = (data["properties"] ?? {}) as Record<string, unknown>;
      const { fullName, ...rest } = properties;
      return { ...data, properties: fullName === undefined ? rest : { ...rest, name: fullName } } as typeof data;
    },
  },
];

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer(undefined, { upcasters: new Upcasters(UPCASTERS) });
  await t.events.appendEvents({
    aggregateType: ORDER,
    aggregateId: "o-1",
    expectation: { case: "noStream", value: {} },
    events: [
      { eventId: uniqueId("v1-"), eventType: "OrderPlaced", schemaVersion: 1, data: { amount: 10 } },
      { eventId: uniqueId("v2-"), eventType: "OrderPlaced", schemaVersion: 2, data: { total: 20 } },
      { eventId: uniqueId("v3-"), eventType: "OrderPlaced", schemaVersion: 3, data: { total: { amount: 30, currency: "SEK" } } },
      { eventId: uniqueId("other-"), eventType: "OrderNoted", data: { note: "as stored" } },
    ],
  });
});
afterAll(async () => {
  await t?.close();
});

const events = async (latestSchema: boolean, aggregateId = "o-1") =>
  (await collect(t.events.readStream({ aggregateType: ORDER, aggregateId, latestSchema }))).map((r) => r.event!);

describe("ReadStream", () => {
  it("returns the events as stored without latest_schema", async () => {
    const stored = await events(false);
    expect(stored.map((e) => [e.schemaVersion, e.data])).toEqual([
      [1, { amount: 10 }],
      [2, { total: 20 }],
      [3, { total: { amount: 30, currency: "SEK" } }],
      [1, { note: "as stored" }],
    ]);
  });

  it("with latest_schema returns every event in its type's latest version, hashes and everything else as stored", async () => {
    const stored = await events(false);
    const latest = await events(true);
    expect(latest.map((e) => [e.schemaVersion, e.data])).toEqual([
      [3, { total: { amount: 10, currency: "EUR" } }],
      [3, { total: { amount: 20, currency: "EUR" } }],
      [3, { total: { amount: 30, currency: "SEK" } }],
      [1, { note: "as stored" }],
    ]);
    latest.forEach((e, i) => {
      const { data: _data, schemaVersion: _version, ...rest } = e;
      const { data: _storedData, schemaVersion: _storedVersion, ...storedRest } = stored[i]!;
      expect(rest).toEqual(storedRest);
    });
    // Reading upcasted never changes what is stored (nor the server's cache of it).
    expect((await events(false)).map((e) => e.data)).toEqual(stored.map((e) => e.data));
  });

  it("fails with FAILED_PRECONDITION, naming the type and version, when nothing upcasts an event — and only with latest_schema", async () => {
    await t.events.appendEvents({
      aggregateType: ORDER,
      aggregateId: "o-gap",
      expectation: { case: "noStream", value: {} },
      events: [{ eventId: uniqueId("gap-"), eventType: "OrderCancelled", schemaVersion: 1, data: {} }],
    });
    expect((await events(false, "o-gap")).map((e) => e.schemaVersion)).toEqual([1]);
    const error = await expectStatus(events(true, "o-gap"), grpc.status.FAILED_PRECONDITION);
    expect(error.details).toMatch(/no upcaster for \(OrderCancelled, 1\)/);
  });
});

describe("Subscribe", () => {
  async function firstEvents(latestSchema: boolean, n: number): Promise<SubscribeResponse[]> {
    const controller = new AbortController();
    const stream = t.events.subscribe({ start: { case: "afterPosition", value: 0n }, aggregateTypes: [ORDER], latestSchema }, { signal: controller.signal })[Symbol.asyncIterator]();
    const out: SubscribeResponse[] = [];
    try {
      while (out.length < n) {
        const next = await stream.next();
        if (next.done) throw new Error("stream ended early");
        if (next.value.message.case === "event") out.push(next.value);
      }
    } finally {
      controller.abort();
    }
    return out;
  }
  const shapes = (messages: SubscribeResponse[]) => messages.map((m) => (m.message.case === "event" ? [m.message.value.schemaVersion, m.message.value.data] : undefined));

  it("streams stored events, or with latest_schema the upcasted ones", async () => {
    expect(shapes(await firstEvents(false, 2))).toEqual([
      [1, { amount: 10 }],
      [2, { total: 20 }],
    ]);
    expect(shapes(await firstEvents(true, 3))).toEqual([
      [3, { total: { amount: 10, currency: "EUR" } }],
      [3, { total: { amount: 20, currency: "EUR" } }],
      [3, { total: { amount: 30, currency: "SEK" } }],
    ]);
  });
});

describe("the instance fold", () => {
  it("folds old events in their latest shape; the stored event keeps its own", async () => {
    const address = { database: "acme", className: "Person", instanceId: uniqueId("p-") };
    await t.instances.createInstance({ ...address, properties: { fullName: "Ada Lovelace", born: 1815 }, commandId: uniqueId("c-") });
    await t.instances.updateInstance({ ...address, properties: { died: 1852 }, expectedSeq: 1n, commandId: uniqueId("c-") });
    const got = await t.instances.getInstance(address);
    expect(got.instance?.properties).toEqual({ name: "Ada Lovelace", born: 1815, died: 1852 });
    const [created] = await collect(t.events.readStream({ aggregateType: "Instance", aggregateId: `acme/Person/${address.instanceId}` }));
    expect(created!.event).toMatchObject({ eventType: "InstanceCreated", schemaVersion: 1, data: { properties: { fullName: "Ada Lovelace", born: 1815 } } });
  });
});

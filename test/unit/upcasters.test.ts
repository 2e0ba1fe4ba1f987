/**
 * Upcasters (docs/CONTRACT.md E1–E3): chains v1 → v2 → v3, the stored data never changed, and every
 * way a reader cannot bring an event up to date is an UpcastError naming the type and version —
 * never the event passed on in an old shape.
 */
import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { ERASED_DATA, EventEnvelopeSchema, isUpcastError, Upcasters, upcastersOfModule, type Upcaster, type UpcastContext } from "../../core/index.js";
import { PoisonError } from "../../consumers/index.js";
import { decodeMessage } from "../../consumers/decode.js";
import { defineHandler } from "../../consumers/index.js";

/** OrderPlaced v1 `{ amount }` → v2 `{ total }` → v3 `{ total: { amount, currency } }`. */
const ORDER_UPCASTERS: Upcaster[] = [
  { eventType: "OrderPlaced", fromVersion: 1, upcast: (data) => ({ total: data["amount"] ?? 0 }) },
  { eventType: "OrderPlaced", fromVersion: 2, upcast: (data) => ({ total: { amount: data["total"] ?? 0, currency: "EUR" } }) },
];

const context = (schemaVersion: number, eventType = "OrderPlaced"): UpcastContext => ({ eventType, aggregateType: "Order", aggregateId: "o-1", seq: 1, schemaVersion, metadata: {} });

function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error("expected a throw");
}

describe("upcaster chains", () => {
  const upcasters = new Upcasters(ORDER_UPCASTERS);

  it("brings v1 and v2 to v3 one step after another, and leaves v3 as it is", () => {
    expect(upcasters.latestVersion("OrderPlaced")).toBe(3);
    expect(upcasters.upcast({ amount: 12 }, context(1))).toEqual({ data: { total: { amount: 12, currency: "EUR" } }, schemaVersion: 3 });
    expect(upcasters.upcast({ total: 7 }, context(2))).toEqual({ data: { total: { amount: 7, currency: "EUR" } }, schemaVersion: 3 });
    const current = { total: { amount: 1, currency: "SEK" } };
    expect(upcasters.upcast(current, context(3)).data).toBe(current);
  });

  it("reads version 0 (proto3 unset) as 1, and types without upcasters as stored", () => {
    expect(upcasters.upcast({ amount: 3 }, context(0)).schemaVersion).toBe(3);
    const other = { x: 1 };
    expect(upcasters.upcast(other, context(4, "OrderShipped"))).toEqual({ data: other, schemaVersion: 4 });
    expect(upcasters.latestVersion("OrderShipped")).toBeUndefined();
  });

  it("never changes the stored data, even when an upcaster mutates what it is given", () => {
    const mutating = new Upcasters([
      {
        eventType: "OrderPlaced",
        fromVersion: 1,
        upcast: (data) => {
          data["amount"] = 999;
          (data["lines"] as unknown[]).push("added");
          return data;
        },
      },
    ]);
    const stored = { amount: 1, lines: ["a"], ["__proto__"]: { kept: true } };
    Object.defineProperty(stored, "__proto__", { value: { kept: true }, enumerable: true });
    const out = mutating.upcast(stored, context(1));
    expect(stored.amount).toBe(1);
    expect(stored.lines).toEqual(["a"]);
    expect(out.data["amount"]).toBe(999);
    expect(Object.hasOwn(out.data, "__proto__")).toBe(true);
  });

  it("upcasts an envelope into a new one: schema_version and data change, the stored envelope and its hashes do not", () => {
    const stored = create(EventEnvelopeSchema, { eventType: "OrderPlaced", aggregateType: "Order", aggregateId: "o-1", sequenceNumber: 1n, schemaVersion: 1, data: { amount: 5 }, contentHash: "sha256:aa", previousHash: "" });
    const out = upcasters.upcastEnvelope(stored);
    expect(out).not.toBe(stored);
    expect(out).toMatchObject({ schemaVersion: 3, data: { total: { amount: 5, currency: "EUR" } }, contentHash: "sha256:aa", eventType: "OrderPlaced" });
    expect(stored).toMatchObject({ schemaVersion: 1, data: { amount: 5 } });
    expect(upcasters.upcastEnvelope(out)).toBe(out);
  });

  it("leaves the erasure marker as it is: it is no data of its type (T5)", () => {
    const erased = create(EventEnvelopeSchema, { eventType: "OrderPlaced", aggregateType: "Order", aggregateId: "shop/o-1", schemaVersion: 1, subject: "cust-1", data: { ...ERASED_DATA } });
    expect(upcasters.upcastEnvelope(erased)).toBe(erased);
    // The same data without a subject is an ordinary event's.
    expect(upcasters.upcastEnvelope({ ...erased, subject: "" })).toMatchObject({ schemaVersion: 3 });
  });
});

describe("what a reader cannot read is an error, never a silent old shape", () => {
  it("a missing step names the type and the version nothing upcasts", () => {
    const gap = new Upcasters([ORDER_UPCASTERS[1]!]);
    const e = caught(() => gap.upcast({ amount: 1 }, context(1)));
    expect(isUpcastError(e)).toBe(true);
    expect((e as Error).message).toMatch(/no upcaster for \(OrderPlaced, 1\)/);
    expect(gap.upcast({ total: 2 }, context(2)).schemaVersion).toBe(3);
  });

  it("an event newer than the latest version is refused", () => {
    const e = caught(() => new Upcasters(ORDER_UPCASTERS).upcast({}, context(4)));
    expect((e as Error).message).toMatch(/OrderPlaced schema_version 4 is newer than this reader's latest \(3\)/);
  });

  it("an upcaster that throws or returns no object is an UpcastError with the cause", () => {
    const boom = new Error("amount is not a number");
    const throwing = new Upcasters([{ eventType: "OrderPlaced", fromVersion: 1, upcast: () => { throw boom; } }]);
    const e = caught(() => throwing.upcast({}, context(1)));
    expect((e as Error).message).toMatch(/the upcaster \(OrderPlaced, 1\) failed: amount is not a number/);
    expect((e as Error).cause).toBe(boom);
    const nothing = new Upcasters([{ eventType: "OrderPlaced", fromVersion: 1, upcast: () => null as never }]);
    expect((caught(() => nothing.upcast({}, context(1))) as Error).message).toMatch(/returned null, not a JSON object/);
  });

  it("refuses two upcasters for one (event_type, schema_version) and malformed ones", () => {
    expect(() => new Upcasters([ORDER_UPCASTERS[0]!, ORDER_UPCASTERS[0]!])).toThrow(/two upcasters for \(OrderPlaced, 1\)/);
    expect(() => new Upcasters([{ eventType: "OrderPlaced", fromVersion: 0, upcast: (d) => d }])).toThrow(/fromVersion must be an integer/);
    expect(() => new Upcasters([{ eventType: "", fromVersion: 1, upcast: (d) => d }])).toThrow(/eventType/);
    expect(() => defineHandler({ name: "h", upcasters: [ORDER_UPCASTERS[0]!, ORDER_UPCASTERS[0]!], handle: async () => {} })).toThrow(/two upcasters/);
  });

  it("reads a module's upcasters from `upcasters` or a default list, and says what to export", () => {
    expect(upcastersOfModule({ upcasters: ORDER_UPCASTERS }, true)).toHaveLength(2);
    expect(upcastersOfModule({ default: ORDER_UPCASTERS }, true)).toHaveLength(2);
    expect(upcastersOfModule({ default: { name: "a handler" } }, false)).toEqual([]);
    expect(() => upcastersOfModule({}, true)).toThrow(/export const upcasters/);
    expect(() => upcastersOfModule({ upcasters: {} }, true)).toThrow(/must be a list/);
  });
});

describe("the consumer's decode step", () => {
  const message = (schemaVersion: number, data: object) => ({
    topic: "t",
    partition: 0,
    offset: "7",
    value: Buffer.from(JSON.stringify({ event_id: "e-1", event_type: "OrderPlaced", aggregate_type: "Order", aggregate_id: "o-1", sequence_number: "1", global_position: "4", data, schema_version: schemaVersion })),
  });

  it("hands the handler the latest shape: data and envelope alike", () => {
    const event = decodeMessage(message(1, { amount: 9 }), new Upcasters(ORDER_UPCASTERS));
    expect(event.data).toEqual({ total: { amount: 9, currency: "EUR" } });
    expect(event.envelope.schemaVersion).toBe(3);
    expect(decodeMessage(message(1, { amount: 9 })).data).toEqual({ amount: 9 });
  });

  it("makes an event the handler cannot read poison, naming the missing upcaster", () => {
    const e = caught(() => decodeMessage(message(1, { amount: 9 }), new Upcasters([ORDER_UPCASTERS[1]!])));
    expect(e).toBeInstanceOf(PoisonError);
    expect((e as Error).message).toMatch(/cannot read the event: no upcaster for \(OrderPlaced, 1\)/);
  });
});

/**
 * The pure snapshot logic of W11 (docs/CONTRACT.md): folding from a snapshot equals folding the
 * whole stream, the state's JSON round trip, and which stored snapshots a fold refuses
 * (docs/STORAGE.md "Snapshots").
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { foldInstance, InstanceEventType, type InstanceEvent } from "../../core/domain/instance.js";
import { decodeInstanceState, encodeInstanceState, foldInstanceFrom, INSTANCE_FOLD_VERSION } from "../../core/domain/instance-fold.js";
import { checkSnapshot, snapshotChecksum, type StoredSnapshot } from "../../core/stream-snapshots.js";

// Stored state is JSON: -0 comes back as 0, which is the same value for every reader of the state,
// so the generated data is what JSON keeps (fast-check's jsonValue has no option to leave -0 out).
const json = fc
  .jsonValue({ maxDepth: 2 })
  .map((v) => JSON.parse(JSON.stringify(v)) as unknown)
  .filter((v): v is Record<string, never> => typeof v === "object" && v !== null && !Array.isArray(v));
const eventArb = fc.oneof(
  json.map((properties) => ({ eventType: InstanceEventType.created, data: { properties } })),
  json.map((patch) => ({ eventType: InstanceEventType.updated, data: { patch } })),
  fc.constant({ eventType: InstanceEventType.deleted, data: {} }),
  fc.constant({ eventType: "SomethingElse", data: {} }),
);
const streamArb = fc.array(eventArb, { maxLength: 30 }).map((es) =>
  es.map((e, i): InstanceEvent => ({ ...e, seq: i + 1, globalPosition: 100 + i * 3, occurredAt: new Date(Date.UTC(2026, 0, 1, 0, 0, i)) })),
);

describe("foldInstanceFrom", () => {
  it("from a snapshot at any seq, through its JSON, equals the fold of the whole stream", () => {
    fc.assert(
      fc.property(streamArb, fc.nat(), (events, cut) => {
        const k = events.length === 0 ? 0 : cut % (events.length + 1);
        const decoded = decodeInstanceState(encodeInstanceState(foldInstance(events.slice(0, k))));
        expect(decoded).toBeDefined();
        // The whole stream handed over: events at or below the snapshot's seq are skipped.
        expect(foldInstanceFrom({ seq: k, state: decoded! }, events)).toEqual(foldInstance(events));
        expect(foldInstanceFrom({ seq: k, state: decoded! }, events.slice(k))).toEqual(foldInstance(events));
      }),
    );
  });

  it("without a snapshot is the plain fold", () => {
    fc.assert(
      fc.property(streamArb, (events) => {
        expect(foldInstanceFrom(undefined, events)).toEqual(foldInstance(events));
      }),
    );
  });
});

describe("decodeInstanceState", () => {
  const good = { exists: true, deleted: false, properties: { a: 1 }, version: 3, globalPosition: 9, createdAt: "2026-01-01T00:00:00.000Z", updatedAt: "2026-01-02T00:00:00.000Z" };

  it("reads what encodeInstanceState wrote, a __proto__ key included", () => {
    const properties = JSON.parse('{"__proto__": {"x": 1}, "b": [1, 2]}') as Record<string, never>;
    const state = { ...good, properties, createdAt: new Date(good.createdAt), updatedAt: new Date(good.updatedAt) } as const;
    const back = decodeInstanceState(encodeInstanceState(state));
    expect(back).toEqual(state);
    expect(Object.keys((back as typeof state).properties)).toEqual(["__proto__", "b"]);
    expect(decodeInstanceState(encodeInstanceState({ exists: false }))).toEqual({ exists: false });
  });

  it.each([
    ["bad JSON", '{"exists": tr'],
    ["not an object", "[1]"],
    ["no exists", "{}"],
    ["deleted not a boolean", JSON.stringify({ ...good, deleted: "no" })],
    ["properties an array", JSON.stringify({ ...good, properties: [] })],
    ["a negative version", JSON.stringify({ ...good, version: -1 })],
    ["a fractional position", JSON.stringify({ ...good, globalPosition: 1.5 })],
    ["an invalid date", JSON.stringify({ ...good, createdAt: "yesterday" })],
    ["a missing date", JSON.stringify({ ...good, updatedAt: undefined })],
  ])("refuses %s", (_, text) => {
    expect(decodeInstanceState(text)).toBeUndefined();
  });
});

describe("checkSnapshot", () => {
  const base = { aggregateType: "Instance", aggregateId: "db/C/i", foldVersion: INSTANCE_FOLD_VERSION, seq: 10, state: '{"exists":false}' };
  const stored = (over: Partial<StoredSnapshot> = {}): StoredSnapshot => {
    const s = { ...base, ...over };
    return { ...s, checksum: over.checksum ?? snapshotChecksum(s) };
  };

  it("accepts a snapshot at or behind the resolved head", () => {
    expect(checkSnapshot(stored(), INSTANCE_FOLD_VERSION, 10)).toBeUndefined();
    expect(checkSnapshot(stored(), INSTANCE_FOLD_VERSION, 500)).toBeUndefined();
  });

  it("refuses another fold version, a seq ahead of the head, and a checksum that does not match", () => {
    expect(checkSnapshot(stored({ foldVersion: INSTANCE_FOLD_VERSION + 1 }), INSTANCE_FOLD_VERSION, 10)).toBe("fold-version");
    expect(checkSnapshot(stored(), INSTANCE_FOLD_VERSION, 9)).toBe("ahead-of-head");
    expect(checkSnapshot({ ...stored(), state: '{"exists":true}' }, INSTANCE_FOLD_VERSION, 10)).toBe("checksum");
    expect(checkSnapshot({ ...stored(), seq: 9 }, INSTANCE_FOLD_VERSION, 10)).toBe("checksum");
  });

  it("binds the checksum to the aggregate: a row copied to another stream does not verify", () => {
    expect(checkSnapshot({ ...stored(), aggregateId: "db/C/other" }, INSTANCE_FOLD_VERSION, 10)).toBe("checksum");
  });
});

import { describe, expect, it } from "vitest";
import {
  checkAggregateId,
  checkEventId,
  checkInstanceId,
  decodeKeySegment,
  encodeKeySegment,
  parseSlotKey,
  seqOfSlotKey,
  slotKey,
  streamPrefix,
} from "../../core/ids.js";

describe("S3 key layout", () => {
  const tricky = ["x".repeat(200), "x".repeat(201), "x".repeat(400), "a/b", "a%2Fb", "..", ".", "a/../b", "a", "a/", "ab", "a b", "ü", "u\u0308", "名前/x", "%", "-_", "a.b", "A"];

  it("encodes ids injectively, without '/' or '.'", () => {
    const encoded = tricky.map(encodeKeySegment);
    expect(new Set(encoded).size).toBe(tricky.length);
    for (const e of encoded) {
      expect(e).not.toMatch(/[/.]/);
      expect(e).toMatch(/^[A-Za-z0-9_%-]+$/);
    }
    for (const id of tricky) expect(decodeKeySegment(encodeKeySegment(id))).toBe(id);
  });

  it("gives no stream a prefix of another stream's keys", () => {
    const prefixes = tricky.map((id) => streamPrefix("Order", id));
    for (const a of prefixes) for (const b of prefixes) if (a !== b) expect(b.startsWith(a)).toBe(false);
  });

  it("splits long ids into segments a file system can store, still prefix-free", () => {
    const long = "é".repeat(128);
    const key = slotKey("T", long, 7);
    for (const segment of key.split("/")) expect(Buffer.byteLength(segment)).toBeLessThanOrEqual(255);
    expect(parseSlotKey(key)).toEqual({ aggregateType: "T", aggregateId: long, seq: 7 });
    const a = "x".repeat(200);
    const b = "x".repeat(201);
    expect(streamPrefix("T", b).startsWith(streamPrefix("T", a))).toBe(false);
    expect(streamPrefix("T", a).startsWith(streamPrefix("T", b))).toBe(false);
    expect(Buffer.byteLength(slotKey("T".repeat(64), "é".repeat(128), 1))).toBeLessThanOrEqual(1024);
  });

  it("keeps keys inside streams/ even for path-like ids", () => {
    expect(slotKey("Order", "../../etc/passwd", 1)).toBe("streams/Order/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd/00000000000000000001.json");
  });

  it("sorts slots by number and parses them back", () => {
    const keys = [10, 2, 1, 100].map((n) => slotKey("T", "x", n)).sort();
    expect(keys.map(seqOfSlotKey)).toEqual([1, 2, 10, 100]);
  });
});

describe("id validation", () => {
  it("accepts unicode, '/' and '..' in aggregate ids (they are encoded)", () => {
    expect(checkAggregateId("tenant/ünïcødé/..")).toBeUndefined();
  });

  it("refuses control characters, non-NFC text, padding and oversized ids", () => {
    expect(checkAggregateId("a\u0000b")).toMatch(/control/);
    expect(checkAggregateId("a\nb")).toMatch(/control/);
    expect(checkAggregateId("u\u0308")).toMatch(/NFC/);
    expect(checkAggregateId(" a")).toMatch(/white space/);
    expect(checkAggregateId("x".repeat(256))).toBeUndefined();
    expect(checkAggregateId("x".repeat(257))).toMatch(/256 bytes/);
    expect(checkAggregateId("é".repeat(129))).toMatch(/256 bytes/);
    expect(checkAggregateId("")).toMatch(/required/);
  });

  it("keeps '/' out of instance ids and restricts event ids", () => {
    expect(checkInstanceId("a/b")).toMatch(/'\/'/);
    expect(checkEventId("evt-1:2.3_4")).toBeUndefined();
    expect(checkEventId("bad id")).toBeDefined();
    expect(checkEventId("x".repeat(129))).toMatch(/128/);
  });
});

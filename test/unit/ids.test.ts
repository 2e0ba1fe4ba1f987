import { describe, expect, it } from "vitest";
import {
  checkAggregateId,
  checkEventId,
  checkInstanceId,
  decodeKeySegment,
  encodeKeySegment,
} from "../../core/ids.js";

describe("S3 key segments (dead-letter keys)", () => {
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

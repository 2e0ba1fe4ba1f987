import { describe, expect, it } from "vitest";
import {
  checkAggregateId,
  checkEventId,
  checkInstanceId,
  decodeKeySegment,
  encodeKeySegment,
} from "../../core/ids.js";
import { prefixEnd } from "../../core/event-log.js";

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

describe("listing ranges (code-point order)", () => {
  it("ends a prefix's range at the least string above every string that starts with it", () => {
    expect(prefixEnd("acme/Person/")).toBe("acme/Person0");
    expect(prefixEnd("a\uD7FF")).toBe("a\uE000");
    expect(prefixEnd("a\u{10FFFF}")).toBe("b");
    expect(prefixEnd("x\u{1F600}")).toBe("x\u{1F601}");
    expect(prefixEnd("")).toBeUndefined();
    expect(prefixEnd("\u{10FFFF}\u{10FFFF}")).toBeUndefined();
    // Every id that starts with the prefix is in [prefix, end); the neighbours are not.
    const byCodePoint = (a: string, b: string) => {
      const x = [...a].map((c) => c.codePointAt(0)!);
      const y = [...b].map((c) => c.codePointAt(0)!);
      for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
      return x.length - y.length;
    };
    const prefix = "db/C\u{1F600}/";
    const end = prefixEnd(prefix)!;
    for (const id of [`${prefix}a`, `${prefix}\u{10FFFF}`, `${prefix}\uFFFF`, prefix]) {
      expect(byCodePoint(id, prefix) >= 0 && byCodePoint(id, end) < 0, id).toBe(true);
    }
    for (const id of ["db/C\u{1F600}.", "db/C\u{1F600}0", "db/C\u{1F601}", "db/C\uFFFF/"]) {
      expect(byCodePoint(id, prefix) >= 0 && byCodePoint(id, end) < 0, id).toBe(false);
    }
  });
});

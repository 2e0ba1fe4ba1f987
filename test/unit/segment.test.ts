/** The segment format (docs/STORAGE.md): header, lines, byte ranges, void markers, bad input. */
import { describe, expect, it } from "vitest";
import { decodeSegment, decodeSegmentHeader, encodeSegment, encodeVoidSegment, SegmentFormatError, segmentKey, segmentOfKey } from "../../core/segment.js";

const events = [
  { eventId: "e-1", aggregateType: "Order", aggregateId: "o/1", seq: 1, json: '{"event_id":"e-1","data":{"ключ":"значение"}}' },
  { eventId: "e-2", aggregateType: "Order", aggregateId: "o/2", seq: 7, json: '{"event_id":"e-2","data":{"🔑":[1,2]}}' },
];

describe("segments", () => {
  it("put each envelope on its own line at the byte range the header and the ranges name", () => {
    const { body, ranges } = encodeSegment(7, new Date("2026-12-01T10:00:00Z"), events);
    const lines = body.toString("utf8").split("\n");
    expect(lines).toHaveLength(4);
    expect(lines[3]).toBe("");
    expect(lines.slice(1, 3)).toEqual(events.map((e) => e.json));
    ranges.forEach((r, i) => expect(body.subarray(r.start, r.start + r.length).toString("utf8")).toBe(events[i]!.json));
    const header = JSON.parse(lines[0]!);
    expect(header).toMatchObject({ format: "tidemark.segment", version: 1, segment: "7", created_at: "2026-12-01T10:00:00.000Z" });
    expect(header.events[1]).toEqual({ event_id: "e-2", aggregate_type: "Order", aggregate_id: "o/2", sequence_number: "7", offset: Buffer.byteLength(events[0]!.json) + 1, length: Buffer.byteLength(events[1]!.json) });
  });

  it("decode back to the same entries and lines", () => {
    const { body } = encodeSegment(7, new Date(), events);
    const { content, events: decoded } = decodeSegment(body);
    expect(content).toMatchObject({ type: "events", segment: 7 });
    expect(decoded.map((d) => [d.entry.eventId, d.entry.seq, d.json])).toEqual(events.map((e) => [e.eventId, e.seq, e.json]));
  });

  it("mark a void segment, and refuse what is not a segment", () => {
    expect(decodeSegmentHeader(encodeVoidSegment(9, new Date(), "write deadline passed"))).toMatchObject({ type: "void", segment: 9, reason: "write deadline passed" });
    for (const bad of ["", "no newline", '{"format":"other","version":1}\n', '{"format":"tidemark.segment","version":2,"segment":"1","events":[]}\n', "not json\n"]) {
      expect(() => decodeSegmentHeader(Buffer.from(bad))).toThrow(SegmentFormatError);
    }
    const { body } = encodeSegment(3, new Date(), events);
    expect(() => decodeSegment(body.subarray(0, body.length - 10))).toThrow(SegmentFormatError);
  });

  it("have keys that sort by number and parse back", () => {
    expect(segmentKey(42)).toBe("segments/00000000000000000042.jsonl");
    expect(segmentOfKey(segmentKey(12345678901))).toBe(12345678901);
    expect(segmentOfKey("segments/42.jsonl")).toBeUndefined();
    expect([segmentKey(10), segmentKey(9)].sort()).toEqual([segmentKey(9), segmentKey(10)]);
  });
});

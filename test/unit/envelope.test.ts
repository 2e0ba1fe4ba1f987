import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  canonicalJson,
  contentHash,
  decodeEnvelope,
  encodeEnvelope,
  EventEnvelopeSchema,
  EventKind,
  type EventContent,
} from "../../core/envelope.js";

const base: EventContent = {
  eventType: "OrderPlaced",
  aggregateType: "Order",
  aggregateId: "o-1",
  data: { b: 1, a: { y: [1, { d: 2, c: 3 }], x: null } },
  metadata: { kind: "domain", correlation_id: "c-1" },
  schemaVersion: 1,
  kind: EventKind.DOMAIN,
};

describe("content hash", () => {
  it("ignores key order and trace headers", () => {
    const reordered = { ...base, data: { a: { x: null, y: [1, { c: 3, d: 2 }] }, b: 1 }, metadata: { correlation_id: "c-1", kind: "domain", traceparent: "00-abc-def-01" } };
    expect(contentHash(reordered)).toBe(contentHash(base));
  });

  it("changes with data, type, aggregate and semantic metadata", () => {
    const h = contentHash(base);
    expect(contentHash({ ...base, data: { b: 2 } })).not.toBe(h);
    expect(contentHash({ ...base, eventType: "OrderShipped" })).not.toBe(h);
    expect(contentHash({ ...base, aggregateId: "o-2" })).not.toBe(h);
    expect(contentHash({ ...base, metadata: { ...base.metadata, correlation_id: "c-2" } })).not.toBe(h);
    expect(h).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  it("keeps array order", () => {
    expect(canonicalJson([2, 1])).not.toBe(canonicalJson([1, 2]));
  });
});

describe("envelope codec", () => {
  it("writes proto field names and reads them back", () => {
    const envelope = create(EventEnvelopeSchema, { eventId: "e1", eventType: "T", aggregateType: "A", aggregateId: "a/1", sequenceNumber: 3n, data: { k: "v" } });
    const json = encodeEnvelope(envelope);
    expect(JSON.parse(json)).toMatchObject({ event_id: "e1", event_type: "T", aggregate_id: "a/1", sequence_number: "3" });
    expect(decodeEnvelope(json).sequenceNumber).toBe(3n);
  });

  it("ignores unknown fields written by newer versions", () => {
    expect(decodeEnvelope(JSON.stringify({ event_id: "e", event_type: "T", future_field: 1 })).eventId).toBe("e");
  });
});

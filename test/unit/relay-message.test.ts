/** The relay's wire format (docs/CONTRACT.md R3) and key choice (R2), from the bytes stored in S3. */
import { create, fromJsonString } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { encodeEnvelope, ENVELOPE_CONTENT_TYPE, EventEnvelopeSchema, EventKind } from "../../core/envelope.js";
import type { SlotRow } from "../../core/event-log.js";
import { committedEventOf, UnreadableEventError } from "../../core/commit-log-reader.js";
import { toKafkaMessage as fromEvent } from "../../relay/to-kafka-message.js";

/** The message the relay builds from a committed row and the bytes of its object. */
const toKafkaMessage = (r: SlotRow, key: string, body: string) => fromEvent(r, committedEventOf(r, key, body));

const committedAt = new Date("2026-11-27T10:00:00Z");
const row: SlotRow = {
  logId: 7,
  eventId: "e-1",
  aggregateType: "Order",
  aggregateId: "o/1",
  seq: 3,
  eventType: "OrderPlaced",
  contentHash: "sha256:x",
  orderingKey: null,
  state: "committed",
  globalPosition: 42,
  batchFirstSeq: 3,
  batchLastSeq: 3,
  committedAt,
  segment: 5,
  segmentOffset: 120,
  segmentLength: 300,
  chainHash: null,
};

function stored(metadata: Record<string, string> = {}, kind = EventKind.DOMAIN): string {
  return encodeEnvelope(
    create(EventEnvelopeSchema, {
      eventId: "e-1",
      eventType: "OrderPlaced",
      aggregateType: "Order",
      aggregateId: "o/1",
      sequenceNumber: 3n,
      occurredAt: timestampFromDate(committedAt),
      actor: "alice",
      data: { total: 12.5, lines: [{ sku: "a" }] },
      metadata: { kind: kind === EventKind.COMMAND ? "command" : "domain", ...metadata },
      schemaVersion: 2,
      kind,
      contentHash: "sha256:x",
    }),
  );
}

describe("Kafka message of a committed event", () => {
  it("is the stored envelope JSON with proto field names and global_position set from the log", () => {
    const body = stored();
    expect(JSON.parse(body)).not.toHaveProperty("global_position");
    const m = toKafkaMessage(row, "k", body);
    const value = JSON.parse(m.value);
    expect(value).toMatchObject({
      event_id: "e-1",
      event_type: "OrderPlaced",
      aggregate_type: "Order",
      aggregate_id: "o/1",
      sequence_number: "3",
      global_position: "42",
      schema_version: 2,
      kind: "EVENT_KIND_DOMAIN",
      data: { total: 12.5, lines: [{ sku: "a" }] },
    });
    // Everything but global_position is byte-for-byte what S3 holds.
    expect({ ...value, global_position: undefined }).toEqual({ ...JSON.parse(body), global_position: undefined });
    expect(fromJsonString(EventEnvelopeSchema, m.value).globalPosition).toBe(42n);
  });

  it("passes fields a newer writer added through unchanged, and sets the log's position over a stored one", () => {
    const newer = stored().replace('{"event_id"', '{"tenant_region":"eu-1","event_id"');
    const value = JSON.parse(toKafkaMessage(row, "k", newer).value);
    expect(value).toMatchObject({ tenant_region: "eu-1", global_position: "42", event_id: "e-1" });
    const positioned = stored().replace('{"event_id"', '{"global_position":"7","event_id"');
    expect(JSON.parse(toKafkaMessage(row, "k", positioned).value).global_position).toBe("42");
  });

  it("carries identity, content type and W3C trace context in headers", () => {
    const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const m = toKafkaMessage(row, "k", stored({ traceparent, tracestate: "rojo=00f067aa0ba902b7", baggage: "x=1" }));
    expect(m.headers).toEqual({
      event_id: "e-1",
      event_type: "OrderPlaced",
      aggregate_type: "Order",
      aggregate_id: "o/1",
      sequence_number: "3",
      global_position: "42",
      "content-type": ENVELOPE_CONTENT_TYPE,
      traceparent,
      tracestate: "rojo=00f067aa0ba902b7",
    });
    expect(toKafkaMessage(row, "k", stored()).headers).not.toHaveProperty("traceparent");
  });

  it("keys by ordering_key when set, else by aggregate", () => {
    expect(toKafkaMessage(row, "k", stored()).key).toBe("Order/o/1");
    expect(toKafkaMessage(row, "k", stored({ ordering_key: "customer-9" })).key).toBe("customer-9");
    expect(toKafkaMessage(row, "k", stored({ ordering_key: "" })).key).toBe("Order/o/1");
  });

  it("reports the kind for routing", () => {
    expect(toKafkaMessage(row, "k", stored()).kind).toBe("domain");
    expect(toKafkaMessage(row, "k", stored({}, EventKind.COMMAND)).kind).toBe("command");
  });

  it("refuses undecodable bytes and another event's bytes", () => {
    const reasons = ["{not json", stored().replace('"e-1"', '"e-2"')].map((body) => {
      try {
        toKafkaMessage(row, "k", body);
        return "accepted";
      } catch (e) {
        return e instanceof UnreadableEventError ? e.reason : "other";
      }
    });
    expect(reasons).toEqual(["corrupt", "mismatch"]);
  });
});

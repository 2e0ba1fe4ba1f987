/**
 * What the benchmarks send: ~1 KB JSON event data, the same envelope bytes the server would store
 * (for the raw S3 and Kafka baselines), and the append request shapes of P1.
 */
import { randomUUID } from "node:crypto";
import { create, type JsonObject, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { contentHash, encodeEnvelope, ENVELOPE_CONTENT_TYPE, EventEnvelopeSchema, EventKind } from "../core/index.js";
import type { AppendEventsRequestSchema } from "../gen/tidemark/v1/event_store_pb.js";

/** Aggregate type of the generic appends. */
export const BENCH_AGGREGATE_TYPE = "BenchOrder";
/** Event type of the generic appends. */
export const BENCH_EVENT_TYPE = "BenchEventRecorded";

const FILLER = "tidemark-bench-".repeat(64);

/** Event data of about `bytes` bytes as JSON (default 1 KiB). */
export function eventData(n: number, bytes = 1024): JsonObject {
  const base = { n, at: "2026-11-27T00:00:00.000Z", tags: ["bench", "p1"], payload: "" };
  const room = bytes - JSON.stringify(base).length;
  return { ...base, payload: FILLER.slice(0, Math.max(0, room)) };
}

/** The envelope JSON the server would store for one such event: the body of the raw S3 PUTs. */
export function envelopeBody(aggregateId: string, seq: number): string {
  const data = eventData(seq);
  const metadata = { kind: "domain" };
  return encodeEnvelope(
    create(EventEnvelopeSchema, {
      eventId: randomUUID(),
      eventType: BENCH_EVENT_TYPE,
      aggregateType: BENCH_AGGREGATE_TYPE,
      aggregateId,
      sequenceNumber: BigInt(seq),
      occurredAt: timestampFromDate(new Date()),
      actor: "bench",
      data,
      metadata,
      schemaVersion: 1,
      kind: EventKind.DOMAIN,
      contentHash: contentHash({
        eventType: BENCH_EVENT_TYPE,
        aggregateType: BENCH_AGGREGATE_TYPE,
        aggregateId,
        data,
        metadata,
        schemaVersion: 1,
        kind: EventKind.DOMAIN,
      }),
    }),
  );
}

export { ENVELOPE_CONTENT_TYPE };

/** How a request states its expectation. */
export type ExpectationShape = { readonly exact: number } | "any";

/** An AppendEvents request of `count` fresh 1 KiB events. */
export function appendRequest(aggregateId: string, expectation: ExpectationShape, count: number, n: number): MessageInitShape<typeof AppendEventsRequestSchema> {
  return {
    aggregateType: BENCH_AGGREGATE_TYPE,
    aggregateId,
    expectation: expectation === "any" ? { case: "any", value: {} } : { case: "expectedSeq", value: BigInt(expectation.exact) },
    events: Array.from({ length: count }, (_, i) => ({
      eventId: randomUUID(),
      eventType: BENCH_EVENT_TYPE,
      data: eventData(n * count + i),
      kind: EventKind.DOMAIN,
      schemaVersion: 1,
    })),
    actor: "bench",
  };
}

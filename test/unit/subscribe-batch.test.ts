/**
 * The bytes of a batched Subscribe message (server/subscribe.ts batchBytes): assembled from the
 * shared encodings of its events, they must be exactly what the encoder writes for the message,
 * and decode to the same events, for any events a client can have written (including data with
 * keys protobuf-es would otherwise lose, and position 0).
 */
import { create } from "@bufbuild/protobuf";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeBinary, encodeBinary, isValidationError } from "../../core/index.js";
import { EventEnvelopeSchema, type EventEnvelope } from "../../gen/tidemark/v1/envelope_pb.js";
import { EventBatchSchema, SubscribeRequestSchema, SubscribeResponseSchema } from "../../gen/tidemark/v1/event_store_pb.js";
import { batchBytes, checkSubscribeRequest, MAX_BATCH } from "../../server/subscribe.js";

const envelope = fc.record({
  eventId: fc.string({ maxLength: 40 }),
  eventType: fc.string({ maxLength: 20 }),
  globalPosition: fc.bigInt({ min: 0n, max: (1n << 63n) - 1n }),
  seq: fc.bigInt({ min: 0n, max: 1n << 40n }),
  data: fc.dictionary(fc.oneof(fc.string(), fc.constantFrom("__proto__", "constructor", "\ufeffk")), fc.oneof(fc.string(), fc.integer(), fc.boolean()), { maxKeys: 5 }),
});

describe("batched Subscribe messages", () => {
  it("are the encoder's bytes for the same message, and decode to the same events", () => {
    fc.assert(
      fc.property(fc.array(envelope, { minLength: 1, maxLength: 8 }), fc.oneof(fc.constant(0), fc.nat(), fc.maxSafeNat()), (inits, position) => {
        const events: EventEnvelope[] = inits.map((init) => create(EventEnvelopeSchema, { ...init, data: init.data as never }));
        const parts = events.map((event) => encodeBinary(EventBatchSchema, create(EventBatchSchema, { events: [event] })));
        const message = create(SubscribeResponseSchema, { message: { case: "events", value: { events } }, position: BigInt(position) });
        const bytes = batchBytes(parts, position);
        expect(Buffer.from(bytes).equals(Buffer.from(encodeBinary(SubscribeResponseSchema, message)))).toBe(true);
        const decoded = decodeBinary(SubscribeResponseSchema, bytes);
        expect(decoded.message.case).toBe("events");
        expect(decoded.position).toBe(BigInt(position));
        expect(decoded.message.value).toEqual(message.message.value);
      }),
      { numRuns: 200 },
    );
  });

  it("hold lengths that take several varint bytes", () => {
    const events = [0, 1, 2].map((i) => create(EventEnvelopeSchema, { eventId: `big-${i}`, globalPosition: BigInt(2 ** 40 + i), data: { text: "x".repeat(70_000 * (i + 1)) } as never }));
    const parts = events.map((event) => encodeBinary(EventBatchSchema, create(EventBatchSchema, { events: [event] })));
    const message = create(SubscribeResponseSchema, { message: { case: "events", value: { events } }, position: 2n ** 40n + 2n });
    expect(Buffer.from(batchBytes(parts, 2 ** 40 + 2)).equals(Buffer.from(encodeBinary(SubscribeResponseSchema, message)))).toBe(true);
  });

  it("max_batch is accepted up to MAX_BATCH and refused above it, naming only max_batch", () => {
    fc.assert(
      fc.property(fc.oneof(fc.integer({ min: 0, max: MAX_BATCH + 2 }), fc.integer({ min: 0, max: 2 ** 32 - 1 })), (maxBatch) => {
        const request = create(SubscribeRequestSchema, { start: { case: "fromEnd", value: {} }, maxBatch });
        let refused: unknown;
        try {
          checkSubscribeRequest(request, 100);
        } catch (e) {
          refused = e;
        }
        if (maxBatch <= MAX_BATCH) expect(refused).toBeUndefined();
        else expect(isValidationError(refused) && refused.violations.map((v) => v.field)).toEqual(["max_batch"]);
      }),
      { numRuns: 500 },
    );
  });
});

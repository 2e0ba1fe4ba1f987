/**
 * Property-based tests of the request decoders and validators (issue #11): whatever bytes or values
 * a client sends, decoding either yields a message or a DecodeError naming a field, validation
 * either passes or throws a ValidationError, and what passes is stored exactly as sent. Ids that
 * validation accepts never share a stream, a key or a command.
 */
import { create, fromBinary, toBinary, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import fc from "fast-check";
import { v5 as uuidv5 } from "uuid";
import { describe, expect, it } from "vitest";
import { decodeEnvelope, encodeEnvelope, EventEnvelopeSchema } from "../../core/envelope.js";
import { isValidationError } from "../../core/errors.js";
import {
  checkAggregateId,
  checkEventId,
  checkInstanceId,
  checkInstancePart,
  instanceAggregateId,
} from "../../core/ids.js";
import { checkJsonValue, setOwn } from "../../core/json-object.js";
import { decodeBinary, DecodeError, encodeBinary } from "../../core/proto-binary.js";
import { decodeSegmentHeader, encodeSegment } from "../../core/segment.js";
import { AppendEventsRequestSchema, ReadStreamResponseSchema, SubscribeRequestSchema } from "../../gen/tidemark/v1/event_store_pb.js";
import { CreateInstanceRequestSchema, ListInstancesRequestSchema, ListInstancesResponseSchema, UpdateInstanceRequestSchema } from "../../gen/tidemark/v1/instance_pb.js";
import { COMMAND_EVENT_NAMESPACE, validateInstanceCommand } from "../../server/instances/instance-commands.js";
import { DEFAULT_LIMITS } from "../../server/limits.js";
import { validateAppend } from "../../server/validation.js";

const RUNS = { numRuns: 300 };

/** Object keys a hostile client likes: prototype names, unicode, long, empty. */
const hostileKey = fc.oneof(
  fc.constantFrom("__proto__", "constructor", "prototype", "hasOwnProperty", "toString", "", "0", "01", "\ufeff", "a.b", "k".repeat(300)),
  fc.string({ unit: "grapheme", maxLength: 12 }),
);

/** JSON values with hostile keys, built with own properties only (as a decoder must build them). */
const hostileJson: fc.Arbitrary<JsonValue> = fc.letrec<{ value: JsonValue; object: JsonObject }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small" },
    fc.constant(null),
    fc.boolean(),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.string({ unit: "grapheme", maxLength: 20 }),
    fc.array(tie("value"), { maxLength: 4 }),
    tie("object"),
  ),
  object: fc.array(fc.tuple(hostileKey, tie("value")), { maxLength: 5 }).map((entries) => {
    const out: JsonObject = {};
    for (const [k, v] of entries) setOwn(out, k, v);
    return out;
  }),
})).value;

const hostileObject = hostileJson.filter((v): v is JsonObject => typeof v === "object" && v !== null && !Array.isArray(v));

/** Equal as JSON text: the same own keys, in the same order, with the same values. */
function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

describe("decodeBinary on arbitrary bytes", () => {
  const schemas = [AppendEventsRequestSchema, CreateInstanceRequestSchema, UpdateInstanceRequestSchema, ListInstancesRequestSchema, SubscribeRequestSchema];

  it("returns a message or throws DecodeError, nothing else", () => {
    fc.assert(
      fc.property(fc.constantFrom(...schemas), fc.uint8Array({ maxLength: 200 }), (schema, bytes) => {
        try {
          decodeBinary(schema, bytes, { strictEnums: true });
        } catch (e) {
          expect(e).toBeInstanceOf(DecodeError);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it("on a valid request damaged anywhere, decodes or names a field; what decodes validates or names a field", () => {
    const valid = encodeBinary(
      AppendEventsRequestSchema,
      create(AppendEventsRequestSchema, {
        aggregateType: "Order",
        aggregateId: "o-1",
        expectation: { case: "expectedSeq", value: 3n },
        events: [{ eventId: "e-1", eventType: "Placed", data: { a: [1, { b: "c" }], d: null }, metadata: { correlation_id: "x" } }],
      }),
    );
    fc.assert(
      fc.property(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 }), fc.nat(valid.length), (at, byte, cut) => {
        const damaged = valid.slice(0, Math.max(cut, at + 1));
        damaged[at] = byte;
        let decoded;
        try {
          decoded = decodeBinary(AppendEventsRequestSchema, damaged, { strictEnums: true });
        } catch (e) {
          expect(e).toBeInstanceOf(DecodeError);
          return;
        }
        try {
          validateAppend(decoded, DEFAULT_LIMITS);
        } catch (e) {
          expect(isValidationError(e)).toBe(true);
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe("Struct values", () => {
  it("round-trip through the wire key for key, __proto__ and all, in requests and responses", () => {
    fc.assert(
      fc.property(hostileObject, (data) => {
        const request = create(AppendEventsRequestSchema, { aggregateType: "T", aggregateId: "x", events: [{ eventId: "e", eventType: "E", data }] });
        const back = decodeBinary(AppendEventsRequestSchema, encodeBinary(AppendEventsRequestSchema, request), { strictEnums: true });
        expect(same(back.events[0]!.data, data)).toBe(true);
        const response = create(ReadStreamResponseSchema, { event: { eventId: "e", data } });
        expect(same(decodeBinary(ReadStreamResponseSchema, encodeBinary(ReadStreamResponseSchema, response)).event!.data, data)).toBe(true);
        const list = create(ListInstancesResponseSchema, { instances: [{ instanceId: "a", properties: data }, { instanceId: "b" }, { instanceId: "c", properties: { k: 1 } }] });
        const listed = decodeBinary(ListInstancesResponseSchema, encodeBinary(ListInstancesResponseSchema, list));
        expect(listed.instances.map((i) => JSON.stringify(i.properties))).toEqual([JSON.stringify(data), undefined, '{"k":1}']);
      }),
      RUNS,
    );
  });

  it("decode as protobuf-es does wherever protobuf-es loses nothing", () => {
    fc.assert(
      fc.property(hostileObject.filter((d) => !JSON.stringify(d).includes('"__proto__"')), (data) => {
        const bytes = toBinary(CreateInstanceRequestSchema, create(CreateInstanceRequestSchema, { database: "d", className: "C", instanceId: "i", properties: data, commandId: "c", metadata: { k: "v" } }));
        const ours = decodeBinary(CreateInstanceRequestSchema, bytes, { strictEnums: true });
        const theirs = fromBinary(CreateInstanceRequestSchema, bytes);
        expect(same(ours.properties, theirs.properties)).toBe(true);
        expect({ ...ours, properties: undefined }).toEqual({ ...theirs, properties: undefined });
      }),
      RUNS,
    );
  });

  it("round-trip through the stored envelope JSON exactly", () => {
    fc.assert(
      fc.property(hostileObject, (data) => {
        const envelope = create(EventEnvelopeSchema, { eventId: "e", eventType: "E", aggregateType: "T", aggregateId: "x", sequenceNumber: 1n, data });
        const json = encodeEnvelope(envelope);
        expect(json).toContain(`"data":${JSON.stringify(data)}`);
        const back = decodeEnvelope(json);
        expect(same(back.data, data)).toBe(true);
        expect(encodeEnvelope(back)).toBe(json);
      }),
      RUNS,
    );
  });
});

describe("validation", () => {
  it("accepts data exactly when it has a JSON form within the limits", () => {
    fc.assert(
      fc.property(hostileObject, fc.double(), (data, n) => {
        const withNumber: JsonObject = { ...data };
        setOwn(withNumber, "n", n);
        const result = checkJsonValue(withNumber, { maxDepth: 32, maxBytes: 1 << 20 });
        expect("json" in result).toBe(Number.isFinite(n));
        if ("json" in result) expect(result.json).toBe(JSON.stringify(withNumber));
      }),
      RUNS,
    );
  });

  it("never throws anything but a ValidationError, whatever the strings", () => {
    const text = fc.string({ unit: "binary", maxLength: 40 });
    fc.assert(
      fc.property(text, text, text, text, hostileObject, (type, id, eventId, eventType, data) => {
        for (const run of [
          () => validateAppend(create(AppendEventsRequestSchema, { aggregateType: type, aggregateId: id, expectation: { case: "any", value: {} }, events: [{ eventId, eventType, data, metadata: { [type]: id } }] }), DEFAULT_LIMITS),
          () => validateInstanceCommand("update", { database: type, className: eventType, instanceId: id, properties: data, expectedSeq: 1n, commandId: eventId, actor: id, metadata: {} }, DEFAULT_LIMITS),
        ]) {
          try {
            run();
          } catch (e) {
            expect(isValidationError(e)).toBe(true);
          }
        }
      }),
      RUNS,
    );
  });
});

describe("ids that validation accepts", () => {
  const anyText = fc.oneof(fc.string({ unit: "binary", maxLength: 12 }), fc.constantFrom("\ufeffx", "x", "x\u200b", "a/b", "a%2Fb", "..", "a~", "a~/b"));
  const aggregateId = anyText.filter((s) => checkAggregateId(s) === undefined);

  it("keep their exact text through a segment's header, so no two share an event's place", () => {
    fc.assert(
      fc.property(aggregateId, aggregateId, (a, b) => {
        fc.pre(a !== b);
        const json = (id: string) => JSON.stringify({ aggregate_id: id });
        const encoded = encodeSegment(1, new Date(0), [
          { eventId: "e1", aggregateType: "T", aggregateId: a, seq: 1, json: json(a) },
          { eventId: "e2", aggregateType: "T", aggregateId: b, seq: 1, json: json(b) },
        ]);
        const content = decodeSegmentHeader(encoded.body);
        expect(content.type === "events" && content.entries.map((e) => e.aggregateId)).toEqual([a, b]);
      }),
      { numRuns: 1000 },
    );
  });

  it("never alias two instances or two commands", () => {
    const part = anyText.filter((s) => checkInstancePart(s) === undefined);
    const instanceId = anyText.filter((s) => checkInstanceId(s) === undefined);
    const commandId = anyText.filter((s) => checkEventId(s) === undefined);
    const address = fc.tuple(part, part, instanceId, commandId);
    fc.assert(
      fc.property(address, address, ([d1, c1, i1, k1], [d2, c2, i2, k2]) => {
        fc.pre(d1 !== d2 || c1 !== c2 || i1 !== i2 || k1 !== k2);
        const id1 = instanceAggregateId(d1, c1, i1);
        const id2 = instanceAggregateId(d2, c2, i2);
        if (d1 !== d2 || c1 !== c2 || i1 !== i2) expect(id1).not.toBe(id2);
        // The event id a command derives (server/instances/instance-commands.ts).
        expect(uuidv5(`update\n${id1}\n${k1}`, COMMAND_EVENT_NAMESPACE)).not.toBe(uuidv5(`update\n${id2}\n${k2}`, COMMAND_EVENT_NAMESPACE));
      }),
      { numRuns: 1000 },
    );
  });

  it("refuse every invisible or bidi control character", () => {
    fc.assert(
      fc.property(fc.string({ unit: "grapheme", minLength: 1, maxLength: 8 }), fc.constantFrom("\ufeff", "\u200b", "\u200c", "\u200d", "\u2060", "\u202a", "\u202e", "\u2066", "\u2069", "\u061c", "\u00ad", "\u180e"), fc.nat(8), (base, invisible, at) => {
        const i = Math.min(at, base.length);
        const id = `${base.slice(0, i)}${invisible}${base.slice(i)}`;
        expect(checkAggregateId(id)).toBeDefined();
        expect(checkInstanceId(id)).toBeDefined();
      }),
      RUNS,
    );
  });
});

/**
 * A careless or hostile client, as a client generated in another language can be (docs/CONTRACT.md A2,
 * W3, W4): every bad request is refused with INVALID_ARGUMENT naming the field before anything is
 * reserved, ids are taken exactly as sent or refused, undecodable bytes are the client's mistake
 * (never INTERNAL), and stored data equals sent data key for key. Each numbered case is a finding of
 * issue #11; the bytes are made by hand (test/helpers/raw-grpc.ts), not by Tidemark's encoder.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeEnvelope } from "../../core/envelope.js";
import { storedEvent } from "../helpers/stored-events.js";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import { badFields, collect, expectStatus, findDetail, grpc } from "../helpers/grpc-errors.js";
import {
  doubleField,
  lenField,
  mapEntry,
  message,
  obj,
  rawUnary,
  strField,
  structBytes,
  varint,
  varintField,
  type WireJson,
} from "../helpers/raw-grpc.js";
import { startTestServer, type TestServer } from "../helpers/test-server.js";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t?.close();
});

const APPEND = "/tidemark.v1.EventStoreService/AppendEvents";
const CREATE = "/tidemark.v1.InstanceService/CreateInstance";
const UPDATE = "/tidemark.v1.InstanceService/UpdateInstance";
const GET = "/tidemark.v1.InstanceService/GetInstance";
const LIST = "/tidemark.v1.InstanceService/ListInstances";

/** A ProposedEvent's bytes: event_id 1, event_type 2, data 3, metadata 4. */
function proposed(eventId: string, data: WireJson | undefined, extra: number[][] = []): number[] {
  const parts = [strField(1, eventId), strField(2, "Poke")];
  if (data !== undefined) parts.push(lenField(3, structBytes((data as { entries: ReadonlyArray<readonly [string, WireJson]> }).entries)));
  return [...parts.flat(), ...extra.flat()];
}

/** AppendEvents bytes with `any` (field 5) unless an expected_seq is given. */
function appendBytes(type: string, id: string, events: number[][], expectedSeq?: number): Uint8Array {
  const expectation = expectedSeq === undefined ? lenField(5, []) : varintField(3, expectedSeq);
  return message(strField(1, type), strField(2, id), expectation, ...events.map((e) => lenField(6, e)));
}

/** The stream's head and allocation, or undefined when it was never reserved. */
async function heads(type: string, id: string): Promise<{ head: bigint; allocated: bigint } | undefined> {
  try {
    const h = await t.events.getStreamHead({ aggregateType: type, aggregateId: id });
    return { head: h.head, allocated: h.allocated };
  } catch (e) {
    if ((e as grpc.ServiceError).code === grpc.status.NOT_FOUND) return undefined;
    throw e;
  }
}

/** The field names of a raw call's INVALID_ARGUMENT. */
function fieldsOf(outcome: { error: unknown }): string[] {
  return findDetail(outcome.error, BadRequestSchema)?.fieldViolations.map((v) => v.field) ?? [];
}

describe("1. a value with no JSON form (NaN, ±Infinity) is refused before anything is reserved", () => {
  it("refuses NaN and ±Infinity in event data, leaves head and allocation alone, and lets honest writers through at once", async () => {
    await t.events.appendEvents({ aggregateType: "Poison", aggregateId: "p1", expectation: { case: "noStream", value: {} }, events: [{ eventId: "p1-1", eventType: "Poke", data: { x: 1 } }] });
    const before = await heads("Poison", "p1");
    expect(before).toEqual({ head: 1n, allocated: 1n });
    const cases: Array<[WireJson, string]> = [
      [obj(["x", Number.NaN]), "events[0].data.x"],
      [obj(["x", Number.POSITIVE_INFINITY]), "events[0].data.x"],
      [obj(["deep", obj(["list", [1, Number.NEGATIVE_INFINITY]])]), "events[0].data.deep.list[1]"],
    ];
    for (const [data, field] of cases) {
      const out = await rawUnary(t.server.address, APPEND, appendBytes("Poison", "p1", [proposed("n1", data)]));
      expect(grpc.status[out.code]).toBe("INVALID_ARGUMENT");
      expect(fieldsOf(out)).toEqual([field]);
      expect(out.details).toMatch(/finite number/);
      expect(await heads("Poison", "p1")).toEqual(before);
    }
    // An honest writer with the exact expectation is not held up by anything the bad calls left.
    const honest = await t.events.appendEvents({ aggregateType: "Poison", aggregateId: "p1", expectation: { case: "expectedSeq", value: 1n }, events: [{ eventId: "p1-2", eventType: "Poke", data: { x: 2 } }] });
    expect(honest.events[0]!.sequenceNumber).toBe(2n);
    // n1 was never reserved, so it is free for a valid event.
    const reuse = await t.events.appendEvents({ aggregateType: "Poison", aggregateId: "p1", expectation: { case: "expectedSeq", value: 2n }, events: [{ eventId: "n1", eventType: "Poke", data: { x: 3 } }] });
    expect(reuse.events[0]!.sequenceNumber).toBe(3n);
  });

  it("refuses NaN in instance properties on create and update, and the version does not move", async () => {
    const nan = lenField(4, structBytes([["x", Number.NaN]]));
    const created = await rawUnary(t.server.address, CREATE, message(strField(1, "probe"), strField(2, "Person"), strField(3, "nan"), nan, strField(5, "c-nan-1")));
    expect(grpc.status[created.code]).toBe("INVALID_ARGUMENT");
    expect(fieldsOf(created)).toEqual(["properties.x"]);
    expect(await heads("Instance", "probe/Person/nan")).toBeUndefined();

    await t.instances.createInstance({ database: "probe", className: "Person", instanceId: "nan", properties: { x: 1 }, commandId: "c-nan-2" });
    const updated = await rawUnary(t.server.address, UPDATE, message(strField(1, "probe"), strField(2, "Person"), strField(3, "nan"), nan, varintField(5, 1), strField(6, "c-nan-3")));
    expect(grpc.status[updated.code]).toBe("INVALID_ARGUMENT");
    expect(fieldsOf(updated)).toEqual(["properties.x"]);
    expect(await heads("Instance", "probe/Person/nan")).toEqual({ head: 1n, allocated: 1n });
    const got = await t.instances.getInstance({ database: "probe", className: "Person", instanceId: "nan" });
    expect(got.instance).toMatchObject({ version: 1n, properties: { x: 1 } });
  });
});

describe("2. ids are compared and stored exactly as sent, or refused", () => {
  it("refuses a leading U+FEFF (and other invisible characters) in every id field, and never aliases two ids", async () => {
    await t.events.appendEvents({ aggregateType: "Bom", aggregateId: "x", expectation: { case: "noStream", value: {} }, events: [{ eventId: "bom-x", eventType: "Poke" }] });
    const appendCases: Array<[Uint8Array, string]> = [
      [appendBytes("Bom", "\ufeffx", [proposed("bom-1", obj())]), "aggregate_id"],
      [appendBytes("Bom", "x\u200b", [proposed("bom-2", obj())]), "aggregate_id"],
      [appendBytes("Bom", "a\u202eb", [proposed("bom-3", obj())]), "aggregate_id"],
      [appendBytes("\ufeffBom", "x", [proposed("bom-4", obj())]), "aggregate_type"],
      [appendBytes("Bom", "x", [proposed("\ufeffbom-x", obj())]), "events[0].event_id"],
      [appendBytes("Bom", "x", [[...strField(1, "bom-5"), ...strField(2, "\ufeffPoke")]]), "events[0].event_type"],
    ];
    for (const [bytes, field] of appendCases) {
      const out = await rawUnary(t.server.address, APPEND, bytes);
      expect(grpc.status[out.code], field).toBe("INVALID_ARGUMENT");
      expect(fieldsOf(out)).toContain(field);
    }
    expect(await heads("Bom", "x")).toEqual({ head: 1n, allocated: 1n });

    await t.instances.createInstance({ database: "probe", className: "Person", instanceId: "base", properties: { v: 1 }, commandId: "c-base" });
    const instanceCases: Array<[Uint8Array, string]> = [
      [message(strField(1, "probe"), strField(2, "Person"), strField(3, "\ufeffbase"), strField(5, "c-bom-1")), "instance_id"],
      [message(strField(1, "\ufeffprobe"), strField(2, "Person"), strField(3, "base"), strField(5, "c-bom-2")), "database"],
      [message(strField(1, "probe"), strField(2, "\ufeffPerson"), strField(3, "base"), strField(5, "c-bom-3")), "class_name"],
      [message(strField(1, "probe"), strField(2, "Person"), strField(3, "other"), strField(5, "\ufeffc-base")), "command_id"],
    ];
    for (const [bytes, field] of instanceCases) {
      const out = await rawUnary(t.server.address, CREATE, bytes);
      expect(grpc.status[out.code], field).toBe("INVALID_ARGUMENT");
      expect(fieldsOf(out)).toContain(field);
    }
    expect(await heads("Instance", "probe/Person/base")).toEqual({ head: 1n, allocated: 1n });
    expect(await heads("Instance", "probe/Person/other")).toBeUndefined();
  });

  it("keeps a U+FEFF inside data, where it is content", async () => {
    const data = obj(["\ufeffkey", "\ufeffvalue"], ["plain", "x\ufeff"]);
    const out = await rawUnary(t.server.address, APPEND, appendBytes("Bom", "data", [proposed("bom-data", data)]));
    expect(grpc.status[out.code]).toBe("OK");
    const [read] = await collect(t.events.readStream({ aggregateType: "Bom", aggregateId: "data" }));
    expect(JSON.stringify(read!.event!.data)).toBe(JSON.stringify({ "\ufeffkey": "\ufeffvalue", plain: "x\ufeff" }));
  });
});

describe("3. undecodable requests are INVALID_ARGUMENT, never INTERNAL", () => {
  /** A google.protobuf.Value holding Structs nested `depth` deep (`{"a":{"a":...1}}`), built in linear time. */
  function nestedStruct(depth: number): number[] {
    // Each level is a header (tags and lengths) followed by the level inside it, so the headers are
    // computed innermost first and written outermost first.
    const inner = doubleField(2, 1);
    const headers: number[][] = [];
    let length = inner.length;
    for (let i = 0; i < depth; i++) {
      const entryBody = [...strField(1, "a"), ...varint((2 << 3) | 2), ...varint(length)];
      const entryLength = entryBody.length + length;
      const structHeader = [...varint((1 << 3) | 2), ...varint(entryLength)];
      const structLength = structHeader.length + entryLength;
      const valueHeader = [...varint((5 << 3) | 2), ...varint(structLength)];
      headers.push([...valueHeader, ...structHeader, ...entryBody]);
      length = valueHeader.length + structLength;
    }
    const out: number[] = [];
    for (let i = headers.length - 1; i >= 0; i--) for (const b of headers[i]!) out.push(b);
    for (const b of inner) out.push(b);
    return out;
  }
  const garbage = Uint8Array.from({ length: 64 }, (_, i) => (i * 131 + 7) % 256);
  const structOf = (value: number[]) => lenField(3, lenField(1, [...strField(1, "k"), ...lenField(2, value)]));
  const cases: Array<[string, string, Uint8Array]> = [
    ["garbage", APPEND, garbage],
    ["garbage", CREATE, garbage],
    ["a lone 0xff", APPEND, message([0xff])],
    ["a truncated varint", APPEND, message([0x18, 0xff, 0xff])],
    ["a tag with field number 0", APPEND, message([0x02, 0x00])],
    ["wire type 7", APPEND, message([0x0f])],
    ["a length beyond the end", APPEND, message([0x0a, 0x7f, 0x41])],
    ["a string field sent as a varint", APPEND, message(varintField(1, 5))],
    ["a string field sent as fixed64", APPEND, message(doubleField(2, 1))],
    ["a message field sent as a varint", APPEND, message(varintField(6, 1))],
    ["expected_seq sent as a string", APPEND, message(strField(1, "T"), strField(2, "x"), strField(3, "1"))],
    ["invalid UTF-8 in aggregate_type", APPEND, message(lenField(1, [0xc3, 0x28]))],
    ["invalid UTF-8 in aggregate_id", APPEND, message(strField(1, "T"), lenField(2, [0xe2, 0x82]))],
    ["invalid UTF-8 in event_id", APPEND, message(strField(1, "T"), strField(2, "x"), lenField(5, []), lenField(6, lenField(1, [0xff, 0xfe])))],
    ["invalid UTF-8 in a data key", APPEND, message(strField(1, "T"), strField(2, "x"), lenField(5, []), lenField(6, [...strField(1, "e"), ...strField(2, "E"), ...lenField(3, lenField(1, [...lenField(1, [0xc0, 0x80]), ...lenField(2, doubleField(2, 1))]))]))],
    ["invalid UTF-8 in a data string", APPEND, message(strField(1, "T"), strField(2, "x"), lenField(5, []), lenField(6, [...strField(1, "e"), ...strField(2, "E"), ...structOf(lenField(3, [0xed, 0xa0, 0x80]))]))],
    ["invalid UTF-8 in a metadata value", APPEND, message(strField(1, "T"), strField(2, "x"), lenField(5, []), lenField(6, [...strField(1, "e"), ...strField(2, "E"), ...lenField(4, [...strField(1, "k"), ...lenField(2, [0xf8, 0x88, 0x80, 0x80, 0x80])])]))],
    ["a data value with no kind", APPEND, message(strField(1, "T"), strField(2, "x"), lenField(5, []), lenField(6, [...strField(1, "e"), ...strField(2, "E"), ...structOf([])]))],
    ["a data number sent as a varint", APPEND, message(strField(1, "T"), strField(2, "x"), lenField(5, []), lenField(6, [...strField(1, "e"), ...strField(2, "E"), ...structOf(varintField(2, 1))]))],
    ["a truncated nested message", APPEND, message(strField(1, "T"), strField(2, "x"), [...varint((6 << 3) | 2), 10, ...strField(1, "e")])],
    ["Struct nested 200 deep", APPEND, message(strField(1, "T"), strField(2, "x"), lenField(5, []), lenField(6, [...strField(1, "e"), ...strField(2, "E"), ...lenField(3, lenField(1, [...strField(1, "k"), ...lenField(2, nestedStruct(200))]))]))],
    ["Struct nested 1 000 deep", APPEND, message(strField(1, "T"), strField(2, "x"), lenField(5, []), lenField(6, [...strField(1, "e"), ...strField(2, "E"), ...lenField(3, lenField(1, [...strField(1, "k"), ...lenField(2, nestedStruct(1000))]))]))],
    ["Struct nested 50 000 deep", APPEND, message(strField(1, "T"), strField(2, "x"), lenField(5, []), lenField(6, [...strField(1, "e"), ...strField(2, "E"), ...lenField(3, lenField(1, [...strField(1, "k"), ...lenField(2, nestedStruct(50_000))]))]))],
    ["properties nested 50 000 deep", CREATE, message(strField(1, "probe"), strField(2, "Person"), strField(3, "deep"), lenField(4, lenField(1, [...strField(1, "k"), ...lenField(2, nestedStruct(50_000))])), strField(5, "c"))],
    ["an unknown consistency (99)", GET, message(strField(1, "probe"), strField(2, "Person"), strField(3, "base"), varintField(4, 99))],
    ["an unknown consistency (-1)", LIST, message(strField(1, "probe"), strField(2, "Person"), varintField(6, -1))],
    ["an unknown event kind", APPEND, message(strField(1, "T"), strField(2, "x"), lenField(5, []), lenField(6, [...strField(1, "e"), ...strField(2, "E"), ...varintField(6, 7)]))],
  ];

  it.each(cases)("%s (%s)", async (_name, path, bytes) => {
    const out = await rawUnary(t.server.address, path, bytes);
    expect(grpc.status[out.code]).toBe("INVALID_ARGUMENT");
    expect(fieldsOf(out).length).toBe(1);
    expect(out.details).not.toMatch(/internal|deserializ/i);
    expect(await heads("T", "x")).toBeUndefined();
  });

  it("counts no INTERNAL answer for any of them", async () => {
    const metrics = await t.server.registry.getSingleMetricAsString("tidemark_grpc_internal_errors_total");
    expect(metrics).not.toMatch(/^tidemark_grpc_internal_errors_total\{/m);
  });
});

describe("4. a page token that this server did not make", () => {
  it("refuses a token holding NUL, non-canonical base64 or a foreign prefix with INVALID_ARGUMENT", async () => {
    const tokens = [
      Buffer.from("probe/Person/\u0000\u0000", "utf8").toString("base64url"),
      Buffer.from("probe/Person/a\u0000b", "utf8").toString("base64url"),
      Buffer.from([0x70, 0x72, 0x6f, 0x62, 0x65, 0x2f, 0xff]).toString("base64url"),
      Buffer.from("other/Person/x", "utf8").toString("base64url"),
      "not base64 at all!",
    ];
    for (const pageToken of tokens) {
      const error = await expectStatus(t.instances.listInstances({ database: "probe", className: "Person", pageToken }), grpc.status.INVALID_ARGUMENT);
      expect(badFields(error)).toEqual(["page_token"]);
    }
    // A token the server made still works.
    for (const id of ["l1", "l2", "l3"]) await t.instances.createInstance({ database: "probe", className: "Paged", instanceId: id, properties: {}, commandId: `c-${id}` });
    const first = await t.instances.listInstances({ database: "probe", className: "Paged", pageSize: 2 });
    const second = await t.instances.listInstances({ database: "probe", className: "Paged", pageSize: 2, pageToken: first.nextPageToken });
    expect(second.instances.map((i) => i.instanceId)).toEqual(["l3"]);
  });
});

describe("5. stored data equals sent data, key for key", () => {
  const longKey = "k".repeat(5000);
  const sent: WireJson = obj(
    ["__proto__", obj(["polluted", true])],
    ["k", 1],
    ["constructor", obj(["prototype", 2])],
    ["hasOwnProperty", 3],
    [longKey, "long"],
    ["ключ", "значение"],
    ["🔑", ["🗝", null, false, 1.5e300, -0.25]],
    ["nested", obj(["__proto__", null])],
  );
  const expectedJson =
    `{"__proto__":{"polluted":true},"k":1,"constructor":{"prototype":2},"hasOwnProperty":3,"${longKey}":"long",` +
    `"ключ":"значение","🔑":["🗝",null,false,1.5e+300,-0.25],"nested":{"__proto__":null}}`;

  it("round-trips __proto__, constructor, very long and unicode keys through S3, ReadStream and Subscribe", async () => {
    const out = await rawUnary(t.server.address, APPEND, appendBytes("Proto", "p", [proposed("proto-1", sent)]));
    expect(grpc.status[out.code]).toBe("OK");

    // S3: the event's bytes in its segment hold the data exactly.
    const body = (await storedEvent(t.server.objects, "Proto", "p", 1))?.json;
    expect(body).toBeDefined();
    expect(body!).toContain(`"data":${expectedJson}`);
    const stored = decodeEnvelope(body!);
    expect(JSON.stringify(stored.data)).toBe(expectedJson);
    expect(Object.getPrototypeOf(stored.data)).toBe(Object.prototype);

    const [read] = await collect(t.events.readStream({ aggregateType: "Proto", aggregateId: "p" }));
    expect(JSON.stringify(read!.event!.data)).toBe(expectedJson);

    const controller = new AbortController();
    for await (const m of t.events.subscribe({ start: { case: "afterPosition", value: 0n }, aggregateTypes: ["Proto"] }, { signal: controller.signal })) {
      if (m.message.case !== "event") continue;
      expect(JSON.stringify(m.message.value.data)).toBe(expectedJson);
      controller.abort();
      break;
    }

    // A retry with the same bytes is the same content (the hash sees every key).
    const retry = await rawUnary(t.server.address, APPEND, appendBytes("Proto", "p", [proposed("proto-1", sent)]));
    expect(grpc.status[retry.code]).toBe("OK");
    const without = await rawUnary(t.server.address, APPEND, appendBytes("Proto", "p", [proposed("proto-1", obj(["k", 1]))]));
    expect(grpc.status[without.code]).toBe("ALREADY_EXISTS");
  });

  it("keeps __proto__ in instance properties and in merge patches", async () => {
    const created = await rawUnary(t.server.address, CREATE, message(strField(1, "probe"), strField(2, "Proto"), strField(3, "i"), lenField(4, structBytes([["__proto__", obj(["a", 1])], ["b", 2]])), strField(5, "c-proto-1")));
    expect(grpc.status[created.code]).toBe("OK");
    const patched = await rawUnary(t.server.address, UPDATE, message(strField(1, "probe"), strField(2, "Proto"), strField(3, "i"), lenField(4, structBytes([["__proto__", obj(["c", 3])]])), varintField(5, 1), strField(6, "c-proto-2")));
    expect(grpc.status[patched.code]).toBe("OK");
    const got = await t.instances.getInstance({ database: "probe", className: "Proto", instanceId: "i" });
    expect(JSON.stringify(got.instance!.properties)).toBe('{"__proto__":{"a":1,"c":3},"b":2}');
  });

  it("refuses a metadata key __proto__ instead of dropping it", async () => {
    const out = await rawUnary(t.server.address, APPEND, appendBytes("Proto", "m", [proposed("proto-m", obj(), [mapEntry(4, "__proto__", "x")])]));
    expect(grpc.status[out.code]).toBe("INVALID_ARGUMENT");
    expect(fieldsOf(out)).toEqual(["events[0].metadata"]);
    expect(out.details).toMatch(/__proto__/);
    expect(await heads("Proto", "m")).toBeUndefined();
  });
});

describe("6. the generic API cannot forge domain state", () => {
  it("refuses generic appends to Instance streams, so STRONG reads fold only what InstanceService decided", async () => {
    await t.instances.createInstance({ database: "probe", className: "Forged", instanceId: "f", properties: { owner: "alice" }, commandId: "c-forged" });
    const error = await expectStatus(
      t.events.appendEvents({
        aggregateType: "Instance",
        aggregateId: "probe/Forged/f",
        expectation: { case: "any", value: {} },
        events: [{ eventId: "forge-1", eventType: "InstanceCreated", data: { properties: { owner: "mallory" } } }],
      }),
      grpc.status.INVALID_ARGUMENT,
    );
    expect(badFields(error)).toEqual(["aggregate_type"]);
    // Nor can a generic id make an instance GetInstance cannot address (`db/E/a/b`).
    await expectStatus(
      t.events.appendEvents({ aggregateType: "Instance", aggregateId: "probe/E/a/b", expectation: { case: "noStream", value: {} }, events: [{ eventId: "forge-2", eventType: "InstanceCreated" }] }),
      grpc.status.INVALID_ARGUMENT,
    );
    const got = await t.instances.getInstance({ database: "probe", className: "Forged", instanceId: "f", consistency: 2 });
    expect(got.instance).toMatchObject({ version: 1n, properties: { owner: "alice" } });
  });

  it("refuses server-set metadata keys (command_id) in generic appends and instance commands", async () => {
    const generic = await expectStatus(
      t.events.appendEvents({ aggregateType: "Order", aggregateId: "forge", expectation: { case: "noStream", value: {} }, events: [{ eventId: "forge-3", eventType: "Placed", metadata: { command_id: "c-forged" } }] }),
      grpc.status.INVALID_ARGUMENT,
    );
    expect(badFields(generic)).toEqual(["events[0].metadata"]);
    const instance = await expectStatus(
      t.instances.createInstance({ database: "probe", className: "Forged", instanceId: "g", properties: {}, commandId: "c-g", metadata: { command_id: "c-forged" } }),
      grpc.status.INVALID_ARGUMENT,
    );
    expect(badFields(instance)).toEqual(["metadata"]);
    expect(await heads("Order", "forge")).toBeUndefined();
  });
});

describe("minor findings", () => {
  it("refuses metadata values with NUL, CR or LF", async () => {
    for (const value of ["a\u0000b", "line\r\nInjected: yes", "a\nb"]) {
      const error = await expectStatus(
        t.events.appendEvents({ aggregateType: "Meta", aggregateId: "m", expectation: { case: "any", value: {} }, events: [{ eventId: "meta-1", eventType: "Noted", metadata: { note: value } }] }),
        grpc.status.INVALID_ARGUMENT,
      );
      expect(badFields(error)).toEqual(["events[0].metadata"]);
    }
    expect(await heads("Meta", "m")).toBeUndefined();
  });

  it("answers FAILED_PRECONDITION for creating a deleted instance again: deletion is final", async () => {
    const address = { database: "probe", className: "Person", instanceId: "gone" };
    await t.instances.createInstance({ ...address, properties: {}, commandId: "c-gone-1" });
    await t.instances.deleteInstance({ ...address, expectedSeq: 1n, commandId: "c-gone-2" });
    await expectStatus(t.instances.createInstance({ ...address, properties: { again: true }, commandId: "c-gone-3" }), grpc.status.FAILED_PRECONDITION);
    expect(await heads("Instance", "probe/Person/gone")).toEqual({ head: 2n, allocated: 2n });
  });
});

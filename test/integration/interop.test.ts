/**
 * Interop: the scenario list of test/interop/SCENARIOS.md run by four clients (Go, Python, grpcurl,
 * TypeScript) against one real server; Go and Python decoding real envelope bytes from S3 and
 * Kafka, and whole segments (docs/STORAGE.md); and the compatibility guard (`buf breaking`, scripts/check-breaking.sh). A missing
 * toolchain fails these tests, never skips them: scripts/interop.sh installs what it can.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { fromJsonString, toJson, type JsonObject } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { S3ObjectStore } from "../../core/s3-object-store.js";
import { decodeSegment, encodeSegment, encodeVoidSegment, SEGMENT_PREFIX, type SegmentEvent } from "../../core/segment.js";
import { EventEnvelopeSchema, EventKind } from "../../gen/tidemark/v1/envelope_pb.js";
import { deleteTopics, startCollector, type Collector } from "../helpers/relay-kafka.js";
import { relayTestConfig, relayTopics, startTestRelay, stopAllRelays } from "../helpers/relay-test.js";
import { stackEnv, startTestServer, type TestServer } from "../helpers/test-server.js";
import { findTool } from "../helpers/tools.js";
import { waitFor } from "../helpers/wait-for.js";
import { runScenarios } from "../interop/ts/scenarios.js";
import { storedEvents } from "../helpers/stored-events.js";

const root = fileURLToPath(new URL("../..", import.meta.url));
const interop = path.join(root, "test/interop");
const buf = path.join(root, "node_modules/.bin/buf");

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a program to completion in its own process group, killed whole after `timeoutMs`. */
function run(command: string, args: readonly string[], options: { input?: string; env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd ?? root,
      env: { ...process.env, PATH: stackEnv()["PATH"] ?? process.env["PATH"] ?? "", ...options.env },
      detached: true,
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString("utf8")));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
    const timer = setTimeout(() => {
      stderr += `\n(killed after ${options.timeoutMs} ms)`;
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {}
    }, options.timeoutMs ?? 50_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${command}: ${e.message}`));
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    // A program that exits without reading its input closes the pipe first: EPIPE here says
    // nothing the exit code does not (and unhandled, it would fail the whole run).
    child.stdin.on("error", () => {});
    child.stdin.end(options.input ?? "");
  });
}

/** Fails with everything the program printed unless it exited 0. */
function expectSuccess(what: string, result: Run): void {
  if (result.code !== 0) throw new Error(`${what} exited ${result.code}\n--- stderr\n${result.stderr}\n--- stdout\n${result.stdout}`);
}

/** The scenario ids of SCENARIOS.md (`## S1 …`): every client must report each one as ok. */
async function scenarioIds(): Promise<string[]> {
  const text = await readFile(path.join(interop, "SCENARIOS.md"), "utf8");
  return [...text.matchAll(/^## (S\d+) /gm)].map((m) => m[1]!);
}

function okIds(output: string): string[] {
  return [...output.matchAll(/^ok (S\d+) /gm)].map((m) => m[1]!);
}

const namespace = (client: string) => `${client}-${randomBytes(4).toString("hex")}`;

let t: TestServer;
let tools: { goBin: string; python: string; grpcurl: string };
let ids: string[];

beforeAll(async () => {
  const prepare = (async () => {
    // Installs the pinned plugins and venv when missing, generates the stubs, builds the Go programs.
    const prepared = await run("bash", [path.join(root, "scripts/interop.sh")], { timeoutMs: 900_000 });
    expectSuccess("scripts/interop.sh", prepared);
    const vars = Object.fromEntries(prepared.stdout.split("\n").filter((l) => l.startsWith("INTEROP_")).map((l) => l.split("=", 2) as [string, string]));
    if (!vars["INTEROP_GO_BIN"] || !vars["INTEROP_PYTHON"]) throw new Error(`scripts/interop.sh printed no INTEROP_* paths:\n${prepared.stdout}`);
    return { goBin: vars["INTEROP_GO_BIN"], python: vars["INTEROP_PYTHON"], grpcurl: findTool("grpcurl") };
  })();
  // Settle all three before failing, so a started server is always closed by afterAll.
  const [prepared, server, scenarios] = await Promise.allSettled([prepare, startTestServer(), scenarioIds()]);
  if (server.status === "fulfilled") t = server.value;
  for (const outcome of [prepared, server, scenarios]) if (outcome.status === "rejected") throw outcome.reason;
  tools = (prepared as PromiseFulfilledResult<typeof tools>).value;
  ids = (scenarios as PromiseFulfilledResult<string[]>).value;
  expect(ids.length).toBeGreaterThanOrEqual(9);
}, 900_000);

afterAll(async () => {
  await t?.close();
});

describe("one scenario list, four clients", () => {
  it("Go (protoc-gen-go, protoc-gen-go-grpc)", async () => {
    const result = await run(path.join(tools.goBin, "scenarios"), [t.server.address, namespace("go")]);
    expectSuccess("the Go client", result);
    expect(okIds(result.stdout)).toEqual(ids);
  });

  it("Python (grpcio-tools)", async () => {
    const result = await run(tools.python, [path.join(interop, "python/scenarios.py"), t.server.address, namespace("py")]);
    expectSuccess("the Python client", result);
    expect(okIds(result.stdout)).toEqual(ids);
  });

  it("grpcurl (reflection only)", async () => {
    const result = await run("bash", [path.join(interop, "grpcurl/scenarios.sh"), t.server.address, namespace("sh")], { env: { GRPCURL: tools.grpcurl } });
    expectSuccess("the grpcurl client", result);
    expect(okIds(result.stdout)).toEqual(ids);
  });

  it("TypeScript (protoc-gen-es, grpc-js)", async () => {
    const lines: string[] = [];
    await runScenarios(t.server.address, namespace("ts"), (line) => lines.push(line));
    expect(okIds(lines.join("\n"))).toEqual(ids);
  });

  it("each client fails loudly, naming the scenario, when an expectation does not hold", async () => {
    // Re-running a namespace makes S1 a replay: the create comes back with replayed = true.
    const ns = namespace("again");
    expectSuccess("the Go client", await run(path.join(tools.goBin, "scenarios"), [t.server.address, ns]));
    for (const [client, result] of [
      ["Go", await run(path.join(tools.goBin, "scenarios"), [t.server.address, ns])],
      ["Python", await run(tools.python, [path.join(interop, "python/scenarios.py"), t.server.address, ns])],
      ["grpcurl", await run("bash", [path.join(interop, "grpcurl/scenarios.sh"), t.server.address, ns], { env: { GRPCURL: tools.grpcurl } })],
    ] as const) {
      expect(result.code, client).toBe(1);
      expect(result.stderr, client).toMatch(/^FAIL S1: replayed: expected '?false'?, got '?true'?$/im);
    }
    await expect(runScenarios(t.server.address, ns, () => {})).rejects.toThrow(/^FAIL S1: /);
  });
});

describe("envelope decoding in Go and Python", () => {
  interface Case {
    readonly name: string;
    readonly json: string;
  }
  interface Decoded {
    readonly name: string;
    readonly unknown: string[];
    readonly reencoded: JsonObject;
  }

  /** What a tolerant parser drops: unknown fields, and enum values by an unknown name ("kind=NAME"). */
  function unknownParts(raw: string): string[] {
    const out: string[] = [];
    for (const [key, value] of Object.entries(JSON.parse(raw) as Record<string, unknown>)) {
      const field = EventEnvelopeSchema.fields.find((f) => f.name === key || f.jsonName === key);
      if (field === undefined) out.push(key);
      else if (field.fieldKind === "enum" && typeof value === "string" && !field.enum.values.some((v) => v.name === value)) out.push(`${key}=${value}`);
    }
    return out.sort();
  }

  /** protobuf-es's tolerant decoding of envelope bytes, re-encoded with proto field names. */
  function reference(raw: string): JsonObject {
    return toJson(EventEnvelopeSchema, fromJsonString(EventEnvelopeSchema, raw, { ignoreUnknownFields: true }), { useProtoFieldName: true }) as JsonObject;
  }

  /** Runs the Go and the Python decoder on one input: cases of either form ({name, json} or {name, segment_base64}). */
  async function runDecoders(cases: readonly object[]): Promise<Record<"go" | "python", Run>> {
    const input = JSON.stringify(cases);
    const [go, python] = await Promise.all([
      run(path.join(tools.goBin, "envelope"), [], { input }),
      run(tools.python, [path.join(interop, "python/envelope.py")], { input }),
    ]);
    return { go, python };
  }

  /** Runs both decoders on `cases`; each must pass its own lossless checks and agree with protobuf-es. */
  async function decodeEverywhere(cases: Case[]): Promise<Record<"go" | "python", Decoded[]>> {
    const { go, python } = await runDecoders(cases);
    expectSuccess("the Go envelope decoder", go);
    expectSuccess("the Python envelope decoder", python);
    const out = { go: JSON.parse(go.stdout) as Decoded[], python: JSON.parse(python.stdout) as Decoded[] };
    for (const [language, decoded] of Object.entries(out)) {
      expect(decoded.map((d) => d.name), language).toEqual(cases.map((c) => c.name));
      decoded.forEach((d, i) => {
        const raw = cases[i]!.json;
        // The same message, field for field, as protobuf-es decodes the same bytes.
        expect(d.reencoded, `${language} ${d.name}`).toEqual(reference(raw));
        expect(d.unknown, `${language} ${d.name}`).toEqual(unknownParts(raw));
      });
    }
    return out;
  }

  /** Runs `read` on the test server's bucket, through the S3 API. */
  async function fromBucket<T>(read: (s3: S3ObjectStore) => Promise<T>): Promise<T> {
    const s3 = new S3ObjectStore({
      endpoint: t.config.s3Endpoint,
      bucket: t.config.s3Bucket,
      region: t.config.s3Region,
      accessKeyId: t.config.s3AccessKey,
      secretAccessKey: t.config.s3SecretKey,
    });
    try {
      return await read(s3);
    } finally {
      s3.close();
    }
  }

  /** Every event in the test server's segments, its bytes as stored, in segment order. */
  async function storedObjects(): Promise<Case[]> {
    return fromBucket(async (s3) => (await storedEvents(s3)).map((e) => ({ name: `${e.key}#${e.eventId}`, json: e.json })));
  }

  const orderType = `Envelope.${randomBytes(3).toString("hex")}`;
  let written: string[];

  beforeAll(async () => {
    // Events with every envelope field in use: nested data, unicode, floats, metadata, actor,
    // schema version, command kind.
    const first = await t.events.appendEvents({
      aggregateType: orderType,
      aggregateId: "ü/1 ✓",
      expectation: { case: "noStream", value: {} },
      actor: "alice@example.com",
      events: [
        {
          eventId: `${orderType}-1`,
          eventType: "OrderPlaced",
          data: { total: 42.5, count: 3, lines: [{ sku: "A-1", qty: 2 }, { sku: "ß", qty: 1 }], note: "naïve ✓", gift: false, coupon: null, nested: { a: { b: { c: [] } } } },
          metadata: { correlation_id: "corr-1", ordering_key: "k-1", traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
          schemaVersion: 3,
        },
        { eventId: `${orderType}-2`, eventType: "PlaceOrder", kind: EventKind.COMMAND, data: {} },
      ],
    });
    written = first.events.map((e) => e.eventId);
  });

  it("decodes the events in the server's S3 segments losslessly and ignores unknown fields", async () => {
    const cases = await storedObjects();
    const mine = cases.filter((c) => written.includes((JSON.parse(c.json) as { event_id: string }).event_id));
    expect(mine).toHaveLength(2);
    // A newer writer's envelopes: fields this reader's contracts do not know (by proto and JSON
    // name), and enum values added later, by name (dropped) and by number (kept: open enums).
    const stored = JSON.parse(mine.find((c) => c.json.includes(`"${written[0]}"`))!.json) as object;
    cases.push({ name: "with-unknown-fields", json: JSON.stringify({ ...stored, future_field: { nested: [1, "x"] }, addedLater: 7 }) });
    cases.push({ name: "with-unknown-enum-name", json: JSON.stringify({ ...stored, kind: "EVENT_KIND_SNAPSHOT" }) });
    cases.push({ name: "with-unknown-enum-number", json: JSON.stringify({ ...stored, kind: 7 }) });

    const decoded = await decodeEverywhere(cases);
    for (const language of ["go", "python"] as const) {
      const newer = decoded[language].slice(-3);
      expect(newer.map((d) => d.unknown)).toEqual([["addedLater", "future_field"], ["kind=EVENT_KIND_SNAPSHOT"], []]);
      expect(newer.map((d) => d.reencoded["kind"])).toEqual(["EVENT_KIND_DOMAIN", undefined, 7]);
      const placed = decoded[language].find((d) => d.reencoded["event_id"] === written[0])!;
      expect(placed.reencoded).toMatchObject({ schema_version: 3, actor: "alice@example.com", aggregate_id: "ü/1 ✓", metadata: { ordering_key: "k-1" } });
      expect(decoded[language].find((d) => d.reencoded["event_id"] === written[1])!.reencoded["kind"]).toBe("EVENT_KIND_COMMAND");
    }
  });

  it("decodes the Kafka messages the relay produced, global_position set", async () => {
    const brokers = stackEnv()["TIDEMARK_KAFKA_BROKERS"]!.split(",");
    const names = relayTopics("interop");
    const relay = await startTestRelay(relayTestConfig(t.config, { TIDEMARK_RELAY_TOPIC: names.topic, TIDEMARK_DEAD_LETTER_TOPIC: names.deadLetter, TIDEMARK_RELAY_PARTITIONS: "1" }));
    let collector: Collector | undefined;
    try {
      await waitFor(() => relay.status().topicsReady, { what: "the relay to create its topics", timeoutMs: 60_000 });
      collector = await startCollector(brokers, [names.topic]);
      await collector.waitForEvents(written);
      const messages = written.map((id) => collector!.messages.find((m) => m.eventId === id)!);
      const decoded = await decodeEverywhere(messages.map((m) => ({ name: `kafka:${m.eventId}`, json: m.value })));
      for (const language of ["go", "python"] as const) {
        for (const d of decoded[language]) expect(BigInt(d.reencoded["global_position"] as string)).toBeGreaterThan(0n);
      }
    } finally {
      await collector?.close();
      await stopAllRelays();
      await deleteTopics(brokers, [names.topic, names.deadLetter]);
    }
  });

  it("fails loudly on an envelope that does not decode", async () => {
    const input = JSON.stringify([{ name: "bad-seq", json: JSON.stringify({ event_id: "x", sequence_number: "not a number" }) }]);
    for (const [language, result] of [
      ["Go", await run(path.join(tools.goBin, "envelope"), [], { input })],
      ["Python", await run(tools.python, [path.join(interop, "python/envelope.py")], { input })],
    ] as const) {
      expect(result.code, language).toBe(1);
      expect(result.stderr, language).toMatch(/FAIL bad-seq/);
    }
  });

  describe("segments (docs/STORAGE.md)", () => {
    /** A whole segment object, as bytes: built here with core/segment.ts, or fetched from a bucket as stored. */
    interface SegmentCase {
      readonly name: string;
      readonly bytes: Uint8Array;
    }
    interface Entry {
      readonly event_id: string;
      readonly aggregate_type: string;
      readonly aggregate_id: string;
      readonly sequence_number: string;
      readonly offset: number;
      readonly length: number;
    }
    interface DecodedSegment {
      readonly name: string;
      readonly segment: string;
      readonly created_at?: string;
      readonly events?: ReadonlyArray<{ readonly entry: Entry; readonly unknown: string[]; readonly reencoded: JsonObject }>;
      readonly void?: { readonly voided_at: string; readonly reason: string };
    }

    const segmentInput = (c: SegmentCase) => ({ name: c.name, segment_base64: Buffer.from(c.bytes).toString("base64") });

    /**
     * Runs both decoders on whole segment objects. Each must pass its own checks of the format and
     * agree with core/segment.ts's reading of the same bytes (header, entries, byte ranges) and, for
     * every envelope line, with protobuf-es field for field.
     */
    async function decodeSegmentsEverywhere(cases: readonly SegmentCase[]): Promise<Record<"go" | "python", DecodedSegment[]>> {
      const { go, python } = await runDecoders(cases.map(segmentInput));
      expectSuccess("the Go envelope decoder", go);
      expectSuccess("the Python envelope decoder", python);
      const out = { go: JSON.parse(go.stdout) as DecodedSegment[], python: JSON.parse(python.stdout) as DecodedSegment[] };
      const expected = cases.map((c): DecodedSegment => {
        const { content, events } = decodeSegment(c.bytes);
        if (content.type === "void") return { name: c.name, segment: String(content.segment), void: { voided_at: content.voidedAt, reason: content.reason } };
        return {
          name: c.name,
          segment: String(content.segment),
          created_at: content.createdAt,
          events: events.map(({ entry, json }) => ({
            entry: { event_id: entry.eventId, aggregate_type: entry.aggregateType, aggregate_id: entry.aggregateId, sequence_number: String(entry.seq), offset: entry.offset, length: entry.length },
            unknown: unknownParts(json),
            reencoded: reference(json),
          })),
        };
      });
      for (const [language, decoded] of Object.entries(out)) {
        expect(decoded.map((d) => d.name), language).toEqual(cases.map((c) => c.name));
        decoded.forEach((d, i) => expect(d, `${language} ${d.name}`).toEqual(expected[i]));
      }
      return out;
    }

    /** Both decoders must refuse `bad` (after reading `good` in the same input), naming it and the check that failed. */
    async function expectRefused(good: SegmentCase, bad: SegmentCase | { readonly name: string; readonly segment_base64: string }, reason: RegExp): Promise<void> {
      const results = await runDecoders([segmentInput(good), "bytes" in bad ? segmentInput(bad) : bad]);
      for (const [language, result] of Object.entries(results)) {
        expect(result.code, `${language} must refuse ${bad.name}: ${result.stderr}`).toBe(1);
        expect(result.stderr, `${language} ${bad.name}`).toMatch(new RegExp(`^FAIL ${bad.name}: .*${reason.source}`, "m"));
      }
    }

    /** An envelope line as a SegmentEvent, its header entry taken from the envelope itself. */
    function eventOf(json: string): SegmentEvent {
      const e = JSON.parse(json) as { event_id: string; aggregate_type: string; aggregate_id: string; sequence_number: string };
      return { eventId: e.event_id, aggregateType: e.aggregate_type, aggregateId: e.aggregate_id, seq: Number(e.sequence_number), json };
    }

    /** The segment's bytes with its header line edited (entry offsets count from the header's end, so they stay right). */
    function withHeader(body: Uint8Array, edit: (header: Record<string, any>) => void): Buffer {
      const bytes = Buffer.from(body);
      const end = bytes.indexOf(0x0a);
      const header = JSON.parse(bytes.subarray(0, end).toString("utf8")) as Record<string, any>;
      edit(header);
      return Buffer.concat([Buffer.from(JSON.stringify(header)), bytes.subarray(end)]);
    }

    const at = new Date("2026-12-01T10:00:00.123Z");

    // Hand-made envelopes where byte offsets and JavaScript string lengths part: multi-byte and
    // astral characters, escapes JSON must keep on one line (\n, U+2028), a key named constructor,
    // floats, and the largest exact sequence number.
    const handMade = [
      String.raw`{"event_id":"hm-1","event_type":"Noted","aggregate_type":"Note.ünï","aggregate_id":"𝄞/日本語/עברית/é","sequence_number":"1","occurred_at":"2026-12-01T10:00:00.123456789Z","actor":"zoë@example.com","data":{"constructor":{"prototype":{}},"text":"line 1\nline 2\u2028\u2029\ttab \"quoted\" back\\slash \u0000 nul","emoji":"👩‍👩‍👧‍👦🏳️‍🌈","floats":[0.1,-2.5,1e21,1.5e-300,123456789.125,-0.000001],"nested":{"a":[{"b":null},true,false,""]}},"metadata":{"note":"ünï\ncode"},"schema_version":2,"kind":"EVENT_KIND_DOMAIN","content_hash":"sha256:${"ab".repeat(32)}"}`,
      String.raw`{"event_id":"hm-2","event_type":"Noted","aggregate_type":"Note.ünï","aggregate_id":"𝄞/日本語/עברית/é","sequence_number":"9007199254740991","data":{}}`,
      String.raw`{"event_id":"hm-3 ✓","event_type":"PlaceOrder","aggregate_type":"Order","aggregate_id":"o-1","sequence_number":"2","kind":"EVENT_KIND_COMMAND","data":{"x":1}}`,
    ];
    const handMadeSegment = (): SegmentCase => ({ name: "hand-made", bytes: encodeSegment(9007199254740991, at, handMade.map(eventOf)).body });
    // Keys named __proto__, in raw JSON text (a JavaScript object literal would set the prototype
    // instead). protobuf-es drops them from Struct and map fields, so this one is checked against
    // the line's own JSON rather than against protobuf-es.
    const protoKeys = String.raw`{"event_id":"pk-1","event_type":"Noted","aggregate_type":"Note","aggregate_id":"n-1","sequence_number":"1","data":{"__proto__":{"polluted":true,"__proto__":[1]},"constructor":{"prototype":{}},"x":1},"metadata":{"__proto__":"meta","note":"n"}}`;

    it("reads the segments the server wrote, byte for byte as the bucket holds them", async () => {
      const cases: SegmentCase[] = await fromBucket(async (s3) => {
        const keys = await s3.list(SEGMENT_PREFIX);
        return Promise.all(keys.map(async (key) => ({ name: key, bytes: (await s3.read(key))! })));
      });
      expect(cases.length).toBeGreaterThan(0);
      // Compared event for event with core/segment.ts and protobuf-es inside decodeSegmentsEverywhere.
      const decoded = await decodeSegmentsEverywhere(cases);
      for (const language of ["go", "python"] as const) {
        const ids = decoded[language].flatMap((d) => (d.events ?? []).map((e) => e.entry.event_id));
        expect(ids).toEqual(expect.arrayContaining(written));
      }
    });

    it("reads a segment of every envelope in the bucket, and one of newer writers' envelopes", async () => {
      const stored = (await storedObjects()).filter((c) => typeof (JSON.parse(c.json) as { event_type?: unknown }).event_type === "string");
      const mine = stored.filter((c) => written.includes((JSON.parse(c.json) as { event_id: string }).event_id));
      expect(mine).toHaveLength(2);
      // The bucket holds every scenario client's events too: many aggregates in one segment, as a group commit makes.
      expect(stored.length).toBeGreaterThan(mine.length);
      const bucket = encodeSegment(1, at, stored.map((c) => eventOf(c.json)));
      // A newer writer's envelopes in a segment: unknown fields, an unknown enum name, an unknown enum number.
      const base = JSON.parse(mine[0]!.json) as Record<string, unknown>;
      const variant = (i: number, extra: Record<string, unknown>) => JSON.stringify({ ...base, event_id: `${String(base["event_id"])}-v${i}`, sequence_number: String(100 + i), ...extra });
      const newer = encodeSegment(2, at, [
        variant(1, { future_field: { nested: [1, "x"] }, tenant_region: "eu" }),
        variant(2, { kind: "EVENT_KIND_SNAPSHOT" }),
        variant(3, { kind: 7 }),
      ].map(eventOf));

      const cases = [
        { name: "bucket", bytes: bucket.body },
        { name: "newer-writer", bytes: newer.body },
      ];
      const decoded = await decodeSegmentsEverywhere(cases);
      for (const language of ["go", "python"] as const) {
        const [all, later] = decoded[language];
        // The header as encodeSegment wrote it: every event, in order, at the range it reported.
        const h = bucket.body.indexOf(0x0a) + 1;
        expect(all!.events!.map((e) => [e.entry.event_id, h + e.entry.offset, e.entry.length])).toEqual(stored.map((c, i) => [eventOf(c.json).eventId, bucket.ranges[i]!.start, bucket.ranges[i]!.length]));
        expect(all!.events!.find((e) => e.entry.event_id === written[0])!.reencoded).toMatchObject({ schema_version: 3, actor: "alice@example.com", aggregate_id: "ü/1 ✓", metadata: { ordering_key: "k-1" } });
        expect(later!.events!.map((e) => e.unknown)).toEqual([["future_field", "tenant_region"], ["kind=EVENT_KIND_SNAPSHOT"], []]);
        expect(later!.events!.map((e) => e.reencoded["kind"])).toEqual(["EVENT_KIND_DOMAIN", undefined, 7]);
      }
    });

    it("reads hand-made segments: multi-byte offsets, escapes, floats, large numbers; one event; void", async () => {
      const single = { name: "single", bytes: encodeSegment(3, at, [eventOf(handMade[2]!)]).body };
      const voided = { name: "void", bytes: encodeVoidSegment(42, at, "write deadline passed ✗") };
      const decoded = await decodeSegmentsEverywhere([handMadeSegment(), single, voided]);
      for (const language of ["go", "python"] as const) {
        const [hm, one, v] = decoded[language];
        expect(hm!.segment).toBe("9007199254740991");
        expect(hm!.created_at).toBe("2026-12-01T10:00:00.123Z");
        expect(hm!.events!.map((e) => e.entry.sequence_number)).toEqual(["1", "9007199254740991", "2"]);
        // Byte offsets, not UTF-16 ones: the first line is longer in bytes than in JavaScript characters.
        expect(hm!.events![1]!.entry.offset).toBe(Buffer.byteLength(handMade[0]!) + 1);
        expect(hm!.events![1]!.entry.offset).toBeGreaterThan(handMade[0]!.length + 1);
        const data = hm!.events![0]!.reencoded["data"] as Record<string, JsonObject>;
        expect(Object.keys(data)).toContain("constructor");
        expect(data["text"]).toBe('line 1\nline 2\u2028\u2029\ttab "quoted" back\\slash \u0000 nul');
        expect(data["floats"]).toEqual([0.1, -2.5, 1e21, 1.5e-300, 123456789.125, -0.000001]);
        expect(one!.events!.map((e) => e.entry.event_id)).toEqual(["hm-3 ✓"]);
        expect(v).toEqual({ name: "void", segment: "42", void: { voided_at: "2026-12-01T10:00:00.123Z", reason: "write deadline passed ✗" } });
      }
    });

    it("keeps keys named __proto__ in data and metadata", async () => {
      const { go, python } = await runDecoders([segmentInput({ name: "proto-keys", bytes: encodeSegment(4, at, [eventOf(protoKeys)]).body })]);
      const line = JSON.parse(protoKeys) as Record<string, JsonObject>;
      for (const [language, result] of Object.entries({ go, python })) {
        expectSuccess(`the ${language} envelope decoder`, result);
        const [decoded] = JSON.parse(result.stdout) as DecodedSegment[];
        const reencoded = decoded!.events![0]!.reencoded;
        // JSON.parse keeps __proto__ as an own key, so these compare the keys, not prototypes.
        expect(Object.keys(reencoded["data"] as JsonObject), language).toEqual(expect.arrayContaining(["__proto__", "constructor", "x"]));
        expect(reencoded["data"], language).toEqual(line["data"]);
        expect(reencoded["metadata"], language).toEqual(line["metadata"]);
      }
    });

    it("refuses corrupted segments, naming the case and the check that failed", async () => {
      const good = handMadeSegment();
      const { body } = encodeSegment(5, at, handMade.map(eventOf));
      const h = body.indexOf(0x0a) + 1;
      const lines = body.subarray(h).toString("utf8").split("\n");
      const other = String.raw`{"event_id":"extra","event_type":"Noted","aggregate_type":"Order","aggregate_id":"o-9","sequence_number":"1"}`;
      const notUtf8 = Buffer.from(body);
      notUtf8[body.indexOf("line 1")] = 0xff;
      const refused: Array<[string, Uint8Array, RegExp]> = [
        // The header line.
        ["no-header-line", Buffer.from(body.subarray(0, h - 1)), /no header line/],
        ["header-not-json", Buffer.concat([Buffer.from("{not json\n"), body.subarray(h)]), /the header line is not a JSON object/],
        ["wrong-format", withHeader(body, (x) => (x["format"] = "tidemark.segments")), /header format is "tidemark\.segments"/],
        ["wrong-version", withHeader(body, (x) => (x["version"] = 2)), /header version is 2/],
        ["version-as-string", withHeader(body, (x) => (x["version"] = "1")), /header version is "1"/],
        ["segment-as-number", withHeader(body, (x) => (x["segment"] = 5)), /header segment is 5/],
        ["no-created-at", withHeader(body, (x) => delete x["created_at"]), /header created_at is absent/],
        ["no-events", withHeader(body, (x) => delete x["events"]), /header events is absent/],
        ["offset-as-string", withHeader(body, (x) => (x["events"][0].offset = "0")), /header entry 0: offset is "0"/],
        ["duplicate-event-id", withHeader(body, (x) => (x["events"][2].event_id = "hm-1")), /entries 0 and 2 have the same event_id/],
        // Where the header says each event is.
        ["bad-offset", withHeader(body, (x) => (x["events"][0].offset += 1)), /event 0 \(hm-1\): bytes \[\d+, \d+\) are not one line/],
        ["bad-length", withHeader(body, (x) => (x["events"][1].length -= 1)), /event 1 \(hm-2\): bytes \[\d+, \d+\) are not one line/],
        ["past-the-end", withHeader(body, (x) => (x["events"][2].length += 1000)), /event 2 \(hm-3 ✓\): bytes \[\d+, \d+\) are not one line: the segment has \d+ bytes/],
        ["truncated", body.subarray(0, body.length - 10), /event 2 \(hm-3 ✓\): bytes \[\d+, \d+\) are not one line/],
        // What the envelope says against what the header says.
        ["wrong-line", withHeader(body, (x) => Object.assign(x["events"][0], { offset: x["events"][2].offset, length: x["events"][2].length })), /event 0 \(hm-1\): event_id does not match the header/],
        ["wrong-seq", withHeader(body, (x) => (x["events"][2].sequence_number = "3")), /event 2 \(hm-3 ✓\): sequence_number does not match the header/],
        ["wrong-aggregate", withHeader(body, (x) => (x["events"][2].aggregate_id = "o-2")), /event 2 \(hm-3 ✓\): aggregate_id does not match the header/],
        // The lines, split on \n, against the header.
        ["out-of-order", withHeader(body, (x) => x["events"].reverse()), /split on \\n, line 0 is at offset 0/],
        ["unlisted-line", Buffer.concat([body, Buffer.from(`${other}\n`)]), /split on \\n, the body has 4 lines, the header lists 3 events/],
        // What docs/STORAGE.md says of envelope lines.
        ["global-position", encodeSegment(5, at, [eventOf(other.replace("}", ',"global_position":"12"}'))]).body, /global_position is present/],
        ["json-names", encodeSegment(5, at, [{ ...eventOf(other), json: other.replace('"event_type"', '"eventType"') }]).body, /field eventType is written by its JSON name/],
        ["not-utf8", notUtf8, /the segment is not UTF-8/],
        // Void segments.
        ["void-with-events", withHeader(encodeVoidSegment(6, at, "late"), (x) => (x["events"] = [])), /the header has both void and events/],
        ["void-then-lines", Buffer.concat([encodeVoidSegment(6, at, "late"), Buffer.from(`${lines[0]}\n`)]), /a void segment is a single header line/],
      ];
      for (const [name, bytes, reason] of refused) await expectRefused(good, { name, bytes }, reason);
      await expectRefused(good, { name: "not-base64", segment_base64: "not base64!" }, /segment_base64 is not base64/);
    });
  });
});

describe("compatibility guard", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "tidemark-breaking-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A copy of buf.yaml and proto/ with `edits` applied to one file; each edit must match. */
  async function variant(name: string, file: string, edits: Array<[string | RegExp, string]>): Promise<string> {
    const target = path.join(dir, name);
    await cp(path.join(root, "proto"), path.join(target, "proto"), { recursive: true });
    await cp(path.join(root, "buf.yaml"), path.join(target, "buf.yaml"));
    const filePath = path.join(target, "proto", file);
    let text = await readFile(filePath, "utf8");
    for (const [from, to] of edits) {
      const next = text.replace(from, to);
      if (next === text) throw new Error(`${name}: ${String(from)} not found in ${file}: update this test with the contract`);
      text = next;
    }
    await writeFile(filePath, text);
    return target;
  }

  const breaking = (input: string, against: string) => run(buf, ["breaking", input, "--against", against]);

  it("buf breaking rejects breaking changes and accepts additive ones", async () => {
    const original = await variant("original", "tidemark/v1/envelope.proto", []);
    const rejected: Array<[string, string, Array<[string | RegExp, string]>, RegExp]> = [
      ["renumbered", "tidemark/v1/envelope.proto", [["uint64 sequence_number = 5;", "uint64 sequence_number = 99;"]], /Previously present field "5" with name "sequence_number"/],
      ["renamed", "tidemark/v1/envelope.proto", [["string actor = 7;", "string author = 7;"]], /changed name from "actor" to "author"/],
      ["retyped", "tidemark/v1/errors.proto", [["uint64 actual_seq = 4;", "string actual_seq = 4;"]], /"actual_seq" .* changed type from "uint64" to "string"/],
      ["rpc removed", "tidemark/v1/event_store.proto", [[/\n\s*\/\/ Returns an aggregate's head\.\n\s*rpc GetStreamHead\(GetStreamHeadRequest\) returns \(GetStreamHeadResponse\);/, ""]], /Previously present RPC "GetStreamHead" on service "EventStoreService" was deleted/],
      ["enum value removed", "tidemark/v1/envelope.proto", [[/\n\s*\/\/ A command envelope[^\n]*\n\s*EVENT_KIND_COMMAND = 2;/, ""]], /Previously present enum value "2" on enum "EventKind" was deleted/],
    ];
    for (const [name, file, edits, message] of rejected) {
      const result = await breaking(await variant(name, file, edits), original);
      expect(result.code, `${name} must be rejected`).not.toBe(0);
      expect(result.stdout + result.stderr, name).toMatch(message);
    }

    const additive = await variant("additive", "tidemark/v1/envelope.proto", [
      ["  string content_hash = 13;\n", "  string content_hash = 13;\n  // Added later: older readers ignore it.\n  string tenant = 98;\n"],
      ["  EVENT_KIND_COMMAND = 2;\n", "  EVENT_KIND_COMMAND = 2;\n  EVENT_KIND_SNAPSHOT = 3;\n"],
      [/$/, "\nmessage Snapshot {\n  string aggregate_type = 1;\n}\n"],
    ]);
    const accepted = await breaking(additive, original);
    expect(accepted.code, accepted.stdout + accepted.stderr).toBe(0);
  });

  it("scripts/check-breaking.sh compares with the previous commit, explains when it cannot, and never fetches", async () => {
    const repo = path.join(dir, "repo");
    await cp(path.join(root, "proto"), path.join(repo, "proto"), { recursive: true });
    await cp(path.join(root, "buf.yaml"), path.join(repo, "buf.yaml"));
    await cp(path.join(root, "scripts/check-breaking.sh"), path.join(repo, "scripts/check-breaking.sh"));
    const gitEnv = { GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@example.com", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@example.com", GIT_CONFIG_NOSYSTEM: "1" };
    const git = async (cwd: string, ...args: string[]) => expectSuccess(`git ${args.join(" ")}`, await run("git", args, { cwd, env: gitEnv }));
    const check = (cwd: string, env: Record<string, string> = {}) => run("bash", [path.join(cwd, "scripts/check-breaking.sh")], { cwd, env: { BUF: buf, GIT_CEILING_DIRECTORIES: dir, ...env } });
    const envelope = path.join(repo, "proto/tidemark/v1/envelope.proto");
    const original = await readFile(envelope, "utf8");

    // Not a repository: no comparison is possible; said loudly, and fatal when required.
    let result = await check(repo);
    expect(result.code).toBe(0);
    expect(result.stderr).toMatch(/NOT CHECKED: .* not a git work tree/);
    expect((await check(repo, { TIDEMARK_BREAKING_REQUIRED: "1" })).code).toBe(1);

    // One commit: only uncommitted changes can be checked, and they are.
    await git(repo, "init", "-q");
    await git(repo, "add", "-A");
    await git(repo, "commit", "-qm", "v1");
    result = await check(repo);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/HEAD only: the repository has a single commit/);
    await writeFile(envelope, original.replace("uint64 sequence_number = 5;", "uint64 sequence_number = 99;"));
    result = await check(repo);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/Previously present field "5" with name "sequence_number"/);
    await writeFile(envelope, original);

    // An additive commit passes against the previous commit.
    const additive = original.replace("  string content_hash = 13;\n", "  string content_hash = 13;\n  string tenant = 98;\n");
    await writeFile(envelope, additive);
    await git(repo, "commit", "-qam", "add a field");
    result = await check(repo);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/comparing proto\/ with .*HEAD~1 \(/);

    // A breaking commit is caught against the previous commit, and still after a later commit
    // (earlier distinct contracts are baselines too; depth 1 would only see the previous commit).
    await writeFile(envelope, additive.replace("uint64 sequence_number = 5;", "uint64 sequence_number = 97;"));
    await git(repo, "commit", "-qam", "renumber");
    result = await check(repo);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/breaking changes against HEAD~1/);
    await git(repo, "commit", "-q", "--allow-empty", "-m", "later");
    result = await check(repo);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/breaking changes against HEAD~2/);
    expect((await check(repo, { TIDEMARK_BREAKING_DEPTH: "1" })).code).toBe(0);
    expect((await check(repo, { TIDEMARK_BREAKING_AGAINST: "HEAD~3" })).code).toBe(1);

    // A shallow clone of depth 1 fetches nothing and says what it could not check.
    const shallow = path.join(dir, "shallow");
    await git(dir, "clone", "-q", "--depth", "1", `file://${repo}`, shallow);
    result = await check(shallow);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/HEAD only: a shallow clone without the previous commit \(fetched nothing/);
    result = await check(shallow, { TIDEMARK_BREAKING_AGAINST: "HEAD~1" });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/not a commit in this clone \(nothing is fetched\)/);
  });
});

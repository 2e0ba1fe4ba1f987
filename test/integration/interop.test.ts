/**
 * Interop: the scenario list of test/interop/SCENARIOS.md run by four clients (Go, Python, grpcurl,
 * TypeScript) against one real server; Go and Python decoding real envelope bytes from S3 and
 * Kafka; and the compatibility guard (`buf breaking`, scripts/check-breaking.sh). A missing
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

  /** Runs both decoders on `cases`; each must pass its own lossless checks and agree with protobuf-es. */
  async function decodeEverywhere(cases: Case[]): Promise<Record<"go" | "python", Decoded[]>> {
    const input = JSON.stringify(cases);
    const [go, python] = await Promise.all([
      run(path.join(tools.goBin, "envelope"), [], { input }),
      run(tools.python, [path.join(interop, "python/envelope.py")], { input }),
    ]);
    expectSuccess("the Go envelope decoder", go);
    expectSuccess("the Python envelope decoder", python);
    const out = { go: JSON.parse(go.stdout) as Decoded[], python: JSON.parse(python.stdout) as Decoded[] };
    for (const [language, decoded] of Object.entries(out)) {
      expect(decoded.map((d) => d.name), language).toEqual(cases.map((c) => c.name));
      decoded.forEach((d, i) => {
        const raw = cases[i]!.json;
        const reference = toJson(EventEnvelopeSchema, fromJsonString(EventEnvelopeSchema, raw, { ignoreUnknownFields: true }), { useProtoFieldName: true });
        // The same message, field for field, as protobuf-es decodes the same bytes.
        expect(d.reencoded, `${language} ${d.name}`).toEqual(reference);
        expect(d.unknown, `${language} ${d.name}`).toEqual(unknownParts(raw));
      });
    }
    return out;
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
    const s3 = new S3ObjectStore({
      endpoint: t.config.s3Endpoint,
      bucket: t.config.s3Bucket,
      region: t.config.s3Region,
      accessKeyId: t.config.s3AccessKey,
      secretAccessKey: t.config.s3SecretKey,
    });
    try {
      const cases: Case[] = (await storedEvents(s3)).map((e) => ({ name: `${e.key}#${e.eventId}`, json: e.json }));
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
    } finally {
      s3.close();
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
      ["renumbered", "tidemark/v1/envelope.proto", [["uint64 sequence_number = 5;", "uint64 sequence_number = 14;"]], /Previously present field "5" with name "sequence_number"/],
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
      ["  string content_hash = 13;\n", "  string content_hash = 13;\n  // Added later: older readers ignore it.\n  string tenant = 14;\n"],
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
    await writeFile(envelope, original.replace("uint64 sequence_number = 5;", "uint64 sequence_number = 14;"));
    result = await check(repo);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/Previously present field "5" with name "sequence_number"/);
    await writeFile(envelope, original);

    // An additive commit passes against the previous commit.
    const additive = original.replace("  string content_hash = 13;\n", "  string content_hash = 13;\n  string tenant = 14;\n");
    await writeFile(envelope, additive);
    await git(repo, "commit", "-qam", "add a field");
    result = await check(repo);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/comparing proto\/ with .*HEAD~1 \(/);

    // A breaking commit is caught against the previous commit, and still after a later commit
    // (earlier distinct contracts are baselines too; depth 1 would only see the previous commit).
    await writeFile(envelope, additive.replace("uint64 sequence_number = 5;", "uint64 sequence_number = 15;"));
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

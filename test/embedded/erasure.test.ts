/**
 * Erasure by crypto-shredding in the embedded all-in-one process (docs/CONTRACT.md T5): handlers
 * running beside the server open events naming a subject with the server's keys in process — the
 * plaintext before ForgetSubject, the erasure marker after, even on a retry of an event they saw
 * before — and no file of the data directory (PGlite, segments, dead letters) holds the plaintext.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { JsonObject } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProcess, type TidemarkProcess } from "../../cli/process.js";
import { defineHandler, PoisonError } from "../../consumers/index.js";
import { ERASED_DATA } from "../../core/index.js";
import { EventStoreService } from "../../gen/tidemark/v1/event_store_pb.js";
import { PrivacyService } from "../../gen/tidemark/v1/privacy_pb.js";
import { createClient, type ClientOf } from "../../server/grpc/client.js";
import { waitFor } from "../helpers/wait-for.js";

let dir: string;
let proc: TidemarkProcess;
let events: ClientOf<typeof EventStoreService>;
let privacy: ClientOf<typeof PrivacyService>;
const plain = `ALICE-${randomBytes(6).toString("hex")}`;
const bobPlain = `BOB-${randomBytes(6).toString("hex")}`;
/** Every data the handler was given, per event id, in order. */
const seen = new Map<string, JsonObject[]>();
let released = false;

const audit = defineHandler({
  name: "audit",
  aggregateTypes: ["Customer"],
  async handle(event) {
    seen.set(event.eventId, [...(seen.get(event.eventId) ?? []), event.data]);
    if (event.eventType === "Poisoned") throw new PoisonError("refused");
    // Retried until the test released it: the retry after erasure opens the event again.
    if (event.eventType === "Delayed" && !released) throw new Error("not yet");
  },
});

async function filesUnder(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(root, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) out.push(path.join(entry.parentPath, entry.name));
  }
  return out;
}

async function filesHolding(needle: string): Promise<string[]> {
  const hits: string[] = [];
  for (const file of await filesUnder(dir)) {
    const bytes = await readFile(file).catch(() => Buffer.alloc(0));
    if (bytes.includes(Buffer.from(needle, "utf8"))) hits.push(path.relative(dir, file));
  }
  return hits;
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "tidemark-erasure-"));
  const keyFile = path.join(os.tmpdir(), `tidemark-erasure-${randomBytes(4).toString("hex")}.keys`);
  await writeFile(keyFile, `k1 ${randomBytes(32).toString("hex")}\n`);
  const env = {
    TIDEMARK_DATA_DIR: path.join(dir, "data"),
    TIDEMARK_GRPC_ADDR: "127.0.0.1:0",
    TIDEMARK_MASTER_KEY_FILE: keyFile,
    TIDEMARK_CONSUMER_RETRY_BASE_MS: "50",
    TIDEMARK_CONSUMER_RETRY_MAX_MS: "200",
    TIDEMARK_CONSUMER_MAX_ATTEMPTS: "1000",
    // A lease that never runs out here: a key fetched while the handler's transaction held the one
    // PGlite session waited for the lease to end (30 s by default) before it could run.
    TIDEMARK_CONSUMER_LEASE_SECONDS: "3600",
    TIDEMARK_SHUTDOWN_GRACE_MS: "1000",
    TIDEMARK_LOG_LEVEL: "silent",
  };
  proc = await startProcess(env, { server: true, relay: "if-kafka", projection: true, handlers: [audit] });
  events = createClient(EventStoreService, proc.grpcAddress!);
  privacy = createClient(PrivacyService, proc.grpcAddress!);
  await proc.ready;
}, 240_000);

afterAll(async () => {
  events?.close();
  privacy?.close();
  await proc?.stop();
  await rm(dir, { recursive: true, force: true });
});

const append = (aggregateId: string, eventId: string, eventType: string, data: JsonObject, subject: string) =>
  events.appendEvents({ aggregateType: "Customer", aggregateId, expectation: { case: "any", value: {} }, events: [{ eventId, eventType, data, subject }] });

describe("T5 erasure, embedded", () => {
  it("gives handlers the plaintext before ForgetSubject and the marker after; no file holds the plaintext", async () => {
    await append("acme/c-1", "a-1", "ContactChanged", { email: plain }, "alice");
    await append("acme/c-1", "a-2", "Poisoned", { email: plain }, "alice");
    // Another aggregate than the poisoned one: the dead letter parks the rest of acme/c-1 (C8).
    await append("acme/c-3", "a-3", "Delayed", { email: plain }, "alice");
    await append("acme/c-2", "b-1", "ContactChanged", { note: bobPlain }, "bob");
    await waitFor(() => seen.has("a-1") && seen.has("a-2") && seen.has("a-3") && seen.has("b-1"), { what: "the handler to see every event", timeoutMs: 120_000 });
    // (A handler may run more than once: its in-memory record is outside the registry's transaction.)
    const distinct = (eventId: string) => [...new Set(seen.get(eventId)!.map((d) => JSON.stringify(d)))].map((d) => JSON.parse(d) as JsonObject);
    expect(distinct("a-1")).toEqual([{ email: plain }]);
    expect(distinct("a-3")).toEqual([{ email: plain }]);
    expect(distinct("b-1")).toEqual([{ note: bobPlain }]);
    await waitFor(async () => (await filesUnder(dir)).some((f) => f.includes("dead-letters")), { what: "the dead letter", timeoutMs: 90_000 });

    expect(await privacy.forgetSubject({ database: "acme", subject: "alice" })).toMatchObject({ forgotten: true });
    released = true;
    // The retry after erasure opens the event again: the key is gone, so the handler gets the marker.
    await waitFor(() => seen.get("a-3")!.at(-1)?.["tidemark.erased"] === true, { what: "the retry to see the marker", timeoutMs: 90_000 });
    expect(seen.get("a-3")!.at(-1)).toEqual(ERASED_DATA);
    expect((await append("acme/c-2", "b-2", "ContactChanged", { note: bobPlain }, "bob")).events).toHaveLength(1);
    await waitFor(() => seen.has("b-2"), { what: "bob's next event", timeoutMs: 90_000 });
    expect(distinct("b-2")).toEqual([{ note: bobPlain }]);
    expect(distinct("a-1")).toEqual([{ email: plain }]);

    // The data directory: PGlite's files, the segments and the dead letters.
    expect(await filesHolding("a-1")).not.toEqual([]);
    expect(await filesHolding(plain)).toEqual([]);
    expect(await filesHolding(bobPlain)).toEqual([]);
  }, 400_000);
});

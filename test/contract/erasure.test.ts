/**
 * Erasure by crypto-shredding through the gRPC API, in both storage modes (docs/CONTRACT.md T5,
 * docs/SECURITY.md "Erasure"): an event naming a subject is stored sealed and served opened;
 * ForgetSubject leaves the erasure marker in its place, other subjects and the hash chain intact;
 * and the bad-input rules — unknown or repeated erasures are OK, malformed subjects are
 * INVALID_ARGUMENT naming the field, a subject without a master key is FAILED_PRECONDITION with
 * nothing written.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Kysely } from "kysely";
import { ERASED_DATA, findSubjectKey, MasterKeyring, openEnvelope, type PrivacyTables, rewrapSubjectKeys, decodeEnvelope, Upcasters } from "../../core/index.js";
import { PrivacyService } from "../../gen/tidemark/v1/privacy_pb.js";
import { type ClientOf, createClient, verifyStore } from "../../server/index.js";
import { badFields, collect, expectStatus, grpc } from "../helpers/grpc-errors.js";
import { storedEvents } from "../helpers/stored-events.js";
import { startTestServer, testServerConfig, type TestServer } from "../helpers/test-server.js";

let t: TestServer;
let masterKeys = "";
let bare: TestServer;
let privacy: ClientOf<typeof PrivacyService>;

beforeAll(async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "tidemark-keys-"));
  const keyFile = path.join(dir, "master.keys");
  masterKeys = `# test master key\nk1 ${randomBytes(32).toString("hex")}\n`;
  writeFileSync(keyFile, masterKeys);
  // ProfileChanged v1 `{ phone }` → v2 `{ contact: { phone } }`; anything else is refused, so
  // upcasting sealed bytes or the erasure marker fails the read (E2 with T5).
  const upcasters = new Upcasters([
    {
      eventType: "ProfileChanged",
      fromVersion: 1,
      upcast: (data) => {
        if (typeof data["phone"] !== "string") throw new Error(`no phone in ${JSON.stringify(data)}`);
        return { contact: { phone: data["phone"] } };
      },
    },
  ]);
  // No key cache: every read unwraps the keys as they are stored now, whatever the machine's speed.
  t = await startTestServer(testServerConfig({ TIDEMARK_MASTER_KEY_FILE: keyFile, TIDEMARK_SUBJECT_KEY_CACHE_MS: "0" }), { upcasters });
  privacy = createClient(PrivacyService, t.server.address);
  // The same API with no master key configured.
  bare = await startTestServer();
});
afterAll(async () => {
  privacy?.close();
  await t?.close();
  await bare?.close();
});

const secret = () => `PLAIN-${randomBytes(6).toString("hex")}`;
const append = (server: TestServer, aggregateId: string, eventId: string, data: Record<string, unknown>, subject: string) =>
  server.events.appendEvents({ aggregateType: "Customer", aggregateId, expectation: { case: "any", value: {} }, events: [{ eventId, eventType: "ContactChanged", data: data as never, subject }] });
const read = async (server: TestServer, aggregateId: string) => (await collect(server.events.readStream({ aggregateType: "Customer", aggregateId }))).map((r) => r.event!);

describe("T5 erasure by crypto-shredding", () => {
  it("stores a subject's data sealed and serves it opened; a retry is the same append (W4)", async () => {
    const plain = secret();
    const first = await append(t, "shop/c-1", "t5-a1", { email: plain }, "cust-1");
    const again = await append(t, "shop/c-1", "t5-a1", { email: plain }, "cust-1");
    expect(again).toMatchObject({ replayed: true, events: [{ sequenceNumber: 1n, globalPosition: first.events[0]!.globalPosition }] });
    // Other content under the same id is still a conflict, though the sealed bytes are what is hashed.
    await expectStatus(append(t, "shop/c-1", "t5-a1", { email: "other" }, "cust-1"), grpc.status.ALREADY_EXISTS);

    const stored = (await storedEvents(t.server.objects)).filter((e) => e.json.includes('"t5-a1"'));
    expect(stored).toHaveLength(1);
    expect(stored[0]!.json).not.toContain(plain);
    expect(JSON.parse(stored[0]!.json)).toMatchObject({ subject: "cust-1", data: {}, sealed_data: expect.any(String) });
    expect((await read(t, "shop/c-1"))[0]).toMatchObject({ subject: "cust-1", data: { email: plain } });
  });

  it("after ForgetSubject serves the erasure marker, keeps other subjects and the hash chain", async () => {
    const [mine, theirs] = [secret(), secret()];
    await append(t, "shop/c-2", "t5-b1", { email: mine }, "cust-2");
    await append(t, "shop/c-2", "t5-b2", { plain: "not personal" }, "");
    await append(t, "shop/c-3", "t5-c1", { email: theirs }, "cust-3");
    const out = await privacy.forgetSubject({ database: "shop", subject: "cust-2" });
    expect(out).toMatchObject({ forgotten: true, eventId: expect.any(String) });

    const events = await read(t, "shop/c-2");
    expect(events.map((e) => [e.eventId, e.data])).toEqual([
      ["t5-b1", ERASED_DATA],
      ["t5-b2", { plain: "not personal" }],
    ]);
    expect(events[0]).toMatchObject({ subject: "cust-2", eventType: "ContactChanged", sequenceNumber: 1n, contentHash: expect.stringMatching(/^sha256:/) });
    expect((await read(t, "shop/c-3"))[0]!.data).toEqual({ email: theirs });
    const live: Array<[string, unknown]> = [];
    for await (const m of t.events.subscribe({ start: { case: "afterPosition", value: 0n } })) {
      if (m.message.case === "caughtUp") break;
      if (m.message.case === "event") live.push([m.message.value.eventId, m.message.value.data]);
    }
    expect(live).toEqual(expect.arrayContaining([["t5-b1", ERASED_DATA], ["t5-c1", { email: theirs }]]));
    const erasure = (await collect(t.events.readStream({ aggregateType: "DataSubject", aggregateId: "shop/cust-2" }))).map((r) => r.event!);
    expect(erasure).toMatchObject([{ eventId: out.eventId, eventType: "SubjectForgotten", data: { database: "shop", subject: "cust-2" } }]);

    // Twice is OK and changes nothing: the same erasure event.
    expect(await privacy.forgetSubject({ database: "shop", subject: "cust-2" })).toEqual(out);
    // A forgotten subject's data is not stored again.
    const refused = await expectStatus(append(t, "shop/c-2", "t5-b3", { email: mine }, "cust-2"), grpc.status.FAILED_PRECONDITION);
    expect(refused.details).toContain("forgotten");
    expect((await t.events.getStreamHead({ aggregateType: "Customer", aggregateId: "shop/c-2" })).head).toBe(2n);

    const report = await verifyStore({ db: t.server.database.db, objects: t.server.objects });
    expect(report.anomalies).toEqual([]);
  });

  it("answers OK for a subject no event named, changing nothing", async () => {
    expect(await privacy.forgetSubject({ database: "shop", subject: "never-seen" })).toEqual(expect.objectContaining({ forgotten: false, eventId: "", globalPosition: 0n }));
    await expectStatus(t.events.getStreamHead({ aggregateType: "DataSubject", aggregateId: "shop/never-seen" }), grpc.status.NOT_FOUND);
  });

  it("refuses malformed subjects and databases naming the field (A2)", async () => {
    for (const subject of ["", "alice@example.org", "a/b", "x".repeat(129), "with space"]) {
      const e = await expectStatus(privacy.forgetSubject({ database: "shop", subject }), grpc.status.INVALID_ARGUMENT);
      expect(badFields(e)).toEqual(["subject"]);
    }
    expect(badFields(await expectStatus(privacy.forgetSubject({ database: "", subject: "ok" }), grpc.status.INVALID_ARGUMENT))).toEqual(["database"]);
    expect(badFields(await expectStatus(append(t, "shop/c-9", "t5-bad", { a: 1 }, "alice@example.org"), grpc.status.INVALID_ARGUMENT))).toEqual(["events[0].subject"]);
    // A subject belongs to a database: an aggregate of none cannot name one.
    expect(badFields(await expectStatus(append(t, "nodb", "t5-bad2", { a: 1 }, "cust-9"), grpc.status.INVALID_ARGUMENT))).toEqual(["events[0].subject"]);
    await expectStatus(t.events.getStreamHead({ aggregateType: "Customer", aggregateId: "shop/c-9" }), grpc.status.NOT_FOUND);
    // Only PrivacyService writes the erasure events.
    const forged = t.events.appendEvents({ aggregateType: "DataSubject", aggregateId: "shop/x", expectation: { case: "any", value: {} }, events: [{ eventId: "t5-forged", eventType: "SubjectForgotten" }] });
    expect(badFields(await expectStatus(forged, grpc.status.INVALID_ARGUMENT))).toEqual(["aggregate_type"]);
  });

  it("refuses an event naming a subject when no master key is configured, naming the setting, writing nothing", async () => {
    const e = await expectStatus(append(bare, "shop/c-1", "t5-nokey", { email: secret() }, "cust-1"), grpc.status.FAILED_PRECONDITION);
    expect(e.details).toContain("TIDEMARK_MASTER_KEY_FILE");
    await expectStatus(bare.events.getStreamHead({ aggregateType: "Customer", aggregateId: "shop/c-1" }), grpc.status.NOT_FOUND);
    // Events without a subject are not affected.
    await append(bare, "shop/c-1", "t5-plain", { a: 1 }, "");
  });

  it("rotates the master key: data keys rewrapped under the new key, events untouched, forgotten keys stay gone", async () => {
    const plain = secret();
    await append(t, "shop/c-r", "t5-r1", { email: plain }, "cust-r");
    const db = t.server.database.db as unknown as Kysely<PrivacyTables>;
    const before = (await storedEvents(t.server.objects)).map((e) => e.json);
    const k2 = randomBytes(32).toString("hex");
    const rotated = MasterKeyring.parse(`k2 ${k2}\n${masterKeys}`);
    expect(await rewrapSubjectKeys(db, rotated)).toBeGreaterThanOrEqual(2);
    expect(await rewrapSubjectKeys(db, rotated)).toBe(0);
    const rows = await db.selectFrom("subject_keys").select(["subject", "master_key_id"]).execute();
    expect(new Set(rows.filter((r) => r.subject !== "cust-2").map((r) => r.master_key_id))).toEqual(new Set(["k2"]));
    expect(rows.find((r) => r.subject === "cust-2")!.master_key_id).toBeNull();
    // The old key can go: the new one alone opens the events, which did not change.
    expect((await storedEvents(t.server.objects)).map((e) => e.json)).toEqual(before);
    const found = await findSubjectKey(db, MasterKeyring.parse(`k2 ${k2}`), "shop", "cust-r");
    expect(found?.state).toBe("live");
    const stored = (await storedEvents(t.server.objects)).find((e) => e.json.includes('"t5-r1"'))!;
    expect(openEnvelope(decodeEnvelope(stored.json), found!.state === "live" ? found!.dataKey : null).data).toEqual({ email: plain });
    // Back under the server's own key (k1 first: the active one), or a later read of every event —
    // a Subscribe from the start — would meet keys it cannot unwrap once its cache expired.
    expect(await rewrapSubjectKeys(db, MasterKeyring.parse(`${masterKeys}k2 ${k2}\n`))).toBeGreaterThanOrEqual(2);
  });
});

// After the rotation test, rotated back: every subject's key is under the server's own master key.
describe("T5 with the other read and write paths", () => {
  it("upcasts a sealed event's data after opening it, and never the erasure marker (E2)", async () => {
    const plain = secret();
    await t.events.appendEvents({
      aggregateType: "Customer",
      aggregateId: "shop/c-u",
      expectation: { case: "noStream", value: {} },
      events: [{ eventId: "t5-u1", eventType: "ProfileChanged", schemaVersion: 1, data: { phone: plain } as never, subject: "cust-u" }],
    });
    const readStream = async (latestSchema: boolean) =>
      (await collect(t.events.readStream({ aggregateType: "Customer", aggregateId: "shop/c-u", latestSchema }))).map((r) => [r.event!.schemaVersion, r.event!.data]);
    // One event per message, and in batches (max_batch), which open and upcast each event the same way.
    const subscribe = async (maxBatch = 0) =>
      (await collect(t.events.subscribe({ start: { case: "afterPosition", value: 0n }, aggregateTypes: ["Customer"], stopAtCaughtUp: true, latestSchema: true, maxBatch })))
        .flatMap((m) => (m.message.case === "event" ? [m.message.value] : m.message.case === "events" ? m.message.value.events : []))
        .flatMap((e) => (e.eventId === "t5-u1" ? [[e.schemaVersion, e.data]] : []));
    expect(await readStream(false)).toEqual([[1, { phone: plain }]]);
    expect(await readStream(true)).toEqual([[2, { contact: { phone: plain } }]]);
    expect(await subscribe()).toEqual([[2, { contact: { phone: plain } }]]);
    expect(await subscribe(50)).toEqual([[2, { contact: { phone: plain } }]]);

    await privacy.forgetSubject({ database: "shop", subject: "cust-u" });
    // The marker comes as it is, at the stored version: no upcaster ever sees it.
    expect(await readStream(true)).toEqual([[1, ERASED_DATA]]);
    expect(await subscribe()).toEqual([[1, ERASED_DATA]]);
    expect(await subscribe(50)).toEqual([[1, ERASED_DATA]]);
  });

  it("seals AppendToStreams events naming a subject, replays a retry, and refuses a forgotten subject naming its field, writing nothing (W8)", async () => {
    const plain = secret();
    const request = {
      streams: [
        { aggregateType: "Customer", aggregateId: "shop/m-1", expectation: { case: "noStream" as const, value: {} }, events: [{ eventId: "t5-m1", eventType: "ContactChanged", data: { email: plain } as never, subject: "cust-m" }] },
        { aggregateType: "Customer", aggregateId: "shop/m-2", expectation: { case: "noStream" as const, value: {} }, events: [{ eventId: "t5-m2", eventType: "ContactChanged", data: { n: 1 } as never }] },
      ],
    };
    const first = await t.events.appendToStreams(request);
    const retry = await t.events.appendToStreams(request);
    expect(retry.replayed).toBe(true);
    expect(retry.streams).toEqual(first.streams);
    const [stored] = await storedEvents(t.server.objects, { aggregateType: "Customer", aggregateId: "shop/m-1" });
    expect(stored!.json).not.toContain(plain);
    expect(JSON.parse(stored!.json)).toMatchObject({ subject: "cust-m", data: {}, sealed_data: expect.any(String) });
    expect((await read(t, "shop/m-1"))[0]).toMatchObject({ subject: "cust-m", data: { email: plain } });

    await privacy.forgetSubject({ database: "shop", subject: "cust-m" });
    const refused = await expectStatus(
      t.events.appendToStreams({
        streams: [
          { aggregateType: "Customer", aggregateId: "shop/m-3", expectation: { case: "noStream", value: {} }, events: [{ eventId: "t5-m3", eventType: "ContactChanged", data: { n: 1 } as never }] },
          { aggregateType: "Customer", aggregateId: "shop/m-4", expectation: { case: "noStream", value: {} }, events: [{ eventId: "t5-m4", eventType: "ContactChanged", data: { email: plain } as never, subject: "cust-m" }] },
        ],
      }),
      grpc.status.FAILED_PRECONDITION,
    );
    expect(refused.details).toMatch(/^streams\[1\]\.events\[0\]\.subject: .*forgotten/);
    for (const aggregateId of ["shop/m-3", "shop/m-4"]) await expectStatus(t.events.getStreamHead({ aggregateType: "Customer", aggregateId }), grpc.status.NOT_FOUND);
  });
});

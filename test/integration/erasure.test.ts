/**
 * Erasure by crypto-shredding on the real stack (docs/CONTRACT.md T5, docs/SECURITY.md "Erasure"):
 * server → S3 → relay → Kafka → a consumer that gets subjects' keys from the server over
 * PrivacyService.GetSubjectKey. The raw bytes of the bucket (S3 API), the Kafka topics (events and
 * dead letters, consumed raw) and every row of every table of the schema are searched for a
 * subject's plaintext before and after ForgetSubject, and so are the logs of every part.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { GetObjectCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import type { JsonObject } from "@bufbuild/protobuf";
import { sql } from "kysely";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cachedSubjectKeys, type ConsumerHandle, defineHandler, PoisonError, rebuildInstances, startConsumer } from "../../consumers/index.js";
import { createDatabase, type Database } from "../../core/db/database.js";
import { type ConsumerDatabase, ERASED_DATA } from "../../core/index.js";
import { PrivacyService } from "../../gen/tidemark/v1/privacy_pb.js";
import { loadRelayConfig, type RelayHandle, startRelay } from "../../relay/index.js";
import { type ClientOf, createClient, subjectKeyClient, verifyStore } from "../../server/index.js";
import { consumerTestConfig, consumerTestId } from "../helpers/consumer-env.js";
import { collectTopic, openTestKafka, testKafka } from "../helpers/consumer-kafka.js";
import { collect } from "../helpers/grpc-errors.js";
import { stackEnv, startTestServer, testServerConfig, type TestServer } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";

const id = consumerTestId("erase");
const topic = `${id}.events`;
const deadLetterTopic = `${id}.dead-letter`;
const ALICE = "s-alice";
const BOB = "s-bob";
// Unique per run, so a match can only come from this file's writes.
const alicePlain = `alice-${randomBytes(6).toString("hex")}@example.org`;
const aliceNote = `ALICE-NOTE-${randomBytes(6).toString("hex")}`;
const bobPlain = `BOB-NOTE-${randomBytes(6).toString("hex")}`;

const logLines: string[] = [];
const capture = pino({ level: "debug" }, new Writable({ write: (chunk: Buffer, _enc, done) => (logLines.push(chunk.toString("utf8")), done()) }));

let t: TestServer;
let relay: RelayHandle;
let database: Database<ConsumerDatabase>;
let s3: S3Client;
let privacy: ClientOf<typeof PrivacyService>;
const keyClient = { current: undefined as ReturnType<typeof subjectKeyClient> | undefined };
const consumers: ConsumerHandle[] = [];

/** What each handler saw: handler → event id → data. */
const seen = new Map<string, Map<string, JsonObject>>();

function recordingConsumer(name: string): Promise<ConsumerHandle> {
  const mine = new Map<string, JsonObject>();
  seen.set(name, mine);
  keyClient.current ??= subjectKeyClient(t.server.address);
  const client = keyClient.current;
  return startConsumer(
    consumerTestConfig(id, { TIDEMARK_PG_SCHEMA: id }),
    defineHandler({
      name,
      aggregateTypes: ["Customer"],
      async handle(event) {
        mine.set(event.eventId, event.data);
        // A handler failure dead-letters the message: the dead letter must hold no plaintext either.
        if (event.eventType === "Poisoned") throw new PoisonError("this handler refuses Poisoned events");
      },
    }),
    { log: capture.child({ component: name }), housekeeping: false, subjectKeys: cachedSubjectKeys((db, subject) => client.fetch(db, subject), 0) },
  );
}

async function bucketBytes(): Promise<string> {
  const parts: string[] = [];
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: t.config.s3Bucket, ContinuationToken: token }));
    for (const object of page.Contents ?? []) {
      const body = await s3.send(new GetObjectCommand({ Bucket: t.config.s3Bucket, Key: object.Key! }));
      parts.push(Buffer.from(await body.Body!.transformToByteArray()).toString("latin1"));
    }
    token = page.NextContinuationToken;
  } while (token !== undefined);
  return parts.join("\n");
}

async function topicBytes(name: string, atLeast: number): Promise<string> {
  const collected = await collectTopic(testKafka("erasure-test"), name);
  try {
    await collected.waitFor(atLeast, `${atLeast} messages on ${name}`);
    return collected.messages.map((m) => `${m.key}\n${m.value}\n${JSON.stringify(m.headers)}`).join("\n");
  } finally {
    await collected.close();
  }
}

/** Every row of every table of Tidemark's schema as JSON text (bytea as hex, jsonb as JSON). */
async function databaseText(): Promise<string> {
  const { rows: tables } = await sql<{ table_name: string }>`
    select table_name from information_schema.tables where table_schema = ${id} and table_type = 'BASE TABLE'`.execute(database.db);
  expect(tables.map((r) => r.table_name)).toEqual(expect.arrayContaining(["event_log", "instances", "processed_events", "subject_keys"]));
  const out: string[] = [];
  for (const { table_name } of tables) {
    const { rows } = await sql<{ j: string }>`select row_to_json(t)::text as j from ${sql.id(id, table_name)} t`.execute(database.db);
    out.push(...rows.map((r) => r.j));
  }
  return out.join("\n");
}

/** True when `haystack` holds `needle` as text or hex (a bytea column shows bytes as hex). */
function holds(haystack: string, needle: string): boolean {
  return haystack.includes(needle) || haystack.includes(Buffer.from(needle, "utf8").toString("hex"));
}

async function append(aggregateId: string, subject: string, eventId: string, data: JsonObject, eventType = "ContactChanged") {
  return t.events.appendEvents({ aggregateType: "Customer", aggregateId, expectation: { case: "any", value: {} }, events: [{ eventId, eventType, data, subject }] });
}

beforeAll(async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "tidemark-keys-"));
  const keyFile = path.join(dir, "master.keys");
  writeFileSync(keyFile, `k1 ${randomBytes(32).toString("hex")}\n`);
  t = await startTestServer(testServerConfig({ TIDEMARK_PG_SCHEMA: id, TIDEMARK_MASTER_KEY_FILE: keyFile, TIDEMARK_SUBJECT_KEY_CACHE_MS: "60000" }), { log: capture.child({ component: "server" }) });
  database = createDatabase<ConsumerDatabase>({ url: stackEnv()["TIDEMARK_PG_URL"]!, schema: id, poolSize: 3 });
  privacy = createClient(PrivacyService, t.server.address);
  const env = stackEnv();
  s3 = new S3Client({
    endpoint: env["TIDEMARK_S3_ENDPOINT"]!,
    region: env["TIDEMARK_S3_REGION"] ?? "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: env["TIDEMARK_S3_ACCESS_KEY"]!, secretAccessKey: env["TIDEMARK_S3_SECRET_KEY"]! },
  });
  relay = await startRelay(
    loadRelayConfig({ ...env, TIDEMARK_PG_SCHEMA: id, TIDEMARK_S3_BUCKET: t.config.s3Bucket, TIDEMARK_RELAY_TOPIC: topic, TIDEMARK_DEAD_LETTER_TOPIC: deadLetterTopic, TIDEMARK_RELAY_PARTITIONS: "2" }),
    { log: capture.child({ component: "relay" }) },
  );
}, 60_000);

afterAll(async () => {
  for (const c of consumers) await c.stop();
  keyClient.current?.close();
  privacy?.close();
  await relay?.stop();
  s3?.destroy();
  await database?.close();
  await t?.close();
  await (await openTestKafka(`${id}.`)).close();
});

describe("erasure by crypto-shredding (T5)", () => {
  it("keeps a subject's plaintext out of S3, Kafka, PostgreSQL and the logs, and after ForgetSubject out of every answer, handler and rebuild", async () => {
    // Before: two subjects, an instance (the read model), and a dead-lettered event of Alice.
    const a1 = await append("acme/c-1", ALICE, "e-alice-1", { email: alicePlain, note: aliceNote });
    await append("acme/c-1", ALICE, "e-alice-2", { note: aliceNote }, "Poisoned");
    await append("acme/c-2", BOB, "e-bob-1", { note: bobPlain });
    await t.instances.createInstance({ database: "acme", className: "Plan", instanceId: "p1", properties: { tier: "gold" }, commandId: "c-plan" });
    await waitFor(() => relay.status().topicsReady && relay.status().checkpoint >= Number(a1.events[0]!.globalPosition) + 3, { what: "the relay to publish", timeoutMs: 30_000 });
    consumers.push(await recordingConsumer("audit"));
    await waitFor(() => seen.get("audit")!.size >= 3, { what: "the handler to see the three events", timeoutMs: 30_000 });

    // A handler (holding no master key) sees the plaintext before erasure.
    expect(seen.get("audit")!.get("e-alice-1")).toEqual({ email: alicePlain, note: aliceNote });
    expect(seen.get("audit")!.get("e-bob-1")).toEqual({ note: bobPlain });
    const read = async (aggregateId: string) => (await collect(t.events.readStream({ aggregateType: "Customer", aggregateId }))).map((r) => r.event!);
    expect((await read("acme/c-1"))[0]).toMatchObject({ subject: ALICE, data: { email: alicePlain, note: aliceNote } });

    // Nowhere raw before erasure: S3 and Kafka hold ciphertext; PostgreSQL and the logs never held data.
    const stored = await bucketBytes();
    // The search reads what it should: the events are there, with their sealed data and ids in clear.
    expect(stored).toContain('"event_id":"e-alice-1"');
    expect(stored).toContain('"sealed_data":"');
    expect(holds(stored, alicePlain) || holds(stored, aliceNote) || holds(stored, bobPlain)).toBe(false);
    const events = await topicBytes(topic, 4);
    expect(events).toContain('"event_id":"e-alice-1"');
    expect(holds(events, alicePlain) || holds(events, aliceNote) || holds(events, bobPlain)).toBe(false);
    expect(holds(await topicBytes(deadLetterTopic, 1), aliceNote)).toBe(false);
    const before = await databaseText();
    expect(holds(before, alicePlain) || holds(before, aliceNote) || holds(before, bobPlain)).toBe(false);

    // Forget Alice: the key is destroyed and the erasure recorded as an event.
    const forgotten = await privacy.forgetSubject({ database: "acme", subject: ALICE });
    expect(forgotten).toMatchObject({ forgotten: true });
    expect(forgotten.globalPosition).toBeGreaterThan(0n);
    const erasure = (await collect(t.events.readStream({ aggregateType: "DataSubject", aggregateId: `acme/${ALICE}` }))).map((r) => r.event!);
    expect(erasure).toMatchObject([{ eventType: "SubjectForgotten", data: { database: "acme", subject: ALICE } }]);

    // ReadStream and Subscribe: the marker instead of Alice's data, everything else intact; Bob untouched.
    const after = await read("acme/c-1");
    expect(after.map((e) => e.data)).toEqual([ERASED_DATA, ERASED_DATA]);
    expect(after[0]).toMatchObject({ eventId: "e-alice-1", eventType: "ContactChanged", subject: ALICE, sequenceNumber: 1n, globalPosition: a1.events[0]!.globalPosition });
    expect((await read("acme/c-2"))[0]!.data).toEqual({ note: bobPlain });
    const subscribed: Array<{ eventId: string; data: unknown }> = [];
    for await (const m of t.events.subscribe({ start: { case: "afterPosition", value: 0n } })) {
      if (m.message.case === "caughtUp") break;
      if (m.message.case === "event") subscribed.push({ eventId: m.message.value.eventId, data: m.message.value.data });
    }
    expect(subscribed.find((e) => e.eventId === "e-alice-1")!.data).toEqual(ERASED_DATA);
    expect(subscribed.find((e) => e.eventId === "e-bob-1")!.data).toEqual({ note: bobPlain });

    // A handler replaying the topic after erasure sees the marker for Alice, the data for Bob.
    consumers.push(await recordingConsumer("audit-after"));
    await waitFor(() => seen.get("audit-after")!.size >= 3, { what: "the second handler to replay", timeoutMs: 30_000 });
    expect(seen.get("audit-after")!.get("e-alice-1")).toEqual(ERASED_DATA);
    expect(seen.get("audit-after")!.get("e-bob-1")).toEqual({ note: bobPlain });

    // The hash chain and content hashes still verify: they cover the sealed bytes, which stay.
    const report = await verifyStore({ db: t.server.database.db, objects: t.server.objects });
    expect(report.anomalies).toEqual([]);
    expect(report.clean).toBe(true);

    // A rebuild after erasure, then nothing of Alice anywhere; Bob's ciphertext still opens.
    await rebuildInstances({ db: database.db, objects: t.server.objects });
    const afterDb = await databaseText();
    expect(holds(afterDb, alicePlain) || holds(afterDb, aliceNote)).toBe(false);
    expect(afterDb).toContain("gold"); // the rebuilt read model
    const keys = await sql<{ subject: string; wrapped: boolean; forgotten: boolean }>`
      select subject, wrapped_key is not null as wrapped, forgotten_at is not null as forgotten from ${sql.id(id, "subject_keys")} order by subject`.execute(database.db);
    expect(keys.rows).toEqual([
      { subject: ALICE, wrapped: false, forgotten: true },
      { subject: BOB, wrapped: true, forgotten: false },
    ]);
    const bucket = await bucketBytes();
    const published = await topicBytes(topic, 5);
    expect(holds(bucket, alicePlain) || holds(bucket, aliceNote) || holds(published, alicePlain) || holds(published, aliceNote)).toBe(false);
    expect(published).toContain("SubjectForgotten");
    // No part ever logged event data, at debug level.
    expect(logLines.length).toBeGreaterThan(0);
    const logs = logLines.join("");
    expect(holds(logs, alicePlain) || holds(logs, aliceNote) || holds(logs, bobPlain)).toBe(false);
  }, 180_000);
});

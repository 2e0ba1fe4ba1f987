/**
 * InspectionService, the read-only views the web console is built on: databases, aggregate types and
 * streams as stream_heads holds them; one event with where it is in S3 (the bytes there are the
 * event); the relay's checkpoints and the handlers. Bad input is INVALID_ARGUMENT naming the field
 * (A2); with tokens every listing holds only the token's databases and another tenant's event is
 * unknown (T3); an event naming a data subject is served opened, or with the erasure marker once its
 * subject is forgotten, exactly as ReadStream serves it (T5).
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Kysely } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AuthTables } from "../../core/db/schema.js";
import { ERASED_DATA } from "../../core/index.js";
import { createToken } from "../../core/tokens.js";
import { EventEnvelopeSchema } from "../../gen/tidemark/v1/envelope_pb.js";
import { InspectionService } from "../../gen/tidemark/v1/inspection_pb.js";
import { PrivacyService } from "../../gen/tidemark/v1/privacy_pb.js";
import { fromJsonString } from "@bufbuild/protobuf";
import { createClient, type ClientOf } from "../../server/grpc/client.js";
import { badFields, collect, expectStatus, grpc } from "../helpers/grpc-errors.js";
import { startTestServer, testServerConfig, type TestServer } from "../helpers/test-server.js";

type Inspection = ClientOf<typeof InspectionService>;

async function append(t: TestServer, aggregateType: string, aggregateId: string, eventId: string, metadata: Record<string, string> = {}): Promise<void> {
  await t.events.appendEvents({ aggregateType, aggregateId, expectation: { case: "any", value: {} }, events: [{ eventId, eventType: `${aggregateType}Happened`, data: { n: eventId } }] }, { metadata });
}

describe("without authentication", () => {
  let t: TestServer;
  let inspection: Inspection;

  beforeAll(async () => {
    t = await startTestServer();
    inspection = createClient(InspectionService, t.server.address) as Inspection;
    for (const n of [1, 2, 3, 4, 5]) await append(t, "Order", `acme/order-${n}`, `acme-order-${n}`);
    await append(t, "Order", "acme/order-1", "acme-order-1-b");
    await append(t, "Invoice", "acme/inv-1", "acme-inv-1");
    await append(t, "Order", "globex/order-1", "globex-order-1");
    await append(t, "Loose", "no-database", "loose-1");
  });

  afterAll(async () => {
    inspection?.close();
    await t?.close();
  });

  it("lists the databases with their stream counts, the aggregates of no database as \"\"", async () => {
    const { databases } = await inspection.listDatabases({});
    expect(databases.map((d) => [d.database, Number(d.streams)])).toEqual([
      ["", 1],
      ["acme", 6],
      ["globex", 1],
    ]);
  });

  it("lists a database's aggregate types", async () => {
    const { aggregateTypes } = await inspection.listAggregateTypes({ database: "acme" });
    expect(aggregateTypes.map((a) => [a.aggregateType, Number(a.streams)])).toEqual([
      ["Invoice", 1],
      ["Order", 5],
    ]);
    expect((await inspection.listAggregateTypes({ database: "" })).aggregateTypes.map((a) => a.aggregateType)).toEqual(["Loose"]);
  });

  it("lists streams by prefix, a page at a time, with their heads", async () => {
    const first = await inspection.listStreams({ database: "acme", aggregateType: "Order", pageSize: 2 });
    expect(first.streams.map((s) => s.aggregateId)).toEqual(["acme/order-1", "acme/order-2"]);
    expect(Number(first.streams[0]!.head)).toBe(2);
    const seen = first.streams.map((s) => s.aggregateId);
    let token = first.nextPageToken;
    while (token !== "") {
      const page = await inspection.listStreams({ database: "acme", aggregateType: "Order", pageSize: 2, pageToken: token });
      seen.push(...page.streams.map((s) => s.aggregateId));
      token = page.nextPageToken;
    }
    expect(seen).toEqual(["acme/order-1", "acme/order-2", "acme/order-3", "acme/order-4", "acme/order-5"]);
    // The prefix is after the database's "acme/"; a prefix that already names it means the same.
    expect((await inspection.listStreams({ database: "acme", aggregateType: "Order", idPrefix: "order-3" })).streams.map((s) => s.aggregateId)).toEqual(["acme/order-3"]);
    expect((await inspection.listStreams({ database: "acme", aggregateType: "Order", idPrefix: "acme/order-3" })).streams.map((s) => s.aggregateId)).toEqual(["acme/order-3"]);
    expect((await inspection.listStreams({ database: "globex", aggregateType: "Invoice" })).streams).toEqual([]);
  });

  it("refuses bad listings with INVALID_ARGUMENT naming the field (A2)", async () => {
    const slash = await expectStatus(inspection.listAggregateTypes({ database: "acme/x" }), grpc.status.INVALID_ARGUMENT);
    expect(badFields(slash)).toEqual(["database"]);
    const bad = await expectStatus(inspection.listStreams({ database: "acme", aggregateType: "", pageSize: 5000, pageToken: "not a token" }), grpc.status.INVALID_ARGUMENT);
    expect(badFields(bad).sort()).toEqual(["aggregate_type", "page_size", "page_token"]);
    // A token of another listing (globex's) is not one of this one's.
    const other = Buffer.from("globex/order-1", "utf8").toString("base64url");
    expect(badFields(await expectStatus(inspection.listStreams({ database: "acme", aggregateType: "Order", pageToken: other }), grpc.status.INVALID_ARGUMENT))).toEqual(["page_token"]);
  });

  it("gets an event with where it is stored: those bytes of that segment are the event", async () => {
    const out = await inspection.getEvent({ eventId: "acme-order-1-b" });
    expect(out.event?.aggregateId).toBe("acme/order-1");
    expect(Number(out.event?.sequenceNumber)).toBe(2);
    expect(out.event?.globalPosition).toBeGreaterThan(0n);
    const location = out.location!;
    expect(location.bucket).toBe(t.config.s3Bucket);
    expect(location.key).toMatch(/^segments\/\d{20}\.jsonl$/);
    expect(location.key).toBe(`segments/${String(location.segment).padStart(20, "0")}.jsonl`);
    const bytes = await t.server.objects.read(location.key, { start: Number(location.offset), length: Number(location.length) });
    const stored = fromJsonString(EventEnvelopeSchema, bytes!.toString("utf8"), { ignoreUnknownFields: true });
    expect(stored.eventId).toBe("acme-order-1-b");
    expect(stored.contentHash).toBe(out.event?.contentHash);
    expect(out.chainHash).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(out.committedAt).toBeDefined();
  });

  it("answers NOT_FOUND for an unknown event and INVALID_ARGUMENT for a bad id", async () => {
    await expectStatus(inspection.getEvent({ eventId: "no-such-event" }), grpc.status.NOT_FOUND);
    expect(badFields(await expectStatus(inspection.getEvent({ eventId: "" }), grpc.status.INVALID_ARGUMENT))).toEqual(["event_id"]);
  });

  it("reports the committed head beside the relay's checkpoints, and the handlers", async () => {
    const relay = await inspection.getRelayStatus({});
    expect(Number(relay.headPosition)).toBe(9);
    for (const c of relay.checkpoints) expect(c.lagPositions).toBe(relay.headPosition - c.position);
    const handlers = await inspection.listHandlers({});
    expect(Number(handlers.headPosition)).toBe(9);
  });
});

describe("with tokens (T3)", () => {
  let t: TestServer;
  const tokens: Record<string, string> = {};
  let inspection: Inspection;
  const as = (name: string) => ({ metadata: { authorization: `Bearer ${tokens[name]}` } });

  beforeAll(async () => {
    t = await startTestServer(testServerConfig({ TIDEMARK_AUTH: "tokens" }));
    inspection = createClient(InspectionService, t.server.address) as Inspection;
    const db = t.server.database.db as unknown as Kysely<AuthTables>;
    tokens["admin"] = (await createToken(db, { principal: "ops", databases: ["*"], scopes: ["read", "write", "admin"] }))!.token;
    tokens["acme"] = (await createToken(db, { principal: "acme-reader", databases: ["acme"], scopes: ["read"] }))!.token;
    tokens["acmeOrders"] = (await createToken(db, { principal: "acme-orders", databases: ["acme"], scopes: ["read"], aggregateTypePrefix: "Ord" }))!.token;
    tokens["writer"] = (await createToken(db, { principal: "acme-writer", databases: ["acme"], scopes: ["write"] }))!.token;
    const admin = as("admin").metadata;
    await append(t, "Order", "acme/order-1", "t-acme-order-1", admin);
    await append(t, "Invoice", "acme/inv-1", "t-acme-inv-1", admin);
    await append(t, "Order", "globex/order-1", "t-globex-order-1", admin);
    await append(t, "Loose", "no-database", "t-loose-1", admin);
  });

  afterAll(async () => {
    inspection?.close();
    await t?.close();
  });

  it("needs a token at all", async () => {
    await expectStatus(inspection.listDatabases({}), grpc.status.UNAUTHENTICATED);
    await expectStatus(inspection.getEvent({ eventId: "t-acme-order-1" }), grpc.status.UNAUTHENTICATED);
  });

  it("lists only the token's databases and aggregate types", async () => {
    expect((await inspection.listDatabases({}, as("admin"))).databases.map((d) => d.database)).toEqual(["", "acme", "globex"]);
    expect((await inspection.listDatabases({}, as("acme"))).databases.map((d) => d.database)).toEqual(["acme"]);
    expect((await inspection.listAggregateTypes({ database: "acme" }, as("acmeOrders"))).aggregateTypes.map((a) => a.aggregateType)).toEqual(["Order"]);
    const denied = await expectStatus(inspection.listAggregateTypes({ database: "globex" }, as("acme")), grpc.status.PERMISSION_DENIED);
    expect(denied.details).not.toContain("order-1");
    await expectStatus(inspection.listAggregateTypes({ database: "" }, as("acme")), grpc.status.PERMISSION_DENIED);
    await expectStatus(inspection.listStreams({ database: "acme", aggregateType: "Invoice" }, as("acmeOrders")), grpc.status.PERMISSION_DENIED);
    await expectStatus(inspection.listDatabases({}, as("writer")), grpc.status.PERMISSION_DENIED);
  });

  it("finds another tenant's event unknown, exactly as an id that does not exist", async () => {
    expect((await inspection.getEvent({ eventId: "t-acme-order-1" }, as("acme"))).event?.eventId).toBe("t-acme-order-1");
    const other = await expectStatus(inspection.getEvent({ eventId: "t-globex-order-1" }, as("acme")), grpc.status.NOT_FOUND);
    const none = await expectStatus(inspection.getEvent({ eventId: "t-nothing-here" }, as("acme")), grpc.status.NOT_FOUND);
    expect(other.details.replace("t-globex-order-1", "ID")).toBe(none.details.replace("t-nothing-here", "ID"));
    await expectStatus(inspection.getEvent({ eventId: "t-acme-inv-1" }, as("acmeOrders")), grpc.status.NOT_FOUND);
  });

  it("keeps the store-wide relay figures for admin tokens, and the head from a tenant's handler listing", async () => {
    await expectStatus(inspection.getRelayStatus({}, as("acme")), grpc.status.PERMISSION_DENIED);
    expect(Number((await inspection.getRelayStatus({}, as("admin"))).headPosition)).toBe(4);
    expect(Number((await inspection.listHandlers({}, as("acme"))).headPosition)).toBe(0);
    expect(Number((await inspection.listHandlers({}, as("admin"))).headPosition)).toBe(4);
  });
});

describe("an event naming a data subject (T5)", () => {
  let t: TestServer;
  let inspection: Inspection;

  beforeAll(async () => {
    const keyFile = path.join(mkdtempSync(path.join(os.tmpdir(), "tidemark-keys-")), "master.keys");
    writeFileSync(keyFile, `k1 ${randomBytes(32).toString("hex")}\n`);
    t = await startTestServer(testServerConfig({ TIDEMARK_MASTER_KEY_FILE: keyFile }));
    inspection = createClient(InspectionService, t.server.address) as Inspection;
  });

  afterAll(async () => {
    inspection?.close();
    await t?.close();
  });

  it("is served as ReadStream serves it: its data opened, then the erasure marker once forgotten", async () => {
    const plain = `PLAIN-${randomBytes(6).toString("hex")}`;
    await t.events.appendEvents({ aggregateType: "Customer", aggregateId: "shop/c-1", expectation: { case: "any", value: {} }, events: [{ eventId: "sealed-1", eventType: "ContactChanged", data: { email: plain }, subject: "cust-1" }] });
    const read = async () => (await collect(t.events.readStream({ aggregateType: "Customer", aggregateId: "shop/c-1" })))[0]!.event!;

    const opened = (await inspection.getEvent({ eventId: "sealed-1" })).event!;
    expect(opened).toMatchObject({ subject: "cust-1", data: { email: plain } });
    expect(opened).toEqual(await read());

    const privacy = createClient(PrivacyService, t.server.address);
    try {
      await privacy.forgetSubject({ database: "shop", subject: "cust-1" });
    } finally {
      privacy.close();
    }
    const erased = (await inspection.getEvent({ eventId: "sealed-1" })).event!;
    expect(erased.data).toEqual(ERASED_DATA);
    expect(erased).toEqual(await read());
  });
});

/**
 * Security and tenancy (docs/CONTRACT.md T1 on the gRPC port, T2, T3, T4; docs/SECURITY.md) against the real services: TLS
 * with certificates openssl makes here, mTLS, certificate reload, bearer tokens (scopes, databases,
 * aggregate-type prefix, expiry, revocation, tampering), tenancy on every read path, the actor, and
 * the token CLI. Every refusal asserts its status and that nothing was written or sent.
 */
import { execFile } from "node:child_process";
import { copyFileSync } from "node:fs";
import { connect as tlsConnect } from "node:tls";
import { promisify } from "node:util";
import { type Kysely, sql } from "kysely";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDatabase, type Database } from "../../core/db/database.js";
import type { AuthTables, WriteSideTables } from "../../core/db/schema.js";
import { lastPosition } from "../../core/event-log.js";
import { createBootstrapToken, createToken, revokeToken, type Scope } from "../../core/tokens.js";
import { Health, HealthCheckResponse_ServingStatus as Serving } from "../../gen/grpc/health/v1/health_pb.js";
import { EventStoreService } from "../../gen/tidemark/v1/event_store_pb.js";
import { InstanceService } from "../../gen/tidemark/v1/instance_pb.js";
import { PrivacyService } from "../../gen/tidemark/v1/privacy_pb.js";
import { ProcessingService, ProcessingState } from "../../gen/tidemark/v1/processing_pb.js";
import { startServer, type ServerHandle } from "../../server/app.js";
import { createClient, type ClientOf, type ClientOptions } from "../../server/grpc/client.js";
import { runCli } from "../../cli/main.js";
import { expectStatus, grpc } from "../helpers/grpc-errors.js";
import { background, cleanEnv, freePort, TIDEMARK_BIN } from "../helpers/cli-process.js";
import { stackEnv, stackSecureEnv, startTestServer, testServerConfig, type TestServer } from "../helpers/test-server.js";
import { makeTestCerts, type TestCerts } from "../helpers/tls-certs.js";
import { findTool } from "../helpers/tools.js";

const run = promisify(execFile);

interface Clients {
  readonly events: ClientOf<typeof EventStoreService>;
  readonly instances: ClientOf<typeof InstanceService>;
  readonly processing: ClientOf<typeof ProcessingService>;
  close(): void;
}

let certs: TestCerts;
let t: TestServer;
let database: Database<WriteSideTables>;
const authDb = () => database.db as unknown as Kysely<AuthTables>;
const logLines: string[] = [];
const tokens: Record<string, string> = {};
const opened: Clients[] = [];
let seedEventA = "";
let seedEventB = "";
let nothingDatabaseEvent = "";

function clients(token: string | undefined, tls: ClientOptions["tls"] = { ca: certs.read(certs.serverCa) }, address = t.server.address): Clients {
  const options: ClientOptions = { tls, ...(token === undefined ? {} : { token }) };
  const events = createClient(EventStoreService, address, options);
  const instances = createClient(InstanceService, address, options);
  const processing = createClient(ProcessingService, address, options);
  const c = { events, instances, processing, close: () => [events, instances, processing].forEach((x) => x.close()) };
  opened.push(c);
  return c;
}

async function mint(name: string, databases: string[], scopes: Scope[], extra: { aggregateTypePrefix?: string; expiresAt?: Date } = {}): Promise<string> {
  const made = await createToken(authDb(), { principal: name, databases, scopes, ...extra });
  tokens[name] = made!.token;
  return made!.token;
}

/** Messages a stream delivered before it ended or failed, and how it failed. */
async function drain<T>(stream: AsyncIterable<T>, max = Infinity, signal?: AbortController): Promise<{ messages: T[]; error: grpc.ServiceError | undefined }> {
  const messages: T[] = [];
  try {
    for await (const m of stream) {
      messages.push(m);
      if (messages.length >= max) {
        signal?.abort();
        break;
      }
    }
    return { messages, error: undefined };
  } catch (e) {
    return { messages, error: e as grpc.ServiceError };
  }
}

const position = () => lastPosition(database.db);

beforeAll(async () => {
  certs = makeTestCerts();
  const config = testServerConfig({
    TIDEMARK_AUTH: "tokens",
    TIDEMARK_TLS_CERT: certs.serverCert,
    TIDEMARK_TLS_KEY: certs.serverKey,
    TIDEMARK_AUTH_RECHECK_MS: "100",
  });
  const log = pino({ level: "info" }, { write: (line: string) => void logLines.push(line) });
  t = await startTestServer(config, { log });
  database = createDatabase<WriteSideTables>({ url: config.pgUrl, schema: config.pgSchema, poolSize: 2 });
  tokens["admin"] = (await createBootstrapToken(authDb()))!.token;
  await mint("alice", ["alpha"], ["read", "write", "subscribe"]);
  await mint("bob", ["beta"], ["read", "write", "subscribe"]);
  for (const scope of ["read", "write", "subscribe", "admin"] as const) await mint(`only-${scope}`, ["alpha"], [scope]);
  await mint("orders", ["alpha"], ["read", "write", "subscribe"], { aggregateTypePrefix: "Ord" });

  // Seed both tenants (and one aggregate of no database) through the API, as their owners.
  const alice = clients(tokens["alice"]);
  const bob = clients(tokens["bob"]);
  const admin = clients(tokens["admin"]);
  const a = await alice.events.appendEvents({ aggregateType: "Order", aggregateId: "alpha/seed-1", expectation: { case: "noStream", value: {} }, events: [{ eventId: "seed-a", eventType: "OrderPlaced", data: { secret: "alpha-data" } }] });
  seedEventA = a.events[0]!.eventId;
  await alice.events.appendEvents({ aggregateType: "Invoice", aggregateId: "alpha/inv-1", expectation: { case: "noStream", value: {} }, events: [{ eventId: "seed-a-inv", eventType: "InvoiceSent" }] });
  await alice.instances.createInstance({ database: "alpha", className: "Person", instanceId: "seed", properties: { name: "Ada" }, commandId: "cmd-alpha" });
  for (let i = 0; i < 5; i++) await alice.instances.createInstance({ database: "alpha", className: "Page", instanceId: `p${i}`, properties: {}, commandId: `cmd-alpha-page-${i}` });
  const b = await bob.events.appendEvents({ aggregateType: "Order", aggregateId: "beta/seed-1", expectation: { case: "noStream", value: {} }, events: [{ eventId: "seed-b", eventType: "OrderPlaced", data: { secret: "beta-data" } }] });
  seedEventB = b.events[0]!.eventId;
  await bob.instances.createInstance({ database: "beta", className: "Person", instanceId: "seed", properties: { name: "Bo" }, commandId: "cmd-beta" });
  const n = await admin.events.appendEvents({ aggregateType: "Order", aggregateId: "o-1", expectation: { case: "noStream", value: {} }, events: [{ eventId: "seed-none", eventType: "OrderPlaced" }] });
  nothingDatabaseEvent = n.events[0]!.eventId;
  // A handler's registry rows for one event of each tenant, so status by command_id has rows to leak.
  for (const [eventId, aggregateId, commandId] of [
    [seedEventA, "alpha/seed-1", "cmd-alpha"],
    [seedEventB, "beta/seed-1", "cmd-beta"],
  ] as const) {
    await sql`insert into processed_events (handler, event_id, aggregate_type, aggregate_id, seq, global_position, event_type, command_id, state, fence, owner)
      values ('audit', ${eventId}, 'Order', ${aggregateId}, 1, 1, 'OrderPlaced', ${commandId}, 'done', nextval('processed_event_fence'), 'test')`.execute(database.db);
  }
});

afterAll(async () => {
  for (const c of opened) c.close();
  await database?.close();
  await t?.close();
  certs?.remove();
});

/** One call of every RPC that a token for `alpha` with the right scope may make. */
interface Rpc {
  readonly name: string;
  readonly scope: Scope;
  readonly writes: boolean;
  /** Runs the call (unique ids from `n`); `owner` prepares what it needs. */
  call(c: Clients, n: string, owner: Clients): Promise<unknown>;
  /** The same call for database `beta`'s data (wrong tenant for alpha tokens). */
  callOther(c: Clients, n: string): Promise<unknown>;
}

const stream = async (s: AsyncIterable<unknown>) => {
  const { messages, error } = await drain(s);
  if (error !== undefined) {
    Object.assign(error, { sent: messages.length });
    throw error;
  }
  return messages;
};

const subscribeOnce = async (c: Clients, databases: string[] = []) => {
  const stop = new AbortController();
  const { messages, error } = await drain(c.events.subscribe({ start: { case: "afterPosition", value: 0n }, databases }, { signal: stop.signal }), 1, stop);
  if (error !== undefined) {
    Object.assign(error, { sent: messages.length });
    throw error;
  }
  return messages;
};

const RPCS: Rpc[] = [
  {
    name: "AppendEvents",
    scope: "write",
    writes: true,
    call: (c, n) => c.events.appendEvents({ aggregateType: "Order", aggregateId: `alpha/o-${n}`, expectation: { case: "noStream", value: {} }, events: [{ eventId: `e-${n}`, eventType: "OrderPlaced" }] }),
    callOther: (c, n) => c.events.appendEvents({ aggregateType: "Order", aggregateId: `beta/o-${n}`, expectation: { case: "noStream", value: {} }, events: [{ eventId: `e-${n}`, eventType: "OrderPlaced" }] }),
  },
  {
    name: "ReadStream",
    scope: "read",
    writes: false,
    call: (c) => stream(c.events.readStream({ aggregateType: "Order", aggregateId: "alpha/seed-1" })),
    callOther: (c) => stream(c.events.readStream({ aggregateType: "Order", aggregateId: "beta/seed-1" })),
  },
  {
    name: "GetStreamHead",
    scope: "read",
    writes: false,
    call: (c) => c.events.getStreamHead({ aggregateType: "Order", aggregateId: "alpha/seed-1" }),
    callOther: (c) => c.events.getStreamHead({ aggregateType: "Order", aggregateId: "beta/seed-1" }),
  },
  { name: "Subscribe", scope: "subscribe", writes: false, call: (c) => subscribeOnce(c, ["alpha"]), callOther: (c) => subscribeOnce(c, ["beta"]) },
  {
    name: "CreateInstance",
    scope: "write",
    writes: true,
    call: (c, n) => c.instances.createInstance({ database: "alpha", className: "Person", instanceId: `i-${n}`, properties: {}, commandId: `c-${n}` }),
    callOther: (c, n) => c.instances.createInstance({ database: "beta", className: "Person", instanceId: `i-${n}`, properties: {}, commandId: `c-${n}` }),
  },
  {
    name: "UpdateInstance",
    scope: "write",
    writes: true,
    call: async (c, n, owner) => {
      await owner.instances.createInstance({ database: "alpha", className: "Person", instanceId: `u-${n}`, properties: {}, commandId: `cu-${n}` });
      const before = await position();
      Object.assign(c, { before });
      return c.instances.updateInstance({ database: "alpha", className: "Person", instanceId: `u-${n}`, properties: { x: 1 }, expectedSeq: 1n, commandId: `cu2-${n}` });
    },
    callOther: async (c, n) => {
      await c.instances.createInstance({ database: "beta", className: "Person", instanceId: `u-${n}`, properties: {}, commandId: `cu-${n}` });
      return c.instances.updateInstance({ database: "beta", className: "Person", instanceId: `u-${n}`, properties: { x: 1 }, expectedSeq: 1n, commandId: `cu2-${n}` });
    },
  },
  {
    name: "DeleteInstance",
    scope: "write",
    writes: true,
    call: async (c, n, owner) => {
      await owner.instances.createInstance({ database: "alpha", className: "Person", instanceId: `d-${n}`, properties: {}, commandId: `cd-${n}` });
      Object.assign(c, { before: await position() });
      return c.instances.deleteInstance({ database: "alpha", className: "Person", instanceId: `d-${n}`, expectedSeq: 1n, commandId: `cd2-${n}` });
    },
    callOther: async (c, n) => {
      await c.instances.createInstance({ database: "beta", className: "Person", instanceId: `d-${n}`, properties: {}, commandId: `cd-${n}` });
      return c.instances.deleteInstance({ database: "beta", className: "Person", instanceId: `d-${n}`, expectedSeq: 1n, commandId: `cd2-${n}` });
    },
  },
  {
    name: "GetInstance",
    scope: "read",
    writes: false,
    call: (c) => c.instances.getInstance({ database: "alpha", className: "Person", instanceId: "seed" }),
    callOther: (c) => c.instances.getInstance({ database: "beta", className: "Person", instanceId: "seed" }),
  },
  {
    name: "ListInstances",
    scope: "read",
    writes: false,
    call: (c) => c.instances.listInstances({ database: "alpha", className: "Person" }),
    callOther: (c) => c.instances.listInstances({ database: "beta", className: "Person" }),
  },
  {
    name: "GetProcessingStatus",
    scope: "read",
    writes: false,
    call: (c) => c.processing.getProcessingStatus({ key: { case: "eventId", value: seedEventA } }),
    callOther: (c) => c.processing.getProcessingStatus({ key: { case: "eventId", value: seedEventB } }),
  },  {
    name: "AppendToStreams",
    scope: "write",
    writes: true,
    call: (c, n) =>
      c.events.appendToStreams({
        streams: [{ aggregateType: "Order", aggregateId: `alpha/m-${n}`, expectation: { case: "noStream", value: {} }, events: [{ eventId: `m-${n}`, eventType: "OrderPlaced" }] }],
      }),
    callOther: (c, n) =>
      c.events.appendToStreams({
        streams: [{ aggregateType: "Order", aggregateId: `beta/m-${n}`, expectation: { case: "noStream", value: {} }, events: [{ eventId: `m-${n}`, eventType: "OrderPlaced" }] }],
      }),
  },
];

let serial = 0;
const next = () => `${++serial}-${Date.now().toString(36)}`;

/** Runs `call` expecting `code`; asserts that nothing was committed and no stream message was sent. */
async function refused(call: (c: Clients) => Promise<unknown>, c: Clients, code: grpc.status): Promise<grpc.ServiceError> {
  const before = await position();
  const error = await expectStatus(call(c), code);
  const after = await position();
  // An update/delete prepares its instance first (as the owner): count from after that.
  expect(after).toBe((c as { before?: number }).before ?? before);
  expect((error as { sent?: number }).sent ?? 0).toBe(0);
  return error;
}

describe("each scope × each RPC (a token for alpha with one scope)", () => {
  const cases = RPCS.flatMap((rpc) => (["read", "write", "subscribe", "admin"] as const).map((scope) => ({ rpc, scope })));
  it.each(cases.map((c) => [`${c.rpc.name} with only ${c.scope}`, c] as const))("%s", async (_name, { rpc, scope }) => {
    const c = clients(tokens[`only-${scope}`]);
    const owner = clients(tokens["alice"]);
    if (scope === rpc.scope) {
      const before = await position();
      await rpc.call(c, next(), owner);
      if (rpc.writes) expect(await position()).toBeGreaterThan(before);
    } else {
      const error = await refused((x) => rpc.call(x, next(), owner), c, grpc.status.PERMISSION_DENIED);
      expect(error.details).toContain(`scope "${rpc.scope}"`);
    }
  });
});

describe("wrong tenant: a token for beta on alpha's data, on every RPC", () => {
  it.each(RPCS.map((rpc) => [rpc.name, rpc] as const))("%s", async (name, rpc) => {
    const bob = clients(tokens["bob"]);
    if (name === "GetProcessingStatus") {
      // No database in the request: alpha's event is, to bob, an event that does not exist.
      const error = await refused((x) => rpc.call(x, next(), x), bob, grpc.status.NOT_FOUND);
      const unknown = await expectStatus(bob.processing.getProcessingStatus({ key: { case: "eventId", value: "no-such-event" } }), grpc.status.NOT_FOUND);
      expect(error.details.replace(seedEventA, "ID")).toBe(unknown.details.replace("no-such-event", "ID"));
      return;
    }
    const owner = clients(tokens["alice"]);
    const error = await refused((x) => rpc.call(x, next(), owner), bob, grpc.status.PERMISSION_DENIED);
    expect(error.details).toContain(`database "alpha"`);
    expect(error.details).not.toContain("seed");
    // And its own tenant works.
    await rpc.callOther(bob, next());
  });
});

describe("no token: UNAUTHENTICATED on every RPC, nothing written or sent", () => {
  it.each(RPCS.map((rpc) => [rpc.name, rpc] as const))("%s", async (_name, rpc) => {
    const anonymous = clients(undefined);
    const owner = clients(tokens["alice"]);
    const error = await refused((x) => rpc.call(x, next(), owner), anonymous, grpc.status.UNAUTHENTICATED);
    expect(error.details).toMatch(/no token/);
  });
});

describe("tokens that do not authenticate", () => {
  const cases: Array<[string, () => Promise<string> | string]> = [
    ["a tampered secret", () => tokens["alice"]!.slice(0, -1) + (tokens["alice"]!.endsWith("0") ? "1" : "0")],
    ["a tampered id", () => `tm_${tokens["alice"]!.slice(3, 18)}${tokens["alice"]![18] === "0" ? "1" : "0"}${tokens["alice"]!.slice(19)}`],
    ["another token's secret with alice's id", () => tokens["alice"]!.slice(0, 20) + tokens["bob"]!.slice(20)],
    ["a malformed token", () => "not-a-token"],
    ["an expired token", () => mint("expired", ["alpha"], ["read", "write", "subscribe"], { expiresAt: new Date(Date.now() - 1000) })],
    [
      "a revoked token",
      async () => {
        const token = await mint("revoked", ["alpha"], ["read", "write", "subscribe"]);
        await revokeToken(authDb(), token.slice(3, 19));
        return token;
      },
    ],
  ];
  it.each(cases)("%s: UNAUTHENTICATED on a read and a write, nothing written", async (name, make) => {
    const c = clients(await make());
    const write = await refused((x) => RPCS[0]!.call(x, next(), x), c, grpc.status.UNAUTHENTICATED);
    await refused((x) => RPCS[1]!.call(x, next(), x), c, grpc.status.UNAUTHENTICATED);
    const expected = { "an expired token": /expired/, "a revoked token": /revoked/, "a malformed token": /malformed/ }[name] ?? /not valid/;
    expect(write.details).toMatch(expected);
  });

  it("a header that is not `Bearer <token>` is UNAUTHENTICATED", async () => {
    const c = clients(undefined);
    for (const header of ["Basic dXNlcjpwYXNz", "Bearer", `Token ${tokens["alice"]}`]) {
      const error = await refused((x) => x.events.getStreamHead({ aggregateType: "Order", aggregateId: "alpha/seed-1" }, { metadata: { authorization: header } }), c, grpc.status.UNAUTHENTICATED);
      expect(error.details).toMatch(/Bearer|no token/);
    }
  });

  it("failures are counted by reason and never logged with the token", async () => {
    const metric = await t.server.registry.getSingleMetric("tidemark_auth_failures_total")!.get();
    const reasons = new Set(metric.values.map((v) => v.labels["reason"]));
    for (const reason of ["missing", "malformed", "unknown", "expired", "revoked", "missing_scope", "missing_database"]) expect(reasons, reason).toContain(reason);
    const log = logLines.join("");
    expect(log).toContain("call refused");
    for (const token of Object.values(tokens)) expect(log).not.toContain(token.slice(20));
  });
});

describe("tenancy on the read paths that span databases", () => {
  it("Subscribe from 0 with bob's token sends beta's events only (and the caught-up marker)", async () => {
    const bob = clients(tokens["bob"]);
    const stop = new AbortController();
    const got: Array<{ id: string; type: string }> = [];
    for await (const m of bob.events.subscribe({ start: { case: "afterPosition", value: 0n } }, { signal: stop.signal })) {
      if (m.message.case === "caughtUp") break;
      if (m.message.case === "event") got.push({ id: m.message.value.aggregateId, type: m.message.value.aggregateType });
    }
    stop.abort();
    expect(got.length).toBeGreaterThanOrEqual(2);
    expect(got.every((e) => e.id.startsWith("beta/"))).toBe(true);
  });

  it("live Subscribe with bob's token skips alpha's new events and delivers beta's", async () => {
    const bob = clients(tokens["bob"]);
    const iterator = bob.events.subscribe({ start: { case: "fromEnd", value: {} } })[Symbol.asyncIterator]();
    expect((await iterator.next()).value?.message.case).toBe("caughtUp");
    await clients(tokens["alice"]).events.appendEvents({ aggregateType: "Order", aggregateId: `alpha/live-${next()}`, expectation: { case: "noStream", value: {} }, events: [{ eventId: `e-${next()}`, eventType: "OrderPlaced" }] });
    const betaId = `beta/live-${next()}`;
    await bob.events.appendEvents({ aggregateType: "Order", aggregateId: betaId, expectation: { case: "noStream", value: {} }, events: [{ eventId: `e-${next()}`, eventType: "OrderPlaced" }] });
    // The first event bob receives is his own: alpha's, committed before it, was never sent.
    const first = await iterator.next();
    expect(first.value?.message.case === "event" && first.value.message.value.aggregateId).toBe(betaId);
    await iterator.return?.();
  });

  it("Subscribe from 0 naming alpha with bob's token is PERMISSION_DENIED before any message", async () => {
    const bob = clients(tokens["bob"]);
    const { messages, error } = await drain(bob.events.subscribe({ start: { case: "afterPosition", value: 0n }, databases: ["alpha"] }));
    expect(messages).toEqual([]);
    expect(grpc.status[error!.code]).toBe("PERMISSION_DENIED");
    expect(error!.details).toContain(`database "alpha"`);
  });

  it("Subscribe with the orders token (prefix Ord) sends alpha's Order events only", async () => {
    const orders = clients(tokens["orders"]);
    const stop = new AbortController();
    const got: string[] = [];
    for await (const m of orders.events.subscribe({ start: { case: "afterPosition", value: 0n } }, { signal: stop.signal })) {
      if (m.message.case === "caughtUp") break;
      if (m.message.case === "event") got.push(`${m.message.value.aggregateType}:${m.message.value.aggregateId}`);
    }
    stop.abort();
    expect(got.length).toBeGreaterThan(0);
    expect(got.every((e) => e.startsWith("Order:alpha/"))).toBe(true);
  });

  it("a filter only narrows what the token sees (A3): bob's event-type filter sends beta's events only; the orders token's other prefix sends none", async () => {
    const bob = clients(tokens["bob"]);
    const got: string[] = [];
    for await (const m of bob.events.subscribe({ start: { case: "afterPosition", value: 0n }, eventTypes: ["OrderPlaced"], stopAtCaughtUp: true })) {
      if (m.message.case === "event") got.push(`${m.message.value.eventType}:${m.message.value.aggregateId}`);
    }
    expect(got.length).toBeGreaterThan(0);
    expect(got.every((e) => e.startsWith("OrderPlaced:beta/"))).toBe(true);
    const orders = clients(tokens["orders"]);
    const outside: string[] = [];
    for await (const m of orders.events.subscribe({ start: { case: "afterPosition", value: 0n }, aggregateTypePrefix: "Inv", stopAtCaughtUp: true })) outside.push(m.message.case ?? "");
    expect(outside).toEqual(["caughtUp"]);
  });

  it("an aggregate of no database is reached only by a * token", async () => {
    const alice = clients(tokens["alice"]);
    const error = await refused((x) => stream(x.events.readStream({ aggregateType: "Order", aggregateId: "o-1" })), alice, grpc.status.PERMISSION_DENIED);
    expect(error.details).toMatch(/names no database/);
    const admin = clients(tokens["admin"]);
    expect(await stream(admin.events.readStream({ aggregateType: "Order", aggregateId: "o-1" }))).toHaveLength(1);
    await expectStatus(alice.processing.getProcessingStatus({ key: { case: "eventId", value: nothingDatabaseEvent } }), grpc.status.NOT_FOUND);
  });

  it("ListInstances paging: alice pages through alpha; bob can use neither alpha nor alpha's page token", async () => {
    const alice = clients(tokens["alice"]);
    const first = await alice.instances.listInstances({ database: "alpha", className: "Page", pageSize: 2 });
    expect(first.instances.map((i) => i.instanceId)).toEqual(["p0", "p1"]);
    expect(first.nextPageToken).not.toBe("");
    const second = await alice.instances.listInstances({ database: "alpha", className: "Page", pageSize: 2, pageToken: first.nextPageToken });
    expect(second.instances.map((i) => i.instanceId)).toEqual(["p2", "p3"]);
    const bob = clients(tokens["bob"]);
    const denied = await refused((x) => x.instances.listInstances({ database: "alpha", className: "Page", pageSize: 2, pageToken: first.nextPageToken }), bob, grpc.status.PERMISSION_DENIED);
    expect(denied.details).toContain(`database "alpha"`);
    // alpha's token on beta's listing is not a token of that listing: nothing of alpha comes back.
    await refused((x) => x.instances.listInstances({ database: "beta", className: "Page", pageSize: 2, pageToken: first.nextPageToken }), bob, grpc.status.INVALID_ARGUMENT);
    expect((await bob.instances.listInstances({ database: "beta", className: "Page" })).instances).toEqual([]);
  });

  it("GetProcessingStatus by command_id: bob gets nothing of alpha's command, alice gets it", async () => {
    const alice = clients(tokens["alice"]);
    const bob = clients(tokens["bob"]);
    const mine = await alice.processing.getProcessingStatus({ key: { case: "commandId", value: "cmd-alpha" } });
    expect(mine.events.map((e) => e.eventId)).toEqual([seedEventA]);
    expect((await bob.processing.getProcessingStatus({ key: { case: "commandId", value: "cmd-alpha" } })).events).toEqual([]);
    expect((await bob.processing.getProcessingStatus({ key: { case: "commandId", value: "cmd-beta" } })).events.map((e) => e.eventId)).toEqual([seedEventB]);
  });

  it("GetProcessingStatus by event_id: alice sees alpha's handler rows; bob gets NOT_FOUND for them", async () => {
    const alice = clients(tokens["alice"]);
    const status = await alice.processing.getProcessingStatus({ key: { case: "eventId", value: seedEventA } });
    expect(status.events[0]!.handlers.map((h) => [h.handler, h.state])).toEqual([["audit", ProcessingState.DONE]]);
    await expectStatus(clients(tokens["bob"]).processing.getProcessingStatus({ key: { case: "eventId", value: seedEventA } }), grpc.status.NOT_FOUND);
  });

  it("the aggregate-type prefix: Order allowed, Invoice and instances refused, nothing written", async () => {
    const orders = clients(tokens["orders"]);
    await orders.events.appendEvents({ aggregateType: "Order", aggregateId: `alpha/o-${next()}`, expectation: { case: "noStream", value: {} }, events: [{ eventId: `e-${next()}`, eventType: "OrderPlaced" }] });
    const invoice = await refused(
      (x) => x.events.appendEvents({ aggregateType: "Invoice", aggregateId: `alpha/i-${next()}`, expectation: { case: "noStream", value: {} }, events: [{ eventId: `e-${next()}`, eventType: "InvoiceSent" }] }),
      orders,
      grpc.status.PERMISSION_DENIED,
    );
    expect(invoice.details).toContain(`aggregate type "Invoice"`);
    await refused((x) => stream(x.events.readStream({ aggregateType: "Invoice", aggregateId: "alpha/inv-1" })), orders, grpc.status.PERMISSION_DENIED);
    await refused((x) => x.instances.getInstance({ database: "alpha", className: "Person", instanceId: "seed" }), orders, grpc.status.PERMISSION_DENIED);
  });

  it("AppendToStreams needs every aggregate it names: a check on another database's stream is PERMISSION_DENIED, nothing written", async () => {
    const alice = clients(tokens["alice"]);
    const id = `alpha/mc-${next()}`;
    const denied = await refused(
      (x) =>
        x.events.appendToStreams({
          streams: [{ aggregateType: "Order", aggregateId: id, expectation: { case: "noStream", value: {} }, events: [{ eventId: `e-${next()}`, eventType: "OrderPlaced" }] }],
          consistencyChecks: [{ aggregateType: "Order", aggregateId: "beta/seed-1", expectation: { case: "expectedSeq", value: 1n } }],
        }),
      alice,
      grpc.status.PERMISSION_DENIED,
    );
    expect(denied.details).toContain("beta");
    await expectStatus(alice.events.getStreamHead({ aggregateType: "Order", aggregateId: id }), grpc.status.NOT_FOUND);
  });

  it("a stated database that is not the aggregate id's is INVALID_ARGUMENT, nothing written", async () => {
    const alice = clients(tokens["alice"]);
    await refused(
      (x) => x.events.appendEvents({ database: "beta", aggregateType: "Order", aggregateId: `alpha/o-${next()}`, expectation: { case: "noStream", value: {} }, events: [{ eventId: `e-${next()}`, eventType: "OrderPlaced" }] }),
      alice,
      grpc.status.INVALID_ARGUMENT,
    );
    await alice.events.getStreamHead({ database: "alpha", aggregateType: "Order", aggregateId: "alpha/seed-1" });
  });
});

describe("the actor is the principal", () => {
  it("an append without actor records the principal", async () => {
    const alice = clients(tokens["alice"]);
    const id = `alpha/act-${next()}`;
    await alice.events.appendEvents({ aggregateType: "Order", aggregateId: id, expectation: { case: "noStream", value: {} }, events: [{ eventId: `e-${next()}`, eventType: "OrderPlaced" }] });
    const [event] = (await stream(alice.events.readStream({ aggregateType: "Order", aggregateId: id }))) as Array<{ event: { actor: string } }>;
    expect(event!.event.actor).toBe("alice");
  });

  it("an instance command records the principal", async () => {
    const alice = clients(tokens["alice"]);
    const id = `act-${next()}`;
    await alice.instances.createInstance({ database: "alpha", className: "Person", instanceId: id, properties: {}, commandId: `c-${id}`, actor: "alice" });
    const [event] = (await stream(alice.events.readStream({ aggregateType: "Instance", aggregateId: `alpha/Person/${id}` }))) as Array<{ event: { actor: string } }>;
    expect(event!.event.actor).toBe("alice");
  });

  it("a replay and a discard record the principal (C9, C10)", async () => {
    const ops = clients(tokens["only-admin"]);
    const [replayed, discarded] = [`dl-${next()}`, `dl-${next()}`];
    for (const eventId of [replayed, discarded]) {
      await sql`insert into processed_events (handler, event_id, aggregate_type, aggregate_id, seq, global_position, event_type, state, fence, owner, message)
        values ('redrive', ${eventId}, 'Order', ${`alpha/${eventId}`}, 1, null, 'OrderPlaced', 'dead_lettered', nextval('processed_event_fence'), 'test', '{}'::jsonb)`.execute(database.db);
    }
    const row = async (eventId: string) => (await sql<Record<string, unknown>>`select * from processed_events where handler = 'redrive' and event_id = ${eventId}`.execute(database.db)).rows[0];
    await ops.processing.replayDeadLetters({ selection: { handler: "redrive", target: { case: "eventId", value: replayed } } });
    expect(await row(replayed)).toMatchObject({ state: "replay_requested", replay_requested_by: "only-admin", replay_requested_at: expect.any(Date) });
    await ops.processing.discardDeadLetters({ selection: { handler: "redrive", target: { case: "eventId", value: discarded } }, reason: "superseded" });
    expect(await row(discarded)).toMatchObject({ state: "discarded", resolved_by: "only-admin", resolution_reason: "superseded", resolved_at: expect.any(Date) });
  });

  it("another actor is PERMISSION_DENIED and nothing is written", async () => {
    const alice = clients(tokens["alice"]);
    const error = await refused(
      (x) => x.events.appendEvents({ actor: "mallory", aggregateType: "Order", aggregateId: `alpha/o-${next()}`, expectation: { case: "noStream", value: {} }, events: [{ eventId: `e-${next()}`, eventType: "OrderPlaced" }] }),
      alice,
      grpc.status.PERMISSION_DENIED,
    );
    expect(error.details).toMatch(/own principal/);
    await refused((x) => x.instances.createInstance({ actor: "mallory", database: "alpha", className: "Person", instanceId: `m-${next()}`, properties: {}, commandId: `c-${next()}` }), alice, grpc.status.PERMISSION_DENIED);
  });
});

describe("revocation", () => {
  it("revoking a token ends its open Subscribe stream with UNAUTHENTICATED; the next call is refused", async () => {
    const token = await mint("watcher", ["alpha"], ["read", "subscribe"]);
    const c = clients(token);
    const iterator = c.events.subscribe({ start: { case: "afterPosition", value: 0n } })[Symbol.asyncIterator]();
    // Read up to the caught-up marker: the stream is open and live.
    for (;;) {
      const r = await iterator.next();
      expect(r.done).toBe(false);
      if (r.value.message.case === "caughtUp") break;
    }
    expect(await revokeToken(authDb(), token.slice(3, 19))).toBe(true);
    const ended = await iterator.next().then(
      () => undefined,
      (e: unknown) => e as grpc.ServiceError,
    );
    expect(ended).toBeDefined();
    expect(grpc.status[ended!.code]).toBe("UNAUTHENTICATED");
    expect(ended!.details).toMatch(/revoked/);
    await expectStatus(c.events.getStreamHead({ aggregateType: "Order", aggregateId: "alpha/seed-1" }), grpc.status.UNAUTHENTICATED);
  });
});

describe("TLS on the gRPC port", () => {
  it("a plain-text client gets no answer (UNAVAILABLE), and the port keeps serving TLS", async () => {
    const plain = createClient(EventStoreService, t.server.address, { token: tokens["alice"]! });
    opened.push({ events: plain, instances: plain as never, processing: plain as never, close: () => plain.close() });
    await expectStatus(plain.getStreamHead({ aggregateType: "Order", aggregateId: "alpha/seed-1" }, { deadlineMs: 3000 }), grpc.status.UNAVAILABLE);
    await clients(tokens["alice"]).events.getStreamHead({ aggregateType: "Order", aggregateId: "alpha/seed-1" });
  });

  it("a client that does not trust the server's CA is refused at the handshake", async () => {
    const c = clients(tokens["alice"], { ca: certs.read(certs.clientCa) });
    await expectStatus(c.events.getStreamHead({ aggregateType: "Order", aggregateId: "alpha/seed-1" }, { deadlineMs: 3000 }), grpc.status.UNAVAILABLE);
  });

  it("health answers over TLS without a token", async () => {
    const health = createClient(Health, t.server.address, { tls: { ca: certs.read(certs.serverCa) } });
    try {
      expect((await health.check({ service: "" })).status).toBe(Serving.SERVING);
    } finally {
      health.close();
    }
  });

  it("grpcurl -cacert: reflection lists the services; a token for alpha reads alpha and is refused on beta", async () => {
    const grpcurl = async (...args: string[]) => {
      try {
        return { ...(await run(findTool("grpcurl"), ["-cacert", certs.serverCa, ...args])), code: 0 };
      } catch (e) {
        return e as { stdout: string; stderr: string; code: number };
      }
    };
    const list = await grpcurl(t.server.address, "list");
    expect(list.code).toBe(0);
    expect(list.stdout).toContain("tidemark.v1.EventStoreService");
    const health = await grpcurl(t.server.address, "grpc.health.v1.Health/Check");
    expect(health.stdout).toContain("SERVING");
    const auth = ["-H", `authorization: Bearer ${tokens["alice"]}`];
    const own = await grpcurl(...auth, "-d", '{"database":"alpha","class_name":"Person","instance_id":"seed"}', t.server.address, "tidemark.v1.InstanceService/GetInstance");
    expect(own.code).toBe(0);
    expect(own.stdout).toContain("Ada");
    const other = await grpcurl(...auth, "-d", '{"database":"beta","class_name":"Person","instance_id":"seed"}', t.server.address, "tidemark.v1.InstanceService/GetInstance");
    expect(other.code).not.toBe(0);
    expect(other.stderr).toContain("PermissionDenied");
    expect(other.stderr).toContain(`database "beta"`);
    expect(other.stderr).not.toContain("Bo");
    const plain = await run(findTool("grpcurl"), ["-plaintext", "-max-time", "3", t.server.address, "list"]).then(
      () => 0,
      (e: { code: number }) => e.code,
    );
    expect(plain).not.toBe(0);
  });

  it("reloadTls swaps the certificate for new handshakes without dropping the port or an open stream", async () => {
    const peerCn = () =>
      new Promise<string>((resolve, reject) => {
        const socket = tlsConnect({ host: "127.0.0.1", port: t.server.port, ca: certs.read(certs.serverCa), ALPNProtocols: ["h2"] }, () => {
          const cn = socket.getPeerCertificate().subject.CN;
          socket.end();
          resolve(String(cn));
        });
        socket.on("error", reject);
      });
    expect(await peerCn()).toBe("server");
    const alice = clients(tokens["alice"]);
    const iterator = alice.events.subscribe({ start: { case: "fromEnd", value: {} } })[Symbol.asyncIterator]();
    expect((await iterator.next()).value?.message.case).toBe("caughtUp");

    const renewed = certs.issueServer("server-renewed");
    copyFileSync(renewed.cert, certs.serverCert);
    copyFileSync(renewed.key, certs.serverKey);
    await t.server.reloadTls();
    expect(await peerCn()).toBe("server-renewed");
    // The open stream still delivers (its connection kept the old certificate).
    const id = `alpha/reload-${next()}`;
    await clients(tokens["alice"]).events.appendEvents({ aggregateType: "Order", aggregateId: id, expectation: { case: "noStream", value: {} }, events: [{ eventId: `e-${next()}`, eventType: "OrderPlaced" }] });
    const delivered = await iterator.next();
    expect(delivered.value?.message.case === "event" && delivered.value.message.value.aggregateId).toBe(id);
    await iterator.return?.();

    // Invalid files: the reload fails and the server keeps the last good certificate.
    copyFileSync(certs.clientKey, certs.serverKey);
    await expect(t.server.reloadTls()).rejects.toThrow(/valid certificate and key/);
    expect(await peerCn()).toBe("server-renewed");
  });
});

describe("mTLS (TIDEMARK_TLS_CLIENT_CA)", () => {
  let mtls: ServerHandle;
  let m: TestCerts;
  beforeAll(async () => {
    m = makeTestCerts();
    // A second server on the same store, requiring client certificates.
    mtls = await startServer({ ...t.config, tlsCert: m.serverCert, tlsKey: m.serverKey, tlsClientCa: m.clientCa }, { log: pino({ level: "silent" }) });
  });
  afterAll(async () => {
    await mtls?.stop(1000);
    m?.remove();
  });

  it("a client without a certificate is refused at the handshake", async () => {
    const c = clients(tokens["alice"], { ca: m.read(m.serverCa) }, mtls.address);
    await expectStatus(c.events.getStreamHead({ aggregateType: "Order", aggregateId: "alpha/seed-1" }, { deadlineMs: 3000 }), grpc.status.UNAVAILABLE);
  });

  it("a client certificate from another CA is refused at the handshake", async () => {
    const c = clients(tokens["alice"], { ca: m.read(m.serverCa), cert: m.read(m.strangerCert), key: m.read(m.strangerKey) }, mtls.address);
    await expectStatus(c.events.getStreamHead({ aggregateType: "Order", aggregateId: "alpha/seed-1" }, { deadlineMs: 3000 }), grpc.status.UNAVAILABLE);
  });

  it("a client certificate from the CA passes; the token still decides", async () => {
    const tls = { ca: m.read(m.serverCa), cert: m.read(m.clientCert), key: m.read(m.clientKey) };
    expect((await clients(tokens["alice"], tls, mtls.address).events.getStreamHead({ aggregateType: "Order", aggregateId: "alpha/seed-1" })).head).toBe(1n);
    await expectStatus(clients(undefined, tls, mtls.address).events.getStreamHead({ aggregateType: "Order", aggregateId: "alpha/seed-1" }), grpc.status.UNAUTHENTICATED);
  });
});

describe("the token commands and the bootstrap token", () => {
  const io = () => {
    const out: string[] = [];
    const err: string[] = [];
    return { out, err, io: { out: (s: string) => void out.push(s), err: (s: string) => void err.push(s), errIsTTY: false } };
  };
  const env = () => ({ ...cliEnv });
  let cliEnv: Record<string, string>;
  beforeAll(() => {
    const c = t.config;
    cliEnv = {
      TIDEMARK_PG_URL: c.pgUrl,
      TIDEMARK_PG_SCHEMA: `${c.pgSchema}_cli`,
      TIDEMARK_S3_ENDPOINT: c.s3Endpoint,
      TIDEMARK_S3_BUCKET: c.s3Bucket,
      TIDEMARK_S3_ACCESS_KEY: c.s3AccessKey,
      TIDEMARK_S3_SECRET_KEY: c.s3SecretKey,
      TIDEMARK_LOG_LEVEL: "silent",
    };
  });
  afterAll(async () => {
    await sql`drop schema if exists ${sql.id(cliEnv["TIDEMARK_PG_SCHEMA"]!)} cascade`.execute(database.db);
  });

  it("migrate prints the bootstrap admin token once, on stdout", async () => {
    const first = io();
    expect(await runCli(["migrate"], first.io, env())).toBe(0);
    const printed = first.out.join("").match(/tm_[0-9a-f]{16}_[0-9a-f]{64}/g) ?? [];
    expect(printed).toHaveLength(1);
    expect(first.err.join("")).not.toContain(printed[0]!);
    const second = io();
    expect(await runCli(["migrate"], second.io, env())).toBe(0);
    expect(second.out.join("")).not.toMatch(/tm_[0-9a-f]{16}_/);
  });

  it("token create prints a working token once; list shows it without the secret; revoke ends it", async () => {
    const created = io();
    expect(await runCli(["token", "create", "--principal", "ci", "--database", "alpha", "--database", "gamma", "--scope", "read,write", "--expires", "30d"], created.io, env())).toBe(0);
    const token = created.out.join("").trim();
    expect(token).toMatch(/^tm_[0-9a-f]{16}_[0-9a-f]{64}$/);
    const id = token.slice(3, 19);
    const listed = io();
    expect(await runCli(["token", "list"], listed.io, env())).toBe(0);
    const list = listed.out.join("");
    expect(list).toContain(id);
    expect(list).toContain("ci");
    expect(list).toContain("alpha,gamma");
    expect(list).not.toContain(token.slice(20));
    const revoked = io();
    expect(await runCli(["token", "revoke", id], revoked.io, env())).toBe(0);
    const again = io();
    expect(await runCli(["token", "revoke", id], again.io, env())).toBe(1);
    const relisted = io();
    await runCli(["token", "list"], relisted.io, env());
    expect(relisted.out.join("")).toMatch(new RegExp(`${id}.*revoked`));
  });

  it("token create refuses an unknown scope and * without admin (exit 2, nothing stored)", async () => {
    const bad = io();
    expect(await runCli(["token", "create", "--principal", "x", "--database", "alpha", "--scope", "read,root"], bad.io, env())).toBe(2);
    expect(bad.err.join("")).toMatch(/unknown scope "root"/);
    const star = io();
    expect(await runCli(["token", "create", "--principal", "x", "--database", "*", "--scope", "read"], star.io, env())).toBe(2);
    expect(star.err.join("")).toMatch(/needs the admin scope/);
    expect(star.out.join("")).toBe("");
  });

  it("the client commands take --tls-ca and --token", async () => {
    const refusedRun = io();
    expect(await runCli(["stream", "Order", "beta/seed-1", "--addr", t.server.address, "--tls-ca", certs.serverCa, "--token", tokens["alice"]!], refusedRun.io, {})).toBe(1);
    expect(refusedRun.err.join("")).toMatch(/PERMISSION_DENIED: .*database "beta"/);
    const tail = io();
    expect(await runCli(["tail", "--after", "0", "--limit", "1", "--database", "beta", "--addr", t.server.address, "--tls-ca", certs.serverCa, "--token", tokens["alice"]!], tail.io, {})).toBe(1);
    expect(tail.err.join("")).toMatch(/PERMISSION_DENIED: .*database "beta"/);
    expect(tail.out.join("")).toBe("");
    const noToken = io();
    expect(await runCli(["status", seedEventA, "--addr", t.server.address, "--tls-ca", certs.serverCa], noToken.io, {})).toBe(1);
    expect(noToken.err.join("")).toMatch(/UNAUTHENTICATED/);
    const ok = io();
    expect(await runCli(["stream", "Order", "alpha/seed-1", "--addr", t.server.address, "--tls-ca", certs.serverCa, "--token", tokens["alice"]!], ok.io, {})).toBe(0);
    expect(ok.out.join("")).toContain("OrderPlaced");
  });
});

describe("PrivacyService (docs/CONTRACT.md T3, T5)", () => {
  it("ForgetSubject needs the admin scope on the subject's database, GetSubjectKey the read scope; no token, no answer", async () => {
    const made: Array<ClientOf<typeof PrivacyService>> = [];
    const privacy = (token?: string) => {
      const c = createClient(PrivacyService, t.server.address, { tls: { ca: certs.read(certs.serverCa) }, ...(token === undefined ? {} : { token }) });
      made.push(c);
      return c;
    };
    const alpha = { database: "alpha", subject: "person-1" };
    try {
      await expectStatus(privacy().forgetSubject(alpha), grpc.status.UNAUTHENTICATED);
      await expectStatus(privacy().getSubjectKey(alpha), grpc.status.UNAUTHENTICATED);
      await expectStatus(privacy(tokens["alice"]).forgetSubject(alpha), grpc.status.PERMISSION_DENIED);
      await expectStatus(privacy(tokens["only-admin"]).forgetSubject({ ...alpha, database: "beta" }), grpc.status.PERMISSION_DENIED);
      await expectStatus(privacy(tokens["only-admin"]).forgetSubject({ ...alpha, actor: "someone-else" }), grpc.status.PERMISSION_DENIED);
      expect(await privacy(tokens["only-admin"]).forgetSubject(alpha)).toMatchObject({ forgotten: false });
      await expectStatus(privacy(tokens["only-write"]).getSubjectKey(alpha), grpc.status.PERMISSION_DENIED);
      await expectStatus(privacy(tokens["alice"]).getSubjectKey({ ...alpha, database: "beta" }), grpc.status.PERMISSION_DENIED);
      expect(await privacy(tokens["only-read"]).getSubjectKey(alpha)).toMatchObject({ forgotten: false, dataKey: new Uint8Array() });
    } finally {
      for (const c of made) c.close();
    }
  });
});

describe("the tidemark server process", () => {
  let p: TestCerts;
  const schemas: string[] = [];
  const peerCn = (port: number) =>
    new Promise<string>((resolve, reject) => {
      const socket = tlsConnect({ host: "127.0.0.1", port, ca: p.read(p.serverCa), ALPNProtocols: ["h2"] }, () => {
        const cn = socket.getPeerCertificate().subject.CN;
        socket.end();
        resolve(String(cn));
      });
      socket.on("error", reject);
    });
  const serverEnv = (extra: Record<string, string>) => {
    const schema = `${t.config.pgSchema}_p${schemas.length}`;
    schemas.push(schema);
    const { TIDEMARK_AUTH: _off, ...stack } = stackEnv();
    return cleanEnv({ ...stack, TIDEMARK_PG_SCHEMA: schema, TIDEMARK_S3_BUCKET: t.config.s3Bucket, ...extra });
  };
  beforeAll(() => {
    p = makeTestCerts();
  });
  afterAll(async () => {
    for (const schema of schemas) await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(database.db);
    p?.remove();
  });

  it("defaults to tokens in the services mode, and SIGHUP re-reads the certificate without closing the port", async () => {
    const port = await freePort();
    const server = background(process.execPath, [TIDEMARK_BIN, "server", "--grpc-addr", `127.0.0.1:${port}`], serverEnv({ TIDEMARK_TLS_CERT: p.serverCert, TIDEMARK_TLS_KEY: p.serverKey }));
    try {
      await server.waitFor(/security +TLS .*, tokens/, "the banner");
      expect(await peerCn(port)).toBe("server");
      const renewed = p.issueServer("server-sighup");
      copyFileSync(renewed.cert, p.serverCert);
      copyFileSync(renewed.key, p.serverKey);
      process.kill(server.child.pid!, "SIGHUP");
      await server.waitFor(/TLS certificates re-read \(SIGHUP\)/, "the reload");
      expect(await peerCn(port)).toBe("server-sighup");
      const anonymous = clients(undefined, { ca: p.read(p.serverCa) }, `127.0.0.1:${port}`);
      await expectStatus(anonymous.events.getStreamHead({ aggregateType: "Order", aggregateId: "alpha/x" }), grpc.status.UNAUTHENTICATED);
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });

  it("TIDEMARK_AUTH=off on a non-loopback address warns at start", async () => {
    const port = await freePort();
    const server = background(process.execPath, [TIDEMARK_BIN, "server", "--grpc-addr", `0.0.0.0:${port}`], serverEnv({ TIDEMARK_AUTH: "off" }));
    try {
      await server.waitFor(/TIDEMARK_AUTH=off on a non-loopback address/, "the warning");
      await server.waitFor(/stop with Ctrl-C/, "the banner");
      // A SIGTERM in the same instant as the banner kills the process before its handler runs (seen
      // at 70ba542 too); one answered call later it is handled.
      const health = createClient(Health, `127.0.0.1:${port}`);
      try {
        expect((await health.check({ service: "" })).status).toBe(Serving.SERVING);
      } finally {
        health.close();
      }
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });
});

describe("PostgreSQL over TLS (TIDEMARK_PG_SSL_CA, docs/CONTRACT.md T1)", () => {
  // The stack's PostgreSQL (Debian's package) serves TLS with the host's snakeoil certificate for
  // `localhost`; `stack.sh env --secure` names that certificate as the CA and the host localhost.
  let secure: Record<string, string>;
  beforeAll(async () => {
    secure = await stackSecureEnv();
  });
  const overTls = (ca: string) => testServerConfig({ TIDEMARK_PG_URL: secure["TIDEMARK_PG_URL"]!, TIDEMARK_PG_SSL_CA: ca, TIDEMARK_AUTH: "off" });

  it("the stack's PostgreSQL speaks TLS", async () => {
    const rows = await sql<{ ssl: string }>`show ssl`.execute(database.db);
    expect(rows.rows[0]!.ssl, "the stack's PostgreSQL needs ssl = on (Debian's default, with the snakeoil certificate)").toBe("on");
  });

  it("every connection of the server verifies PostgreSQL's certificate; a server with the wrong CA does not start", async () => {
    const config = overTls(secure["TIDEMARK_PG_SSL_CA"]!);
    const { pgConnectionUrl } = await import("../../core/backends.js");
    const url = pgConnectionUrl(config);
    expect(url).toMatch(/sslmode=verify-full/);
    const probe = createDatabase({ url, schema: config.pgSchema, poolSize: 1 });
    try {
      const ssl = await sql<{ ssl: boolean }>`select ssl from pg_stat_ssl where pid = pg_backend_pid()`.execute(probe.db);
      expect(ssl.rows[0]!.ssl).toBe(true);
    } finally {
      await probe.close();
    }
    const server = await startTestServer(config, { log: pino({ level: "silent" }) });
    try {
      const out = await server.events.appendEvents({ aggregateType: "Order", aggregateId: "tls/o-1", expectation: { case: "noStream", value: {} }, events: [{ eventId: `tls-${next()}`, eventType: "OrderPlaced" }] });
      expect(out.events[0]!.sequenceNumber).toBe(1n);
    } finally {
      await server.close();
    }
    await expect(startServer(overTls(certs.serverCa), { log: pino({ level: "silent" }) })).rejects.toThrow(/certificate/);
  });
});

describe("S3 over HTTPS with a private CA (TIDEMARK_S3_CA, docs/CONTRACT.md T1)", () => {
  // The stack's S3Proxy serves HTTPS with a certificate of the stack's own CA (`stack.sh env
  // --secure`). The server is given only the https:// endpoint, so every S3 request it makes goes
  // over TLS and must verify that CA.
  let secure: Record<string, string>;
  beforeAll(async () => {
    secure = await stackSecureEnv();
  });
  const over = (extra: Record<string, string>) => testServerConfig({ TIDEMARK_S3_ENDPOINT: secure["TIDEMARK_S3_ENDPOINT"]!, TIDEMARK_AUTH: "off", ...extra });

  it("the server stores and reads events through HTTPS, verifying the private CA", async () => {
    const config = over({ TIDEMARK_S3_CA: secure["TIDEMARK_S3_CA"]!, TIDEMARK_EVENT_CACHE_SIZE: "0" });
    expect(config.s3Endpoint).toMatch(/^https:\/\//);
    expect(config.s3Endpoint).not.toBe(stackEnv()["TIDEMARK_S3_ENDPOINT"]);
    const server = await startTestServer(config, { log: pino({ level: "silent" }) });
    try {
      await server.events.appendEvents({ aggregateType: "Order", aggregateId: "s3tls/o-1", expectation: { case: "noStream", value: {} }, events: [{ eventId: `s3-${next()}`, eventType: "OrderPlaced", data: { via: "https" } }] });
      const events = (await stream(server.events.readStream({ aggregateType: "Order", aggregateId: "s3tls/o-1" }))) as Array<{ event: { data: unknown } }>;
      expect(events[0]!.event.data).toEqual({ via: "https" });
    } finally {
      await server.close();
    }
  });

  it("without the CA, or with another one, the certificate is refused and the server does not start", async () => {
    await expect(startServer(over({ TIDEMARK_S3_REQUEST_TIMEOUT_MS: "2000" }), { log: pino({ level: "silent" }) })).rejects.toThrow();
    await expect(startServer(over({ TIDEMARK_S3_CA: certs.serverCa, TIDEMARK_S3_REQUEST_TIMEOUT_MS: "2000" }), { log: pino({ level: "silent" }) })).rejects.toThrow();
  });
});

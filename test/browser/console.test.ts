/**
 * The web console in a real headless Chromium (Debian's package, driven by playwright-core) against
 * a server on the real services: browse from the databases to a stream and an event, the event's
 * data shown as text however hostile (docs/CONTRACT.md A2: data is stored exactly as sent; the console
 * must never run it), the live log, and with tokens on only what the token may see (T3). Every call
 * the page makes goes through the gRPC-Web endpoint over the server's own guarded handlers (A6).
 * Screenshots are kept in test-results/console/.
 */
import { mkdir } from "node:fs/promises";
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";
import { type Kysely } from "kysely";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { createDatabase } from "../../core/db/database.js";
import type { AuthTables } from "../../core/db/schema.js";
import { createToken } from "../../core/tokens.js";
import { EventStoreService } from "../../gen/tidemark/v1/event_store_pb.js";
import { InspectionService } from "../../gen/tidemark/v1/inspection_pb.js";
import { InstanceService } from "../../gen/tidemark/v1/instance_pb.js";
import { PrivacyService } from "../../gen/tidemark/v1/privacy_pb.js";
import { ProcessingService } from "../../gen/tidemark/v1/processing_pb.js";
import { waitFor } from "../helpers/wait-for.js";
import { startTestServer, testServerConfig, type TestServer } from "../helpers/test-server.js";

const SHOTS = new URL("../../test-results/console/", import.meta.url).pathname;
let browser: Browser;

beforeAll(async () => {
  await mkdir(SHOTS, { recursive: true });
  // Root in a container has no user namespaces for Chromium's sandbox.
  browser = await chromium.launch({ executablePath: inject("chromium"), headless: true, args: ["--no-sandbox"] });
});

afterAll(async () => {
  await browser?.close();
});

/** A fresh page that fails the test on any script error; its console output is kept for failures. */
async function openPage(url: string): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  // The machine may be loaded: a generous bound on each step, never a timed assertion.
  page.setDefaultTimeout(60_000);
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(url);
  return { page, errors };
}

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: `${SHOTS}${name}.png`, fullPage: true });
}

/** A client of the console's gRPC-Web endpoint, as the page's (console/src/api.ts), with `token` if any. */
function consoleClient<S extends DescService>(url: string, service: S, token?: string): Client<S> {
  const transport = createGrpcWebTransport({
    baseUrl: url,
    httpVersion: "1.1",
    useBinaryFormat: true,
    interceptors: [
      (next) => (request) => {
        if (token !== undefined) request.header.set("authorization", `Bearer ${token}`);
        return next(request);
      },
    ],
  });
  return createClient(service, transport);
}

/** The code a call through the console ends with (0 = OK); a stream is read to its end. */
async function codeOf(call: Promise<unknown> | AsyncIterable<unknown>): Promise<Code | 0> {
  try {
    if (Symbol.asyncIterator in call) for await (const _ of call);
    else await call;
    return 0;
  } catch (e) {
    return ConnectError.from(e).code;
  }
}

/** What the console's port never serves, whatever the token: the gRPC port's writes, and PrivacyService (A6). */
async function unservedCodes(url: string, token?: string): Promise<Record<string, Code | 0>> {
  const events = consoleClient(url, EventStoreService, token);
  const instances = consoleClient(url, InstanceService, token);
  const privacy = consoleClient(url, PrivacyService, token);
  const event = { eventId: "console-write-1", eventType: "Written", data: {} };
  return {
    appendEvents: await codeOf(events.appendEvents({ aggregateType: "Order", aggregateId: "acme/console-write", expectation: { case: "any", value: {} }, events: [event] })),
    appendToStreams: await codeOf(events.appendToStreams({ streams: [{ aggregateType: "Order", aggregateId: "acme/console-write", expectation: { case: "any", value: {} }, events: [event] }] })),
    createInstance: await codeOf(instances.createInstance({ database: "acme", className: "Order", instanceId: "console-write" })),
    updateInstance: await codeOf(instances.updateInstance({ database: "acme", className: "Order", instanceId: "console-write" })),
    deleteInstance: await codeOf(instances.deleteInstance({ database: "acme", className: "Order", instanceId: "console-write" })),
    forgetSubject: await codeOf(privacy.forgetSubject({ database: "acme", subject: "someone" })),
    getSubjectKey: await codeOf(privacy.getSubjectKey({ database: "acme", subject: "someone" })),
  };
}

const UNSERVED = { appendEvents: Code.Unimplemented, appendToStreams: Code.Unimplemented, createInstance: Code.Unimplemented, updateInstance: Code.Unimplemented, deleteInstance: Code.Unimplemented, forgetSubject: Code.Unimplemented, getSubjectKey: Code.Unimplemented };

const HOSTILE = {
  note: "<script>window.__xss = 'script'</script>",
  html: `<img src=x onerror="window.__xss = 'img'">`,
  quote: `"'><svg onload="window.__xss='svg'">`,
};

describe("the console, authentication off", () => {
  let t: TestServer;
  let url: string;

  beforeAll(async () => {
    t = await startTestServer(testServerConfig({ TIDEMARK_CONSOLE_ADDR: "127.0.0.1:0" }));
    url = t.server.consoleUrl!;
    for (const n of [1, 2, 3]) {
      await t.events.appendEvents({
        aggregateType: "Order",
        aggregateId: "acme/order-1",
        expectation: { case: "any", value: {} },
        events: [{ eventId: `acme-order-1-${n}`, eventType: n === 1 ? "OrderPlaced" : "OrderLineAdded", data: { line: n, sku: `sku-${n}` }, metadata: { correlation_id: "c-1" } }],
      });
    }
    await t.events.appendEvents({ aggregateType: "Invoice", aggregateId: "globex/inv-9", expectation: { case: "noStream", value: {} }, events: [{ eventId: "globex-inv-9-1", eventType: "InvoiceIssued", data: { total: 12 } }] });
    await t.events.appendEvents({
      aggregateType: "Order",
      aggregateId: "acme/order-hostile",
      expectation: { case: "noStream", value: {} },
      events: [{ eventId: "acme-hostile-1", eventType: "OrderPlaced", data: HOSTILE, metadata: { comment: "<b onmouseover=\"window.__xss='meta'\">bold</b>" } }],
    });
  });

  afterAll(async () => {
    await t?.close();
  });

  it("serves the page with a policy that forbids inline scripts", async () => {
    const response = await fetch(url);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-security-policy")).toContain("script-src 'self'");
    const refused = await fetch(`${url}tidemark.v1.InspectionService/ListDatabases`, { method: "POST", headers: { origin: "http://evil.example", "content-type": "application/grpc-web+proto" }, body: new Uint8Array(5) });
    expect(refused.status).toBe(403);
  });

  it("browses from the databases to a stream and opens an event: envelope, metadata and where it is in S3", async () => {
    const { page, errors } = await openPage(url);
    await page.locator("#databases").getByRole("link", { name: "acme", exact: true }).click();
    await page.locator("#aggregate-types").getByRole("link", { name: "Order", exact: true }).click();
    await page.locator("input[name=id-prefix]").fill("order-1");
    await page.getByRole("button", { name: "Find" }).click();
    await waitFor(async () => (await page.locator("#streams tbody tr").count()) === 1 || undefined, { what: "one stream listed for the prefix" });
    await page.locator("#streams").getByRole("link", { name: "acme/order-1", exact: true }).click();
    await page.locator("#events tbody tr").nth(2).waitFor();
    expect(await page.locator("#stream-head").textContent()).toBe("3");
    await shot(page, "stream");
    await page.locator("#events").getByRole("link", { name: "acme-order-1-2", exact: true }).click();
    const envelope = page.locator("#envelope");
    await envelope.waitFor();
    expect(await envelope.textContent()).toContain("OrderLineAdded");
    expect(JSON.parse((await page.locator("#event-data").textContent())!)).toEqual({ line: 2, sku: "sku-2" });
    expect(await page.locator("#metadata").textContent()).toContain("correlation_id");
    const location = (await page.locator("#location").textContent())!;
    expect(location).toMatch(/segments\/\d{20}\.jsonl/);
    expect(location).toContain(t.config.s3Bucket);
    await shot(page, "event");
    expect(errors).toEqual([]);
    await page.close();
  });

  it("shows an event whose data holds a script tag and event handlers as text, and runs none of it", async () => {
    const { page, errors } = await openPage(`${url}#/event/acme-hostile-1`);
    const data = page.locator("#event-data");
    await data.waitFor();
    expect(JSON.parse((await data.textContent())!)).toEqual(HOSTILE);
    expect(await page.locator("#metadata").textContent()).toContain(`<b onmouseover="window.__xss='meta'">bold</b>`);
    await page.locator("#metadata td").first().hover();
    // Nothing of the data became an element, and no handler ran.
    expect(await page.locator("main img, main script, main svg, main b").count()).toBe(0);
    expect(await page.evaluate(() => (globalThis as unknown as { __xss?: string }).__xss)).toBeUndefined();
    await shot(page, "hostile-event");
    expect(errors).toEqual([]);
    await page.close();
  });

  it("follows the global log live", async () => {
    const { page, errors } = await openPage(`${url}#/live`);
    await waitFor(async () => ((await page.locator("#live-status").textContent()) ?? "").startsWith("following") || undefined, { what: "the live log caught up" });
    await t.events.appendEvents({ aggregateType: "Order", aggregateId: "acme/order-live", expectation: { case: "noStream", value: {} }, events: [{ eventId: "acme-live-1", eventType: "OrderPlaced", data: { live: true } }] });
    const row = page.locator("#live tbody tr", { hasText: "acme-live-1" });
    await row.waitFor();
    expect(await row.textContent()).toContain("acme/order-live");
    await shot(page, "live");
    await row.getByRole("link", { name: "acme-live-1" }).click();
    await page.locator("#envelope").waitFor();
    expect(errors).toEqual([]);
    await page.close();
  });

  it("shows the relay's checkpoints and the handlers", async () => {
    const { page, errors } = await openPage(`${url}#/processing`);
    await page.locator("#head-position").waitFor();
    expect(Number(await page.locator("#head-position").textContent())).toBeGreaterThanOrEqual(5);
    await page.locator("#handlers").waitFor();
    await shot(page, "processing");
    expect(errors).toEqual([]);
    await page.close();
  });
  it("serves no write RPC over gRPC-Web: with authentication off its port must not write (A6)", async () => {
    expect(await unservedCodes(url)).toEqual(UNSERVED);
    const head = await codeOf(consoleClient(url, EventStoreService).getStreamHead({ aggregateType: "Order", aggregateId: "acme/console-write" }));
    expect(head).toBe(Code.NotFound);
  });
});

describe("the console, with tokens (T3)", () => {
  let t: TestServer;
  let url: string;
  let acmeToken: string;
  let adminToken: string;

  beforeAll(async () => {
    t = await startTestServer(testServerConfig({ TIDEMARK_CONSOLE_ADDR: "127.0.0.1:0", TIDEMARK_AUTH: "tokens" }));
    url = t.server.consoleUrl!;
    const database = createDatabase({ url: t.config.pgUrl, schema: t.config.pgSchema, poolSize: 1 });
    try {
      const db = database.db as unknown as Kysely<AuthTables>;
      const admin = (await createToken(db, { principal: "ops", databases: ["*"], scopes: ["read", "write", "subscribe", "admin"] }))!.token;
      adminToken = admin;
      acmeToken = (await createToken(db, { principal: "acme-viewer", databases: ["acme"], scopes: ["read", "subscribe"] }))!.token;
      const metadata = { authorization: `Bearer ${admin}` };
      await t.events.appendEvents({ aggregateType: "Order", aggregateId: "acme/order-7", expectation: { case: "noStream", value: {} }, events: [{ eventId: "acme-order-7-1", eventType: "OrderPlaced", data: {} }] }, { metadata });
      await t.events.appendEvents({ aggregateType: "Order", aggregateId: "globex/order-8", expectation: { case: "noStream", value: {} }, events: [{ eventId: "globex-order-8-1", eventType: "OrderPlaced", data: { secret: "globex" } }] }, { metadata });
    } finally {
      await database.close();
    }
  });

  afterAll(async () => {
    await t?.close();
  });

  it("asks for a token, then shows only the token's databases and refuses another tenant's event as unknown", async () => {
    const { page, errors } = await openPage(url);
    const form = page.locator("#token-form");
    await form.waitFor();
    expect(await form.textContent()).toContain("Unauthenticated");
    await shot(page, "token-form");
    await form.locator("input[name=token]").fill(acmeToken);
    await form.getByRole("button", { name: "Use token" }).click();
    await page.locator("#databases").waitFor();
    const names = await page.locator("#databases tbody td:first-child").allTextContents();
    expect(names).toEqual(["acme"]);
    await shot(page, "databases-acme-token");
    await page.goto(`${url}#/event/globex-order-8-1`);
    await page.locator("p.error").first().waitFor();
    expect(await page.locator("main").textContent()).toContain("NotFound");
    expect(await page.locator("main").textContent()).not.toContain("globex/order-8");
    await page.goto(`${url}#/processing`);
    await page.getByText("need a token with the admin scope").waitFor();
    expect(errors).toEqual([]);
    await page.close();
  });

  it("over gRPC-Web refuses what the token may not call, as the gRPC port does, and serves no write RPC to any token (T3, A6)", async () => {
    expect(await codeOf(consoleClient(url, InspectionService).listDatabases({}))).toBe(Code.Unauthenticated);
    const inspection = consoleClient(url, InspectionService, acmeToken);
    const processing = consoleClient(url, ProcessingService, acmeToken);
    const events = consoleClient(url, EventStoreService, acmeToken);
    expect(await codeOf(inspection.listAggregateTypes({ database: "acme" }))).toBe(0);
    expect(await codeOf(inspection.listAggregateTypes({ database: "globex" }))).toBe(Code.PermissionDenied);
    expect(await codeOf(inspection.getRelayStatus({}))).toBe(Code.PermissionDenied);
    expect(await codeOf(inspection.getEvent({ eventId: "globex-order-8-1" }))).toBe(Code.NotFound);
    expect(await codeOf(events.readStream({ aggregateType: "Order", aggregateId: "acme/order-7" }))).toBe(0);
    expect(await codeOf(events.readStream({ aggregateType: "Order", aggregateId: "globex/order-8" }))).toBe(Code.PermissionDenied);
    expect(await codeOf(events.getStreamHead({ aggregateType: "Order", aggregateId: "globex/order-8" }))).toBe(Code.PermissionDenied);
    expect(await codeOf(processing.replayDeadLetters({}))).toBe(Code.PermissionDenied);
    expect(await codeOf(processing.discardDeadLetters({ reason: "no" }))).toBe(Code.PermissionDenied);
    expect(await unservedCodes(url, acmeToken)).toEqual(UNSERVED);
    expect(await unservedCodes(url, adminToken)).toEqual(UNSERVED);
  });
});

/**
 * Dead letters redriven from the console (docs/CONSOLE.md), in headless Chromium against `tidemark
 * start` in the services mode in process (server, Kafka relay, consumers on the real PostgreSQL, S3
 * and Kafka): a handler dead-letters a poison event and parks the aggregate's next one (C8) while
 * other aggregates flow; the handler is fixed; the operator replays the aggregate's sequence from
 * the processing page, and the read model gets both events, in order, once (C1, C8, C9); a discard
 * needs a reason and records it (C10); all of it through the console's gRPC-Web (A6).
 */
import { mkdir } from "node:fs/promises";
import type { JsonObject } from "@bufbuild/protobuf";
import { sql } from "kysely";
import { chromium, type Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { startProcess, type TidemarkProcess } from "../../cli/process.js";
import { createDatabase, type Database } from "../../core/db/database.js";
import { defineHandler, PoisonError } from "../../consumers/index.js";
import { EventStoreService } from "../../gen/tidemark/v1/event_store_pb.js";
import { ProcessingService, ProcessingState } from "../../gen/tidemark/v1/processing_pb.js";
import { createClient, type ClientOf } from "../../server/grpc/client.js";
import { FAST_CONSUMER_ENV } from "../helpers/consumer-env.js";
import { deleteTopics } from "../helpers/relay-kafka.js";
import { stackEnv, uniqueId } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";

const SHOTS = new URL("../../test-results/console/", import.meta.url).pathname;
const id = uniqueId("con");
const topic = `tm.${id}.events`;
const deadLetterTopic = `tm.${id}.dead-letter`;
let env: Record<string, string>;
let proc: TidemarkProcess | undefined;
let events: ClientOf<typeof EventStoreService>;
let database: Database;
let browser: Browser;
// The handler's bug: while set, an event whose data says `poison` cannot be applied.
let broken = true;

const ledger = defineHandler({
  name: "ledger",
  aggregateTypes: ["Account"],
  async handle(event, tx) {
    if (broken && (event.data as { poison?: boolean }).poison === true) throw new PoisonError(`cannot apply ${event.eventId} (the bug)`);
    await sql`insert into console_ledger (aggregate_id, seq, event_id) values (${event.aggregateId}, ${event.seq}, ${event.eventId})`.execute(tx);
  },
});

async function ledgerRows(aggregateId: string): Promise<Array<{ seq: number; event_id: string }>> {
  const { rows } = await sql<{ seq: number; event_id: string }>`select seq::int as seq, event_id from console_ledger where aggregate_id = ${aggregateId} order by applied`.execute(database.db);
  return rows;
}

beforeAll(async () => {
  await mkdir(SHOTS, { recursive: true });
  env = {
    ...stackEnv(),
    TIDEMARK_PG_SCHEMA: id,
    TIDEMARK_S3_BUCKET: `tm-${id}`,
    TIDEMARK_GRPC_ADDR: "127.0.0.1:0",
    TIDEMARK_CONSOLE_ADDR: "127.0.0.1:0",
    TIDEMARK_RELAY_NAME: id,
    TIDEMARK_RELAY_TOPIC: topic,
    TIDEMARK_RELAY_PARTITIONS: "2",
    TIDEMARK_RELAY_LEASE_MS: "4000",
    TIDEMARK_DEAD_LETTER_TOPIC: deadLetterTopic,
    TIDEMARK_CONSUMER_TOPICS: topic,
    TIDEMARK_CONSUMER_GROUP_PREFIX: `${id}.`,
    TIDEMARK_SHUTDOWN_GRACE_MS: "1000",
    TIDEMARK_LOG_LEVEL: process.env["TIDEMARK_TEST_LOG_LEVEL"] ?? "fatal",
    ...FAST_CONSUMER_ENV,
  };
  database = createDatabase({ url: env["TIDEMARK_PG_URL"]!, schema: id, poolSize: 2 });
  await sql`create schema if not exists ${sql.id(id)}`.execute(database.db);
  await sql`create table if not exists ${sql.id(id)}.console_ledger (aggregate_id text not null, seq int8 not null, event_id text primary key, applied timestamptz not null default clock_timestamp())`.execute(database.db);
  proc = await startProcess(env, { server: true, relay: "if-kafka", projection: false, handlers: [ledger] });
  events = createClient(EventStoreService, proc.grpcAddress!);
  // The relay and the consumer group start in the background: the scenario begins once they run.
  await proc.ready;
  expect(proc.parts().map((p) => p.state)).toEqual(["running", "running"]);
  browser = await chromium.launch({ executablePath: inject("chromium"), headless: true, args: ["--no-sandbox"] });
});

afterAll(async () => {
  await browser?.close();
  events?.close();
  await proc?.stop();
  await deleteTopics(env["TIDEMARK_KAFKA_BROKERS"]!.split(","), [topic, deadLetterTopic]).catch(() => {});
  if (database !== undefined) {
    await sql`drop schema if exists ${sql.id(id)} cascade`.execute(database.db);
    await database.close();
  }
});

describe("dead letters in the console", () => {
  it("replays an aggregate's dead-lettered and parked events after the fix, and the read model gets them in order", async () => {
    const account = "acme/account-1";
    const append = (n: number, data: JsonObject, aggregateId = account) =>
      events.appendEvents({ aggregateType: "Account", aggregateId, expectation: { case: "any", value: {} }, events: [{ eventId: `${aggregateId}-${n}`.replace("/", "-"), eventType: "Posted", data }] });
    await append(1, { amount: 1 });
    await append(2, { amount: 2, poison: true });
    await append(3, { amount: 3 });
    for (const n of [1, 2, 3]) await append(1, { amount: n }, `acme/other-${n}`);
    // The other aggregates flow; this one stops at the poison event.
    await waitFor(async () => (await ledgerRows("acme/other-3")).length === 1 || undefined, { what: "the other aggregates applied", timeoutMs: 120_000 });
    expect(await ledgerRows(account)).toEqual([{ seq: 1, event_id: "acme-account-1-1" }]);

    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    page.setDefaultTimeout(60_000);
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(`${proc!.server!.consoleUrl!}#/processing`);
    // Both events wait for an operator: the poison one dead-lettered, the next one parked behind it.
    const table = page.locator("#dead-letters");
    await waitFor(
      async () => {
        await page.getByRole("button", { name: "Refresh" }).last().click();
        const text = (await table.textContent({ timeout: 2000 }).catch(() => "")) ?? "";
        return (text.includes("acme-account-1-2") && text.includes("acme-account-1-3") && text.includes("parked")) || undefined;
      },
      { what: "the dead letter and the parked event listed", timeoutMs: 120_000, intervalMs: 500 },
    );
    expect(await table.textContent()).toContain("the bug");
    await page.screenshot({ path: `${SHOTS}dead-letters.png`, fullPage: true });

    broken = false;
    await table.locator("tr", { hasText: "acme-account-1-2" }).getByRole("button", { name: "Replay aggregate" }).click();
    await page.locator(".outcome", { hasText: "replay requested: 2 event(s) (acme-account-1-2, acme-account-1-3)" }).waitFor();
    await waitFor(async () => (await ledgerRows(account)).length === 3 || undefined, { what: "the replayed sequence applied", timeoutMs: 120_000 });
    expect(await ledgerRows(account)).toEqual([
      { seq: 1, event_id: "acme-account-1-1" },
      { seq: 2, event_id: "acme-account-1-2" },
      { seq: 3, event_id: "acme-account-1-3" },
    ]);
    // The console shows the event done for the handler.
    await page.goto(`${proc!.server!.consoleUrl!}#/event/acme-account-1-3`);
    await waitFor(
      async () => {
        await page.reload();
        return ((await page.locator("#processing").textContent({ timeout: 5000 }).catch(() => "")) ?? "").includes("done") || undefined;
      },
      { what: "the event shown done", timeoutMs: 60_000, intervalMs: 500 },
    );
    await page.screenshot({ path: `${SHOTS}replayed.png`, fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
    // A liveness bound for a loaded machine (Kafka deliveries, retries, the replayer), not a timing assertion.
  }, 300_000);

  it("discards a dead letter with the reason it records, and refuses a discard without one", async () => {
    broken = true;
    const account = "acme/account-2";
    for (const [n, data] of [[1, { amount: 1 }], [2, { amount: 2, poison: true }]] as const) {
      await events.appendEvents({ aggregateType: "Account", aggregateId: account, expectation: { case: "any", value: {} }, events: [{ eventId: `acme-account-2-${n}`, eventType: "Posted", data }] });
    }
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    page.setDefaultTimeout(60_000);
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(`${proc!.server!.consoleUrl!}#/event/acme-account-2-2`);
    await waitFor(
      async () => {
        await page.reload();
        return ((await page.locator("#processing").textContent({ timeout: 5000 }).catch(() => "")) ?? "").includes("dead_lettered") || undefined;
      },
      { what: "the event shown dead-lettered", timeoutMs: 120_000, intervalMs: 500 },
    );
    const row = page.locator("#processing tr", { hasText: "ledger" });
    await row.getByRole("button", { name: "Discard…" }).click();
    await row.getByRole("button", { name: "Discard", exact: true }).click();
    await row.locator(".error", { hasText: "InvalidArgument" }).waitFor();
    await row.locator("input[name=reason]").fill("refunded by hand <b>twice</b>");
    await row.getByRole("button", { name: "Discard", exact: true }).click();
    await page.locator("#processing", { hasText: "discarded" }).waitFor();
    await page.screenshot({ path: `${SHOTS}discarded.png`, fullPage: true });
    const processing = createClient(ProcessingService, proc!.grpcAddress!);
    try {
      const { deadLetter } = await processing.getDeadLetter({ handler: "ledger", eventId: "acme-account-2-2" });
      expect(deadLetter?.state).toBe(ProcessingState.DISCARDED);
      expect(deadLetter?.resolutionReason).toBe("refunded by hand <b>twice</b>");
    } finally {
      processing.close();
    }
    expect((await ledgerRows(account)).map((r) => r.event_id)).toEqual(["acme-account-2-1"]);
    expect(errors).toEqual([]);
    await page.close();
  }, 300_000);
});

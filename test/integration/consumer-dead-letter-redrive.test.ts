/**
 * Sequenced dead letters and their redrive on the real services (docs/CONTRACT.md C8–C10): the
 * server writes to PostgreSQL and S3, the relay publishes to Kafka, a handler folds each stream into
 * a read model. A poison event of one aggregate parks its successors while 50 other aggregates flow;
 * after the handler is fixed, a replay through ProcessingService applies the parked sequence in
 * order, exactly once — with two operators replaying at once and two consumers competing for the
 * replays — and the read model equals a fresh fold of the store. Also the bad input of the RPCs.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sql } from "kysely";
import { createDatabase, type Database } from "../../core/db/database.js";
import { type ConsumerDatabase } from "../../core/index.js";
import { defineHandler, PoisonError, startConsumer, type ConsumerHandle } from "../../consumers/index.js";
import { ProcessingService, ProcessingState } from "../../gen/tidemark/v1/processing_pb.js";
import type { RelayHandle } from "../../relay/index.js";
import { createClient, type ClientOf } from "../../server/grpc/client.js";
import { consumerTestConfig, consumerTestId } from "../helpers/consumer-env.js";
import { openTestKafka } from "../helpers/consumer-kafka.js";
import { badFields, collect, expectStatus, grpc } from "../helpers/grpc-errors.js";
import { startTestRelay, startTestServer, stackEnv, testServerConfig, type TestServer } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";

const id = consumerTestId("dlq");
const topic = `${id}.events`;
const deadLetterTopic = `${id}.dead-letter`;
let t: TestServer;
let relay: RelayHandle;
let database: Database<ConsumerDatabase>;
let processing: ClientOf<typeof ProcessingService>;
const consumers: ConsumerHandle[] = [];

/** The handler's bug, and its fix: until fixed, an amount that is not a number is poison. */
let fixed = false;

/** Folds one event into a running total per stream; refuses to go out of order (the read model's own check). */
async function fold(tx: any, event: { eventId: string; aggregateId: string; seq: number; data: Record<string, unknown> }): Promise<void> {
  const amount = event.data["amount"];
  if (typeof amount !== "number" && !fixed) throw new PoisonError(`amount ${JSON.stringify(amount)} is not a number`);
  const { rows } = await sql<{ seq: number; total: number }>`select seq, total from dlq_model where aggregate_id = ${event.aggregateId} for update`.execute(tx);
  const previous = rows[0];
  const expected = previous === undefined ? 1 : Number(previous.seq) + 1;
  if (event.seq !== expected) throw new PoisonError(`out of order: seq ${event.seq} after ${expected - 1}`);
  const total = (previous === undefined ? 0 : Number(previous.total)) + (typeof amount === "number" ? amount : 0);
  await sql`insert into dlq_model (aggregate_id, seq, total) values (${event.aggregateId}, ${event.seq}, ${total})
    on conflict (aggregate_id) do update set seq = excluded.seq, total = excluded.total`.execute(tx);
  await sql`insert into dlq_effects (event_id) values (${event.eventId})`.execute(tx);
}

const totals = defineHandler({ name: "totals", aggregateTypes: ["Account"], handle: (event, tx) => fold(tx, event) });

const consumerConfig = () =>
  consumerTestConfig(id, { TIDEMARK_PG_SCHEMA: t.config.pgSchema, TIDEMARK_CONSUMER_TOPICS: topic, TIDEMARK_DEAD_LETTER_TOPIC: deadLetterTopic, TIDEMARK_CONSUMER_REPLAY_POLL_MS: "50",
    // Long leases: on a loaded machine a lost lease would only add retries, and this file is about replays.
    TIDEMARK_CONSUMER_LEASE_SECONDS: "30", TIDEMARK_CONSUMER_HEARTBEAT_SECONDS: "5" });

async function append(aggregateId: string, amounts: Array<number | string>, from: number): Promise<void> {
  await t.events.appendEvents({
    aggregateType: "Account",
    aggregateId,
    expectation: { case: "expectedSeq", value: BigInt(from - 1) },
    events: amounts.map((amount, i) => ({ eventId: `${id}-${aggregateId.replace("/", "-")}-${from + i}`, eventType: "Deposited", data: { amount } })),
  });
}

const row = async (eventId: string) => (await database.db.selectFrom("processed_events").selectAll().where("handler", "=", "totals").where("event_id", "=", eventId).executeTakeFirst()) ?? undefined;

beforeAll(async () => {
  const serverConfig = testServerConfig();
  t = await startTestServer(serverConfig);
  database = createDatabase<ConsumerDatabase>({ url: stackEnv()["TIDEMARK_PG_URL"]!, schema: serverConfig.pgSchema, poolSize: 4 });
  await sql`create table dlq_model (aggregate_id text primary key, seq bigint not null, total bigint not null)`.execute(database.db);
  await sql`create table dlq_effects (event_id text not null)`.execute(database.db);
  processing = createClient(ProcessingService, t.server.address) as ClientOf<typeof ProcessingService>;
  relay = await startTestRelay(serverConfig, topic, deadLetterTopic);
  await append("acme/warmup", [1], 1);
  await waitFor(() => relay.status().topicsReady && relay.status().published > 0, { what: "the relay to publish" });
  // Two consumers of the handler in one group: both poll for replays and compete for them.
  for (let i = 0; i < 2; i++) consumers.push(await startConsumer(consumerConfig(), totals, { housekeeping: false, owner: `dlq-${i}` }));
}, 120_000);

afterAll(async () => {
  for (const c of consumers) await c.stop();
  processing?.close();
  await relay?.stop();
  await database?.close();
  await t?.close();
  await (await openTestKafka(`${id}.`)).close();
});

describe("C8 sequenced dead letters, C9 replay, C10 discard", () => {
  it("parks a poisoned aggregate's successors while 50 others flow; a replay after the fix applies them in order, exactly once", async () => {
    // The poisoned aggregate: seq 3 is poison until the fix, 4..6 come after it.
    await append("acme/poisoned", [10, 20, "x", 40], 1);
    const others = Array.from({ length: 50 }, (_, i) => `acme/other-${i}`);
    await Promise.all(others.map((a) => append(a, [1, 2, 3], 1)));
    await append("acme/poisoned", [50, 60], 5);
    await Promise.all(others.map((a) => append(a, [4], 4)));

    const ev = (n: number) => `${id}-acme-poisoned-${n}`;
    await waitFor(async () => (await row(ev(3)))?.state === "dead_lettered", { what: "seq 3 to be dead-lettered" });
    for (const n of [4, 5, 6]) await waitFor(async () => (await row(ev(n)))?.state === "parked", { what: `seq ${n} to be parked` });
    // The other aggregates flowed to their end.
    await waitFor(async () => {
      const { rows } = await sql<{ n: number }>`select count(*)::integer as n from dlq_model where aggregate_id like 'acme/other-%' and seq = 4`.execute(database.db);
      return rows[0]!.n === 50;
    }, { timeoutMs: 60_000, what: "the 50 other aggregates to be applied" });
    expect(await sql<{ seq: number }>`select seq from dlq_model where aggregate_id = 'acme/poisoned'`.execute(database.db).then((r) => Number(r.rows[0]!.seq))).toBe(2);
    expect(await row(ev(4))).toMatchObject({ parked_behind: ev(3), message: expect.objectContaining({ topic }) });

    // What the operator sees.
    const listed = await processing.listDeadLetters({ handler: "totals" });
    expect(listed.deadLetters.map((d) => [d.eventId, d.state])).toEqual([
      [ev(3), ProcessingState.DEAD_LETTERED],
      [ev(4), ProcessingState.PARKED],
      [ev(5), ProcessingState.PARKED],
      [ev(6), ProcessingState.PARKED],
    ]);
    expect(listed.deadLetters[0]).toMatchObject({ attempts: 1, cause: expect.stringContaining("is not a number") });
    expect(listed.deadLetters[0]!.firstFailedAt).toBeDefined();
    expect(listed.deadLetters[0]!.lastFailedAt).toBeDefined();
    expect(listed.counts).toEqual([expect.objectContaining({ handler: "totals", deadLettered: 1n, parked: 3n })]);
    const shown = await processing.getDeadLetter({ handler: "totals", eventId: ev(3) });
    expect(JSON.parse(Buffer.from(shown.messageValue).toString("utf8"))).toMatchObject({ event_id: ev(3) });
    const status = await processing.getProcessingStatus({ key: { case: "eventId", value: ev(5) } });
    expect(status.events[0]!.handlers).toEqual([expect.objectContaining({ handler: "totals", state: ProcessingState.PARKED })]);
    expect(status.handlerCounts).toEqual([expect.objectContaining({ handler: "totals", parked: 3n })]);
    const waiting = await consumers[0]!.metrics.waiting.get();
    await waitFor(async () => (await consumers[0]!.metrics.waiting.get()).values.some((v) => v.labels["state"] === "parked" && v.value === 3), { what: "the parked gauge" });
    expect(waiting.values.length).toBeGreaterThan(0);

    // One event alone cannot jump its dead letter.
    await expectStatus(processing.replayDeadLetters({ selection: { handler: "totals", target: { case: "eventId", value: ev(5) } } }), grpc.status.FAILED_PRECONDITION);

    // The fix, then two operators replay the aggregate at once: one request wins, the other finds nothing left.
    fixed = true;
    const selection = { handler: "totals", target: { case: "aggregate" as const, value: { aggregateType: "Account", aggregateId: "acme/poisoned" } } };
    const results = await Promise.allSettled([processing.replayDeadLetters({ selection }), processing.replayDeadLetters({ selection })]);
    const won = results.filter((r) => r.status === "fulfilled");
    expect(won).toHaveLength(1);
    expect((won[0] as PromiseFulfilledResult<{ eventIds: string[] }>).value.eventIds).toEqual([ev(3), ev(4), ev(5), ev(6)]);
    const lost = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    expect(grpc.status[(lost.reason as grpc.ServiceError).code]).toBe("FAILED_PRECONDITION");
    // A replay of an already requested event is refused too.
    await expectStatus(processing.replayDeadLetters({ selection: { handler: "totals", target: { case: "eventId", value: ev(3) } } }), grpc.status.FAILED_PRECONDITION);

    for (const n of [3, 4, 5, 6]) await waitFor(async () => (await row(ev(n)))?.state === "done", { timeoutMs: 30_000, what: `seq ${n} to be replayed` });
    expect(await row(ev(3))).toMatchObject({ replays: 1, attempts: 1 });

    // Exactly once: every event of the store has one effect.
    const { rows: effects } = await sql<{ event_id: string; n: number }>`select event_id, count(*)::integer as n from dlq_effects group by event_id`.execute(database.db);
    expect(effects.filter((e) => e.n !== 1)).toEqual([]);
    expect(effects).toHaveLength(1 + 6 + 50 * 4);

    // The read model equals a fresh fold of the store (ReadStream, the fixed handler's rules).
    const { rows: model } = await sql<{ aggregate_id: string; seq: number; total: number }>`select aggregate_id, seq, total from dlq_model order by aggregate_id`.execute(database.db);
    const rebuilt = [];
    for (const aggregateId of ["acme/poisoned", "acme/warmup", ...others].sort()) {
      const events = await collect(t.events.readStream({ aggregateType: "Account", aggregateId }));
      let total = 0;
      for (const { event } of events) total += typeof event!.data!["amount"] === "number" ? (event!.data!["amount"] as number) : 0;
      rebuilt.push({ aggregate_id: aggregateId, seq: events.length, total });
    }
    expect(model.map((m) => ({ aggregate_id: m.aggregate_id, seq: Number(m.seq), total: Number(m.total) }))).toEqual(rebuilt);
    expect((await processing.listDeadLetters({ handler: "totals" })).deadLetters).toEqual([]);

    // A later event of the aggregate flows again.
    await append("acme/poisoned", [70], 7);
    await waitFor(async () => (await row(ev(7)))?.state === "done", { what: "seq 7 to be applied" });
  }, 180_000);

  it("discards with who and why; a discarded dead letter keeps its successors parked until they are resolved too", async () => {
    fixed = false;
    await append("acme/discard", [1, "bad", 3], 1);
    const ev = (n: number) => `${id}-acme-discard-${n}`;
    await waitFor(async () => (await row(ev(3)))?.state === "parked", { what: "seq 3 to be parked" });

    const missingReason = await expectStatus(processing.discardDeadLetters({ selection: { handler: "totals", target: { case: "eventId", value: ev(2) } }, reason: " " }), grpc.status.INVALID_ARGUMENT);
    expect(badFields(missingReason)).toEqual(["reason"]);
    const discarded = await processing.discardDeadLetters({ selection: { handler: "totals", target: { case: "eventId", value: ev(2) } }, reason: "a typo, corrected by a later deposit" });
    expect(discarded.eventIds).toEqual([ev(2)]);
    expect((await processing.getDeadLetter({ handler: "totals", eventId: ev(2) })).deadLetter).toMatchObject({ state: ProcessingState.DISCARDED, resolutionReason: "a typo, corrected by a later deposit" });
    expect(await row(ev(3))).toMatchObject({ state: "parked" });

    // A resolved event is not replayed; its parked successor can be discarded (or replayed) in turn.
    await expectStatus(processing.replayDeadLetters({ selection: { handler: "totals", target: { case: "eventId", value: ev(2) } } }), grpc.status.FAILED_PRECONDITION);
    const rest = await processing.discardDeadLetters({ selection: { handler: "totals", target: { case: "aggregate", value: { aggregateType: "Account", aggregateId: "acme/discard" } } }, reason: "superseded" });
    expect(rest.eventIds).toEqual([ev(3)]);
    expect(await row(ev(3))).toMatchObject({ state: "discarded", resolution_reason: "superseded", resolved_at: expect.any(Date) });
    expect((await processing.listDeadLetters({ handler: "totals", aggregate: { aggregateType: "Account", aggregateId: "acme/discard" } })).deadLetters).toEqual([]);
    const { rows: applied } = await sql<{ n: number }>`select count(*)::integer as n from dlq_effects where event_id like ${`${id}-acme-discard-%`}`.execute(database.db);
    expect(applied[0]!.n).toBe(1);
  }, 60_000);

  it("answers bad input: FAILED_PRECONDITION, NOT_FOUND, INVALID_ARGUMENT naming the field", async () => {
    const warm = `${id}-acme-warmup-1`;
    await waitFor(async () => (await row(warm))?.state === "done", { what: "the warm-up event" });
    await expectStatus(processing.replayDeadLetters({ selection: { handler: "totals", target: { case: "eventId", value: warm } } }), grpc.status.FAILED_PRECONDITION);
    await expectStatus(processing.replayDeadLetters({ selection: { handler: "no-such-handler", target: { case: "all", value: true } } }), grpc.status.NOT_FOUND);
    await expectStatus(processing.replayDeadLetters({ selection: { handler: "totals", target: { case: "eventId", value: `${id}-unknown` } } }), grpc.status.NOT_FOUND);
    await expectStatus(processing.listDeadLetters({ handler: "no-such-handler" }), grpc.status.NOT_FOUND);
    await expectStatus(processing.getDeadLetter({ handler: "totals", eventId: `${id}-unknown` }), grpc.status.NOT_FOUND);
    expect(badFields(await expectStatus(processing.replayDeadLetters({ selection: { handler: "totals", target: { case: undefined } } }), grpc.status.INVALID_ARGUMENT))).toEqual(["selection.target"]);
    expect(badFields(await expectStatus(processing.replayDeadLetters({}), grpc.status.INVALID_ARGUMENT))).toEqual(["selection"]);
    expect(badFields(await expectStatus(processing.discardDeadLetters({ selection: { handler: "totals", target: { case: "all", value: true } } }), grpc.status.INVALID_ARGUMENT))).toEqual(["reason"]);
  });
});

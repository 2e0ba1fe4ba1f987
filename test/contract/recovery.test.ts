/**
 * Crashes, lost allocations and outages against real PostgreSQL and S3Proxy: docs/CONTRACT.md W5, W6,
 * and "S3 / PostgreSQL unreachable → UNAVAILABLE, nothing acknowledged".
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sql } from "kysely";
import { decodeSlot } from "../../core/envelope.js";
import { slotKey, streamPrefix } from "../../core/ids.js";
import { ConcurrencyConflictSchema } from "../../gen/tidemark/v1/errors_pb.js";
import { collect, expectStatus, findDetail, grpc } from "../helpers/grpc-errors.js";
import { startTestServer, testServerConfig, type TestServer } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";
import type { SlotRow } from "../../core/event-log.js";

const DEADLINE_MS = 1500;
const fastSweep = { TIDEMARK_WRITE_DEADLINE_MS: String(DEADLINE_MS), TIDEMARK_SWEEP_INTERVAL_MS: "100" };
const event = (eventId: string, data: Record<string, unknown> = { n: 1 }) => ({ eventId, eventType: "Noted", data: data as never });

/** Hooks that tests arm per event id: a gate holds a writer, a crash makes it die. */
const gates = new Map<string, Promise<void>>();
const crashAfterWrite = new Set<string>();
async function beforeWrite(slot: SlotRow) {
  await gates.get(slot.eventId);
}
async function afterWrite(slot: SlotRow) {
  if (crashAfterWrite.has(slot.eventId)) throw new Error(`injected crash after writing ${slot.eventId}`);
}

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer(testServerConfig(fastSweep), { beforeWrite, afterWrite });
});
afterAll(async () => {
  await t?.close();
});

async function slotState(eventId: string): Promise<string | undefined> {
  const row = await t.server.database.db
    .selectFrom("event_log")
    .select("state")
    .where("event_id", "=", eventId)
    .orderBy("log_id", "desc")
    .executeTakeFirst();
  return row?.state;
}

describe("W5 no unexplained gaps", () => {
  it("voids a slot whose writer stalled before the S3 write, within the deadline, and the late write fails", async () => {
    let release!: () => void;
    gates.set("w5-stall", new Promise<void>((r) => (release = r)));
    const started = Date.now();
    const late = t.events.appendEvents({ aggregateType: "Task", aggregateId: "w5a", expectation: { case: "noStream", value: {} }, events: [event("w5-stall")] });
    late.catch(() => {});

    await waitFor(async () => (await slotState("w5-stall")) === "void", { timeoutMs: DEADLINE_MS + 5000, what: "the slot to be voided" });
    expect(Date.now() - started).toBeGreaterThanOrEqual(DEADLINE_MS);
    const marker = decodeSlot((await t.server.objects.get(slotKey("Task", "w5a", 1)))!);
    expect(marker.type).toBe("void");

    release();
    const error = await expectStatus(late, grpc.status.UNAVAILABLE);
    expect(error.details).toMatch(/slot was closed/);
    expect(decodeSlot((await t.server.objects.get(slotKey("Task", "w5a", 1)))!).type).toBe("void");

    // The void slot counts toward the head; the stream reads empty and moves on normally.
    const head = await t.events.getStreamHead({ aggregateType: "Task", aggregateId: "w5a" });
    expect(head).toMatchObject({ head: 1n, allocated: 1n });
    expect(await collect(t.events.readStream({ aggregateType: "Task", aggregateId: "w5a" }))).toEqual([]);
    gates.delete("w5-stall");
    const retry = await t.events.appendEvents({ aggregateType: "Task", aggregateId: "w5a", expectation: { case: "expectedSeq", value: 1n }, events: [event("w5-stall")] });
    expect(retry.events[0]!.sequenceNumber).toBe(2n);
    const read = await collect(t.events.readStream({ aggregateType: "Task", aggregateId: "w5a" }));
    expect(read.map((r) => [r.event!.eventId, r.event!.sequenceNumber])).toEqual([["w5-stall", 2n]]);
  });

  it("commits a slot whose writer died after the S3 write", async () => {
    crashAfterWrite.add("w5-died");
    await expectStatus(
      t.events.appendEvents({ aggregateType: "Task", aggregateId: "w5b", expectation: { case: "noStream", value: {} }, events: [event("w5-died")] }),
      grpc.status.INTERNAL,
    );
    expect(await slotState("w5-died")).toBe("pending");
    await waitFor(async () => (await slotState("w5-died")) === "committed", { timeoutMs: DEADLINE_MS + 5000, what: "the slot to be committed" });
    const read = await collect(t.events.readStream({ aggregateType: "Task", aggregateId: "w5b" }));
    expect(read.map((r) => r.event!.eventId)).toEqual(["w5-died"]);
    expect(read[0]!.event!.globalPosition).toBeGreaterThan(0n);
  });

  it("commits a later slot only after its stalled predecessor is resolved (per-aggregate order)", async () => {
    let release!: () => void;
    gates.set("w5-first", new Promise<void>((r) => (release = r)));
    const first = t.events.appendEvents({ aggregateType: "Task", aggregateId: "w5c", expectation: { case: "any", value: {} }, events: [event("w5-first")] });
    first.catch(() => {});
    await waitFor(async () => (await slotState("w5-first")) === "pending", { what: "the first reservation" });
    const second = await t.events.appendEvents({ aggregateType: "Task", aggregateId: "w5c", expectation: { case: "any", value: {} }, events: [event("w5-second")] });
    expect(second.events[0]!.sequenceNumber).toBe(2n);
    expect(await slotState("w5-first")).toBe("void");
    release();
    await expectStatus(first, grpc.status.UNAVAILABLE);
  });
});

describe("W6 PostgreSQL is a cache of S3", () => {
  it("never overwrites after allocations are lost, re-synchronises the head and answers ABORTED", async () => {
    const id = "w6a";
    for (let i = 0; i < 3; i++) {
      await t.events.appendEvents({ aggregateType: "Task", aggregateId: id, expectation: { case: "expectedSeq", value: BigInt(i) }, events: [event(`w6a-${i}`)] });
    }
    const before = await Promise.all([1, 2, 3].map((s) => t.server.objects.get(slotKey("Task", id, s))));
    await sql`truncate stream_heads`.execute(t.server.database.db);

    const error = await expectStatus(
      t.events.appendEvents({ aggregateType: "Task", aggregateId: id, expectation: { case: "noStream", value: {} }, events: [event("w6a-new")] }),
      grpc.status.ABORTED,
    );
    expect(findDetail(error, ConcurrencyConflictSchema)).toMatchObject({ expectedSeq: 0n, actualSeq: 3n });
    expect(await Promise.all([1, 2, 3].map((s) => t.server.objects.get(slotKey("Task", id, s))))).toEqual(before);
    expect(await t.server.objects.list(streamPrefix("Task", id))).toHaveLength(3);

    const head = await t.events.getStreamHead({ aggregateType: "Task", aggregateId: id });
    expect(head.allocated).toBe(3n);
    const next = await t.events.appendEvents({ aggregateType: "Task", aggregateId: id, expectation: { case: "expectedSeq", value: 3n }, events: [event("w6a-new")] });
    expect(next.events[0]!.sequenceNumber).toBe(4n);
  });

  it("rebuilds a lost commit log for the stream from S3", async () => {
    const id = "w6b";
    for (let i = 0; i < 2; i++) {
      await t.events.appendEvents({ aggregateType: "Task", aggregateId: id, expectation: { case: "expectedSeq", value: BigInt(i) }, events: [event(`w6b-${i}`)] });
    }
    await sql`delete from event_log where aggregate_id = ${id}`.execute(t.server.database.db);
    await sql`delete from stream_heads where aggregate_id = ${id}`.execute(t.server.database.db);

    await expectStatus(
      t.events.appendEvents({ aggregateType: "Task", aggregateId: id, expectation: { case: "noStream", value: {} }, events: [event("w6b-new")] }),
      grpc.status.ABORTED,
    );
    const read = await collect(t.events.readStream({ aggregateType: "Task", aggregateId: id }));
    expect(read.map((r) => r.event!.eventId)).toEqual(["w6b-0", "w6b-1"]);
  });
});

/**
 * Crashes, lost allocations and outages against real PostgreSQL and S3Proxy: docs/CONTRACT.md W5, W6,
 * and "S3 / PostgreSQL unreachable → UNAVAILABLE, nothing acknowledged".
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sql } from "kysely";
import { create } from "@bufbuild/protobuf";
import { openBackends } from "../../core/backends.js";
import { contentHash, decodeSlot, encodeEnvelope, ENVELOPE_CONTENT_TYPE, EventEnvelopeSchema, EventKind } from "../../core/envelope.js";
import type { ObjectStore } from "../../core/object-store.js";
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

describe("W6 with a writer appending meanwhile (found by the chaos harness)", () => {
  it("hands slots that S3 says hold lost events over in place, so an append made meanwhile cannot overtake them on the log (R2)", async () => {
    // A PostgreSQL crash lost a reservation whose objects had been written: S3 holds events at
    // seqs 2-4 that the log does not know, and the head fell back to 1.
    const config = testServerConfig(fastSweep);
    const backends = await openBackends(config);
    let releaseList!: () => void;
    const listGate = new Promise<void>((r) => (releaseList = r));
    let listed!: () => void;
    const listCalled = new Promise<void>((r) => (listed = r));
    let yWritten!: () => void;
    const yInS3 = new Promise<void>((r) => (yWritten = r));
    // The resync lists the stream's keys: held there, it is as slow as the chaos run's S3 was.
    const objects: ObjectStore = {
      createIfAbsent: (key, body, type) => backends.objects.createIfAbsent(key, body, type),
      get: (key) => backends.objects.get(key),
      read: (key, range) => backends.objects.read(key, range),
      requests: backends.objects.requests,
      list: async (prefix) => {
        listed();
        await listGate;
        return backends.objects.list(prefix);
      },
      ensureReady: () => backends.objects.ensureReady(),
      close: () => {},
    };
    const s = await startTestServer(config, {
      database: backends.database,
      objects,
      listen: backends.listen,
      afterWrite: async (slot) => {
        if (slot.eventId === "y-5") yWritten();
      },
    });
    try {
      const id = "w6c";
      await s.events.appendEvents({ aggregateType: "Task", aggregateId: id, expectation: { case: "noStream", value: {} }, events: [event("w6c-1")] });
      for (const seq of [2, 3, 4]) {
        const data = { lost: seq };
        const envelope = create(EventEnvelopeSchema, {
          eventId: `lost-${seq}`,
          eventType: "Noted",
          aggregateType: "Task",
          aggregateId: id,
          sequenceNumber: BigInt(seq),
          data,
          metadata: { kind: "domain" },
          schemaVersion: 1,
          kind: EventKind.DOMAIN,
          contentHash: contentHash({ eventType: "Noted", aggregateType: "Task", aggregateId: id, data, metadata: { kind: "domain" }, schemaVersion: 1, kind: EventKind.DOMAIN }),
        });
        expect(await backends.objects.createIfAbsent(slotKey("Task", id, seq), encodeEnvelope(envelope), ENVELOPE_CONTENT_TYPE)).toBe("created");
      }

      // X reserves 2-4, finds them taken in S3, and its resync is held.
      const x = s.events
        .appendEvents({ aggregateType: "Task", aggregateId: id, expectation: { case: "any", value: {} }, events: [event("x-2"), event("x-3"), event("x-4")] })
        .then(
          () => "ok",
          (e: grpc.ServiceError) => grpc.status[e.code],
        );
      await listCalled;
      // Y appends after X's reservation: seq 5, written to S3 while X's resync waits.
      const y = s.events.appendEvents({ aggregateType: "Task", aggregateId: id, expectation: { case: "any", value: {} }, events: [event("y-5")] });
      await yInS3;
      releaseList();
      expect(await x).toBe("ABORTED");
      expect((await y).events[0]!.sequenceNumber).toBe(5n);

      const read = await collect(s.events.readStream({ aggregateType: "Task", aggregateId: id }));
      expect(read.map((r) => r.event!.eventId)).toEqual(["w6c-1", "lost-2", "lost-3", "lost-4", "y-5"]);
      // Position order is seq order: the relay publishes lost-2..4 before y-5.
      const positions = read.map((r) => Number(r.event!.globalPosition));
      expect(positions).toEqual([...positions].sort((a, b) => a - b));
    } finally {
      releaseList();
      await s.close();
      await backends.close();
    }
  });
});

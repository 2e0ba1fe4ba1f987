/**
 * Crashes, lost allocations and outages against real PostgreSQL and S3Proxy: docs/CONTRACT.md W5, W6,
 * and "S3 / PostgreSQL unreachable → UNAVAILABLE, nothing acknowledged".
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Kysely, sql } from "kysely";
import { create } from "@bufbuild/protobuf";
import { openBackends } from "../../core/backends.js";
import type { WriteSideTables } from "../../core/db/schema.js";
import { contentHash, encodeEnvelope, EventEnvelopeSchema, EventKind } from "../../core/envelope.js";
import { lastPosition, selectSlots, toSlotRow } from "../../core/event-log.js";
import type { ObjectStore } from "../../core/object-store.js";
import { decodeSegmentHeader, encodeSegment, SEGMENT_CONTENT_TYPE, segmentKey } from "../../core/segment.js";
import { lastSegment } from "../../core/segment-log.js";
import { storedEvents, storedSegments } from "../helpers/stored-events.js";
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

async function slotRow(eventId: string): Promise<SlotRow | undefined> {
  const row = await selectSlots(t.server.database.db).where("event_id", "=", eventId).orderBy("log_id", "desc").executeTakeFirst();
  return row === undefined ? undefined : toSlotRow(row);
}

async function slotState(eventId: string): Promise<string | undefined> {
  return (await slotRow(eventId))?.state;
}

describe("W5 no unexplained gaps", () => {
  it("voids a segment whose writer stalled before the S3 write, within the deadline, and the late write fails", async () => {
    let release!: () => void;
    gates.set("w5-stall", new Promise<void>((r) => (release = r)));
    const started = Date.now();
    const late = t.events.appendEvents({ aggregateType: "Task", aggregateId: "w5a", expectation: { case: "noStream", value: {} }, events: [event("w5-stall")] });
    late.catch(() => {});

    await waitFor(async () => (await slotState("w5-stall")) === "void", { timeoutMs: DEADLINE_MS + 5000, what: "the slot to be voided" });
    expect(Date.now() - started).toBeGreaterThanOrEqual(DEADLINE_MS);
    // The segment number the stalled flush took is closed in S3 by a void segment.
    const key = segmentKey((await slotRow("w5-stall"))!.segment!);
    expect(decodeSegmentHeader((await t.server.objects.read(key))!).type).toBe("void");

    release();
    const error = await expectStatus(late, grpc.status.UNAVAILABLE);
    expect(error.details).toMatch(/segment was closed/);
    expect(decodeSegmentHeader((await t.server.objects.read(key))!).type).toBe("void");
    expect(await storedEvents(t.server.objects, { aggregateType: "Task", aggregateId: "w5a" })).toEqual([]);

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

  it("commits the events of a segment whose writer died after the S3 write", async () => {
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
  it("never overwrites after stream heads are lost, re-synchronises the head and answers ABORTED", async () => {
    const id = "w6a";
    for (let i = 0; i < 3; i++) {
      await t.events.appendEvents({ aggregateType: "Task", aggregateId: id, expectation: { case: "expectedSeq", value: BigInt(i) }, events: [event(`w6a-${i}`)] });
    }
    const before = await storedEvents(t.server.objects, { aggregateType: "Task", aggregateId: id });
    expect(before).toHaveLength(3);
    await sql`truncate stream_heads`.execute(t.server.database.db);

    const error = await expectStatus(
      t.events.appendEvents({ aggregateType: "Task", aggregateId: id, expectation: { case: "noStream", value: {} }, events: [event("w6a-new")] }),
      grpc.status.ABORTED,
    );
    expect(findDetail(error, ConcurrencyConflictSchema)).toMatchObject({ expectedSeq: 0n, actualSeq: 3n });
    expect(await storedEvents(t.server.objects, { aggregateType: "Task", aggregateId: id })).toEqual(before);

    const head = await t.events.getStreamHead({ aggregateType: "Task", aggregateId: id });
    expect(head.allocated).toBe(3n);
    const next = await t.events.appendEvents({ aggregateType: "Task", aggregateId: id, expectation: { case: "expectedSeq", value: 3n }, events: [event("w6a-new")] });
    expect(next.events[0]!.sequenceNumber).toBe(4n);
  });
});

/**
 * PostgreSQL restored from an older backup: the rows, heads, positions and segment numbers written
 * after the backup are gone, while S3 holds the segments written since. Done here by deleting what
 * came after a point, on a server of its own (schema and bucket).
 */
describe("W6 PostgreSQL restored from an older backup", () => {
  async function restoreTo(db: Kysely<WriteSideTables>, backup: { segment: number; position: number; heads: ReadonlyArray<{ aggregate_type: string; aggregate_id: string; head: number }> }) {
    await sql`delete from event_log where segment > ${backup.segment} or segment is null`.execute(db);
    await sql`delete from segments where segment > ${backup.segment}`.execute(db);
    await sql`select setval(pg_get_serial_sequence('segments', 'segment'), ${Math.max(backup.segment, 1)}, ${backup.segment > 0})`.execute(db);
    await sql`update global_counter set position = ${backup.position} where id = 1`.execute(db);
    await sql`delete from stream_heads`.execute(db);
    for (const h of backup.heads) await sql`insert into stream_heads (aggregate_type, aggregate_id, head) values (${h.aggregate_type}, ${h.aggregate_id}, ${h.head})`.execute(db);
  }
  async function backupOf(db: Kysely<WriteSideTables>) {
    const heads = (await sql<{ aggregate_type: string; aggregate_id: string; head: number }>`select aggregate_type, aggregate_id, head from stream_heads`.execute(db)).rows;
    return { segment: await lastSegment(db), position: await lastPosition(db), heads };
  }
  const ids = async (s: TestServer, aggregateId: string) => (await collect(s.events.readStream({ aggregateType: "Task", aggregateId }))).map((r) => r.event!.eventId);

  it("re-synchronises from the segments when a new number's key exists, answers ABORTED, and never overwrites", async () => {
    const s = await startTestServer(testServerConfig(fastSweep));
    try {
      const db = s.server.database.db;
      await s.events.appendEvents({ aggregateType: "Task", aggregateId: "r1", expectation: { case: "noStream", value: {} }, events: [event("r1-1")] });
      const backup = await backupOf(db);
      await s.events.appendEvents({ aggregateType: "Task", aggregateId: "r1", expectation: { case: "expectedSeq", value: 1n }, events: [event("r1-2"), event("r1-3")] });
      await s.events.appendEvents({ aggregateType: "Task", aggregateId: "r2", expectation: { case: "noStream", value: {} }, events: [event("r2-1")] });
      const inS3 = await storedSegments(s.server.objects);
      await restoreTo(db, backup);
      expect(await ids(s, "r1")).toEqual(["r1-1"]);

      // The next append takes a number S3 already holds: 412, resync, then ABORTED (its seq 2 is taken).
      const error = await expectStatus(
        s.events.appendEvents({ aggregateType: "Task", aggregateId: "r1", expectation: { case: "expectedSeq", value: 1n }, events: [event("r1-other")] }),
        grpc.status.ABORTED,
      );
      expect(findDetail(error, ConcurrencyConflictSchema)).toMatchObject({ aggregateId: "r1" });
      expect(await storedSegments(s.server.objects)).toEqual(inS3);
      await waitFor(async () => (await ids(s, "r2")).length === 1, { what: "the re-synchronised events to commit" });
      expect(await ids(s, "r1")).toEqual(["r1-1", "r1-2", "r1-3"]);
      expect(await ids(s, "r2")).toEqual(["r2-1"]);
      expect((await s.events.getStreamHead({ aggregateType: "Task", aggregateId: "r1" })).allocated).toBe(3n);

      // The counter moved past S3's last segment: the retry lands in a new one.
      const next = await s.events.appendEvents({ aggregateType: "Task", aggregateId: "r1", expectation: { case: "expectedSeq", value: 3n }, events: [event("r1-other")] });
      expect(next.events[0]!.sequenceNumber).toBe(4n);
      expect((await storedSegments(s.server.objects)).length).toBe(inS3.length + 1);
      const positions = [...(await collect(s.events.readStream({ aggregateType: "Task", aggregateId: "r1" })))].map((r) => Number(r.event!.globalPosition));
      expect(positions).toEqual([...positions].sort((a, b) => a - b));
    } finally {
      await s.close();
    }
  });

  it("brings in the segments S3 holds beyond the log at start, before serving", async () => {
    const config = testServerConfig(fastSweep);
    const backends = await openBackends(config);
    let s = await startTestServer(config, { database: backends.database, objects: backends.objects, listen: backends.listen });
    try {
      const db = backends.database.db;
      const backup = await backupOf(db);
      await s.events.appendEvents({ aggregateType: "Task", aggregateId: "r3", expectation: { case: "noStream", value: {} }, events: [event("r3-1"), event("r3-2")] });
      await s.stop();
      await restoreTo(db, backup);
      s = await startTestServer(config, { database: backends.database, objects: backends.objects, listen: backends.listen });
      await waitFor(async () => (await ids(s, "r3")).length === 2, { what: "the segments found at start to commit" });
      expect(await ids(s, "r3")).toEqual(["r3-1", "r3-2"]);
      const next = await s.events.appendEvents({ aggregateType: "Task", aggregateId: "r3", expectation: { case: "expectedSeq", value: 2n }, events: [event("r3-3")] });
      expect(next.events[0]!.sequenceNumber).toBe(3n);
    } finally {
      await s.close();
      await backends.close();
    }
  });
});

describe("W6 with a writer appending meanwhile (found by the chaos harness)", () => {
  it("hands slots that S3 says hold lost events over in place, so an append made meanwhile cannot overtake them on the log (R2)", async () => {
    // A PostgreSQL crash lost a segment number and the reservation it held: S3 holds a segment with
    // events at seqs 2-4 that the log does not know, and the counter and the head fell back.
    const config = testServerConfig(fastSweep);
    const backends = await openBackends(config);
    let holdList = false;
    let releaseList!: () => void;
    const listGate = new Promise<void>((r) => (releaseList = r));
    let listed!: () => void;
    const listCalled = new Promise<void>((r) => (listed = r));
    let yWritten!: () => void;
    const yInS3 = new Promise<void>((r) => (yWritten = r));
    // The resync lists the bucket's segments: held there, it is as slow as the chaos run's S3 was.
    const objects: ObjectStore = {
      createIfAbsent: (key, body, type) => backends.objects.createIfAbsent(key, body, type),
      get: (key) => backends.objects.get(key),
      read: (key, range) => backends.objects.read(key, range),
      requests: backends.objects.requests,
      list: async (prefix, startAfter) => {
        if (holdList) {
          listed();
          await listGate;
        }
        return backends.objects.list(prefix, startAfter);
      },
      ensureReady: () => backends.objects.ensureReady(),
      close: () => {},
    };
    const s = await startTestServer(config, { database: backends.database, objects, listen: backends.listen });
    // A second server writes Y meanwhile (the first holds new flushes while it re-synchronises).
    const other = await startTestServer(config, {
      database: backends.database,
      objects: backends.objects,
      listen: backends.listen,
      afterWrite: async (slot) => {
        if (slot.eventId === "y-5") yWritten();
      },
    });
    try {
      const id = "w6c";
      await s.events.appendEvents({ aggregateType: "Task", aggregateId: id, expectation: { case: "noStream", value: {} }, events: [event("w6c-1")] });
      // The number the next flush takes: drawn, then given back, so the flush draws it again.
      const { rows } = await sql<{ n: number }>`select nextval(pg_get_serial_sequence('segments', 'segment')) as n`.execute(backends.database.db);
      const lost = Number(rows[0]!.n);
      await sql`select setval(pg_get_serial_sequence('segments', 'segment'), ${lost}, false)`.execute(backends.database.db);
      const lines = [2, 3, 4].map((seq) => {
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
        return { eventId: `lost-${seq}`, aggregateType: "Task", aggregateId: id, seq, json: encodeEnvelope(envelope) };
      });
      expect(await backends.objects.createIfAbsent(segmentKey(lost), encodeSegment(lost, new Date(), lines).body, SEGMENT_CONTENT_TYPE)).toBe("created");

      // X reserves 2-4, its segment number is the lost one: 412, and its resync is held.
      holdList = true;
      const x = s.events
        .appendEvents({ aggregateType: "Task", aggregateId: id, expectation: { case: "any", value: {} }, events: [event("x-2"), event("x-3"), event("x-4")] })
        .then(
          () => "ok",
          (e: grpc.ServiceError) => grpc.status[e.code],
        );
      await listCalled;
      // Y appends after X's reservation: seq 5, written to S3 while X's resync waits.
      const y = other.events.appendEvents({ aggregateType: "Task", aggregateId: id, expectation: { case: "any", value: {} }, events: [event("y-5")] });
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
      await other.close();
      await s.close();
      await backends.close();
    }
  });
});

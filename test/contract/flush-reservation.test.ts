/**
 * A flush reserves its appends together (core/db/functions/reserve_segment.sql): the appends queued
 * while a segment PUT is out are reserved in one transaction, into the segment the flush writes,
 * each decided on its own as if reserved alone (W3, W4, W7) — and what that transaction cannot
 * decide (a head behind the log, W6) is reserved alone and still lands. Multi-stream calls
 * (AppendToStreams, W8) are reserved by their flush too, among the appends in queue order. Both storages.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConcurrencyConflictSchema, ConsistencyConflictSchema } from "../../gen/tidemark/v1/errors_pb.js";
import type { SlotRow } from "../../core/event-log.js";
import { segmentKey } from "../../core/segment.js";
import { verifyStore } from "../../server/verify.js";
import { expectStatus, findDetail, grpc } from "../helpers/grpc-errors.js";
import { startTestServer, testServerConfig, type TestServer } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";

/** Flushes of a held event wait here: the appends after it queue for the next flush. */
const gates = new Map<string, Promise<void>>();
let t: TestServer;
beforeAll(async () => {
  t = await startTestServer(testServerConfig({ TIDEMARK_SEGMENT_MAX_IN_FLIGHT: "1" }), {
    beforeWrite: async (slot: SlotRow) => {
      await gates.get(slot.eventId);
    },
  });
});
afterAll(async () => {
  await t?.close();
});

const stats = () => t.server.store.segmentStats;
const noted = (eventId: string, n = 1) => ({ eventId, eventType: "Noted", data: { n } as never });
const any = { case: "any", value: {} } as const;
const exact = (seq: number) => ({ case: "expectedSeq", value: BigInt(seq) }) as const;

/**
 * Holds the only flush place with an append of its own, runs `queue` (whose appends then wait for
 * the next flush), waits until `expected` appends are queued, and lets the flushes go.
 */
async function whileHeld<T>(name: string, expected: number, queue: () => T): Promise<T> {
  let release!: () => void;
  gates.set(`${name}-gate`, new Promise<void>((r) => (release = r)));
  const held = t.events.appendEvents({ aggregateType: "Gate", aggregateId: name, expectation: any, events: [noted(`${name}-gate`)] });
  await waitFor(() => stats().inFlight === 1, { what: "the held flush to take the place" });
  const queued = queue();
  await waitFor(() => stats().queued === expected, { what: `${expected} appends to queue behind the held flush` });
  release();
  await held;
  return queued;
}

async function segmentsOf(eventIds: readonly string[]): Promise<Map<string, number | null>> {
  const rows = await t.server.database.db.selectFrom("event_log").select(["event_id", "segment"]).where("event_id", "in", [...eventIds]).where("state", "=", "committed").execute();
  return new Map(rows.map((r) => [r.event_id, r.segment === null ? null : Number(r.segment)]));
}

describe("a flush reserves its appends together", () => {
  it("decides each append on its own in one segment: two to one stream, a conflict, a new stream, a retry", async () => {
    const before = { ...stats() };
    const calls = await whileHeld("mixed", 5, () => ({
      first: t.events.appendEvents({ aggregateType: "Order", aggregateId: "fr-two", expectation: any, events: [noted("fr-b1")] }),
      second: t.events.appendEvents({ aggregateType: "Order", aggregateId: "fr-two", expectation: any, events: [noted("fr-b2"), noted("fr-b3")] }),
      conflict: expectStatus(t.events.appendEvents({ aggregateType: "Order", aggregateId: "fr-never", expectation: exact(5), events: [noted("fr-c1")] }), grpc.status.ABORTED),
      fresh: t.events.appendEvents({ aggregateType: "Order", aggregateId: "fr-new", expectation: exact(0), events: [noted("fr-d1")] }),
      retry: t.events.appendEvents({ aggregateType: "Order", aggregateId: "fr-new", expectation: exact(0), events: [noted("fr-d1")] }),
    }));
    const [first, second, conflict, fresh, retry] = await Promise.all([calls.first, calls.second, calls.conflict, calls.fresh, calls.retry]);

    // In queue order, the second append to a stream after the first of the same flush.
    expect(first.events.map((e) => Number(e.sequenceNumber))).toEqual([1]);
    expect(second.events.map((e) => Number(e.sequenceNumber))).toEqual([2, 3]);
    // The conflict names the real head, and its stream gets no head row (nothing reserved).
    expect(findDetail(conflict, ConcurrencyConflictSchema)).toMatchObject({ expectedSeq: 5n, actualSeq: 0n });
    const heads = await t.server.database.db.selectFrom("stream_heads").select(["aggregate_id", "head"]).where("aggregate_id", "in", ["fr-two", "fr-never", "fr-new"]).orderBy("aggregate_id").execute();
    expect(heads.map((h) => [h.aggregate_id, Number(h.head)])).toEqual([["fr-new", 1], ["fr-two", 3]]);
    // The retry in the same flush is answered with the original's place.
    expect(fresh.events.map((e) => [Number(e.sequenceNumber), Number(e.globalPosition)])).toEqual(retry.events.map((e) => [Number(e.sequenceNumber), Number(e.globalPosition)]));
    expect([fresh.replayed, retry.replayed]).toEqual([false, true]);

    // One segment, reserved in one go (the held append, the two to fr-two, fr-new's): nothing alone.
    const segments = await segmentsOf(["fr-b1", "fr-b2", "fr-b3", "fr-d1"]);
    expect(new Set(segments.values()).size).toBe(1);
    expect(stats().segments - before.segments).toBe(2);
    expect(stats().reserved - before.reserved).toBe(4);
    expect(stats().alone - before.alone).toBe(0);
  });

  it("decides a flush of first appends (none a retry) as one after the other would: seqs, conflicts on the head so far, hash chains", async () => {
    const before = { ...stats() };
    const calls = await whileHeld("fast", 6, () => ({
      a1: t.events.appendEvents({ aggregateType: "Order", aggregateId: "fp-a", expectation: any, events: [noted("fp-a1")] }),
      a2: t.events.appendEvents({ aggregateType: "Order", aggregateId: "fp-a", expectation: exact(1), events: [noted("fp-a2"), noted("fp-a3")] }),
      // Expects the head the first append left, which the second moved on: refused.
      stale: expectStatus(t.events.appendEvents({ aggregateType: "Order", aggregateId: "fp-a", expectation: exact(1), events: [noted("fp-ax")] }), grpc.status.ABORTED),
      a4: t.events.appendEvents({ aggregateType: "Order", aggregateId: "fp-a", expectation: exact(3), events: [noted("fp-a4")] }),
      b1: t.events.appendEvents({ aggregateType: "Order", aggregateId: "fp-b", expectation: exact(0), events: [noted("fp-b1")] }),
      never: expectStatus(t.events.appendEvents({ aggregateType: "Order", aggregateId: "fp-c", expectation: exact(2), events: [noted("fp-c1")] }), grpc.status.ABORTED),
    }));
    const [a1, a2, stale, a4, b1, never] = await Promise.all([calls.a1, calls.a2, calls.stale, calls.a4, calls.b1, calls.never]);
    const seqs = (o: typeof a1) => o.events.map((e) => Number(e.sequenceNumber));
    expect([seqs(a1), seqs(a2), seqs(a4), seqs(b1)]).toEqual([[1], [2, 3], [4], [1]]);
    expect(findDetail(stale, ConcurrencyConflictSchema)).toMatchObject({ aggregateId: "fp-a", expectedSeq: 1n, actualSeq: 3n });
    expect(findDetail(never, ConcurrencyConflictSchema)).toMatchObject({ aggregateId: "fp-c", expectedSeq: 2n, actualSeq: 0n });
    const db = t.server.database.db;
    const heads = await db.selectFrom("stream_heads").select(["aggregate_id", "head"]).where("aggregate_id", "in", ["fp-a", "fp-b", "fp-c"]).orderBy("aggregate_id").execute();
    expect(heads.map((h) => [h.aggregate_id, Number(h.head)])).toEqual([["fp-a", 4], ["fp-b", 1]]);
    const segments = await segmentsOf(["fp-a1", "fp-a2", "fp-a3", "fp-a4", "fp-b1"]);
    expect(new Set(segments.values()).size).toBe(1);
    expect([stats().reserved - before.reserved, stats().alone - before.alone]).toEqual([5, 0]);
    // Every link of fp-a's chain is the one its predecessor makes (the audit recomputes each).
    const report = await verifyStore({ db, objects: t.server.objects });
    expect(report.anomalies.filter((a) => JSON.stringify(a).includes("fp-"))).toEqual([]);
    expect(report.anomalies).toEqual([]);
  });

  it("voids the number of a flush whose every append is refused at once: no PUT, nothing left for the sweeper (W3, W5)", async () => {
    const db = t.server.database.db;
    const before = { ...stats() };
    const refused = await whileHeld("refused", 2, () => [
      expectStatus(t.events.appendEvents({ aggregateType: "Order", aggregateId: "fr-none-1", expectation: exact(3), events: [noted("fr-r1")] }), grpc.status.ABORTED),
      expectStatus(t.events.appendEvents({ aggregateType: "Order", aggregateId: "fr-none-2", expectation: exact(7), events: [noted("fr-r2")] }), grpc.status.ABORTED),
    ]);
    await Promise.all(refused);
    const gate = await db.selectFrom("event_log").select("segment").where("event_id", "=", "refused-gate").executeTakeFirstOrThrow();
    const after = await db.selectFrom("segments").select(["segment", "state"]).where("segment", ">", Number(gate.segment)).orderBy("segment").execute();
    expect(after.map((r) => r.state)).toEqual(["void"]);
    expect(stats().segments - before.segments).toBe(1);
    expect(await t.server.objects.read(segmentKey(Number(after[0]!.segment)))).toBeUndefined();
    const heads = await db.selectFrom("stream_heads").select("aggregate_id").where("aggregate_id", "in", ["fr-none-1", "fr-none-2"]).execute();
    expect(heads).toEqual([]);
  });

  it("reserves alone what the flush cannot decide — a lost head row, a head behind the log (W6) — and every append still lands", async () => {
    const db = t.server.database.db;
    for (const id of ["fr-lost", "fr-behind"]) {
      await t.events.appendEvents({ aggregateType: "Order", aggregateId: id, expectation: exact(0), events: [noted(`${id}-1`), noted(`${id}-2`), noted(`${id}-3`)] });
    }
    // As after a restore of an older backup: one head row gone, one behind its stream's slots.
    await db.deleteFrom("stream_heads").where("aggregate_id", "=", "fr-lost").execute();
    await db.updateTable("stream_heads").set({ head: 1 }).where("aggregate_id", "=", "fr-behind").execute();

    // A lost head row is one append's outcome: the others of its flush are reserved with it.
    let before = { ...stats() };
    const lost = await whileHeld("lost", 2, () =>
      Promise.all([
        t.events.appendEvents({ aggregateType: "Order", aggregateId: "fr-lost", expectation: any, events: [noted("fr-lost-4")] }),
        t.events.appendEvents({ aggregateType: "Order", aggregateId: "fr-beside-1", expectation: exact(0), events: [noted("fr-beside-1")] }),
      ]),
    );
    expect(lost.map((r) => r.events.map((e) => Number(e.sequenceNumber)))).toEqual([[4], [1]]);
    // Reserved by flushes: the held append and the one beside; alone: the lost head's.
    expect([stats().reserved - before.reserved, stats().alone - before.alone]).toEqual([2, 1]);

    // A head behind its slots fails the flush's transaction (a unique violation): every append
    // of that flush is reserved alone, where the head is repaired.
    before = { ...stats() };
    const behind = await whileHeld("behind", 2, () =>
      Promise.all([
        t.events.appendEvents({ aggregateType: "Order", aggregateId: "fr-behind", expectation: any, events: [noted("fr-behind-4")] }),
        t.events.appendEvents({ aggregateType: "Order", aggregateId: "fr-beside-2", expectation: exact(0), events: [noted("fr-beside-2")] }),
      ]),
    );
    expect(behind.map((r) => r.events.map((e) => Number(e.sequenceNumber)))).toEqual([[4], [1]]);
    expect(stats().alone - before.alone).toBe(2);
    const heads = await db.selectFrom("stream_heads").select(["aggregate_id", "head"]).where("aggregate_id", "in", ["fr-lost", "fr-behind"]).orderBy("aggregate_id").execute();
    expect(heads.map((h) => [h.aggregate_id, Number(h.head)])).toEqual([["fr-behind", 4], ["fr-lost", 4]]);
    // Every slot committed once, at its own seq.
    const slots = await db.selectFrom("event_log").select(["aggregate_id", "seq", "state"]).where("aggregate_id", "in", ["fr-lost", "fr-behind"]).orderBy("aggregate_id").orderBy("seq").execute();
    expect(slots.map((s) => `${s.aggregate_id}/${Number(s.seq)}/${s.state}`)).toEqual([1, 2, 3, 4].map((n) => `fr-behind/${n}/committed`).concat([1, 2, 3, 4].map((n) => `fr-lost/${n}/committed`)));
  });

  it("reserves multi-stream calls with the appends around them, in queue order: checks, a conflict naming its field, a retry (W8, W4)", async () => {
    const db = t.server.database.db;
    await t.events.appendEvents({ aggregateType: "Order", aggregateId: "frm-c", expectation: exact(0), events: [noted("frm-c-1")] });
    const before = { ...stats() };
    const stream = (aggregateId: string, expectation: typeof any | ReturnType<typeof exact>, ...ids: string[]) => ({ aggregateType: "Order", aggregateId, expectation, events: ids.map((id) => noted(id)) });
    const first = {
      streams: [stream("frm-a", exact(0), "frm-a-1", "frm-a-2"), stream("frm-b", any, "frm-b-1")],
      consistencyChecks: [{ aggregateType: "Order", aggregateId: "frm-c", expectation: exact(1) }, { aggregateType: "Order", aggregateId: "frm-unseen", expectation: { case: "noStream", value: {} } }],
    } as never;
    const calls = await whileHeld("multi", 5, () => ({
      first: t.events.appendToStreams(first),
      // Queued after the first: sees its slots of frm-a.
      after: t.events.appendEvents({ aggregateType: "Order", aggregateId: "frm-a", expectation: exact(2), events: [noted("frm-a-3")] }),
      // Expects frm-a at 0, which the two before it moved to 3: refused, naming the field; frm-d gets nothing.
      conflict: expectStatus(t.events.appendToStreams({ streams: [stream("frm-d", any, "frm-d-1"), stream("frm-a", exact(0), "frm-a-x")] } as never), grpc.status.ABORTED),
      retry: t.events.appendToStreams(first),
      single: t.events.appendEvents({ aggregateType: "Order", aggregateId: "frm-e", expectation: any, events: [noted("frm-e-1")] }),
    }));
    const [out, after, conflict, retry, single] = await Promise.all([calls.first, calls.after, calls.conflict, calls.retry, calls.single]);

    expect(out.streams.map((st) => st.events.map((e) => Number(e.sequenceNumber)))).toEqual([[1, 2], [1]]);
    expect(after.events.map((e) => Number(e.sequenceNumber))).toEqual([3]);
    expect(findDetail(conflict, ConsistencyConflictSchema)?.conflicts.map((c) => [c.field, c.aggregateId, Number(c.actualSeq)])).toEqual([["streams[1]", "frm-a", 3]]);
    expect([out.replayed, retry.replayed]).toEqual([false, true]);
    const positions = (o: typeof out) => o.streams.flatMap((st) => st.events.map((e) => Number(e.globalPosition)));
    expect(positions(retry)).toEqual(positions(out));
    // The first call's positions are contiguous (W9) even in a shared segment.
    const mine = positions(out);
    expect(mine).toEqual(mine.map((_, i) => mine[0]! + i));
    expect(single.events.map((e) => Number(e.sequenceNumber))).toEqual([1]);

    // No head row for the refused call's new stream, nor for the aggregate only checked.
    const heads = await db.selectFrom("stream_heads").select(["aggregate_id", "head"]).where("aggregate_id", "in", ["frm-a", "frm-b", "frm-c", "frm-d", "frm-e", "frm-unseen"]).orderBy("aggregate_id").execute();
    expect(heads.map((h) => [h.aggregate_id, Number(h.head)])).toEqual([["frm-a", 3], ["frm-b", 1], ["frm-c", 1], ["frm-e", 1]]);
    // One segment for the whole flush, every call reserved by it (the held append, first, after, single): nothing alone.
    const segments = await segmentsOf(["frm-a-1", "frm-a-2", "frm-b-1", "frm-a-3", "frm-e-1"]);
    expect(new Set(segments.values()).size).toBe(1);
    expect(stats().reserved - before.reserved).toBe(4);
    expect(stats().alone - before.alone).toBe(0);
  });

  it("reserves a multi-stream call alone when one of its heads is behind the log (W6), and it lands", async () => {
    const db = t.server.database.db;
    await t.events.appendEvents({ aggregateType: "Order", aggregateId: "frm-lost", expectation: exact(0), events: [noted("frm-lost-1"), noted("frm-lost-2")] });
    await db.deleteFrom("stream_heads").where("aggregate_id", "=", "frm-lost").execute();
    const before = { ...stats() };
    const [multi, beside] = await whileHeld("multi-lost", 2, () =>
      Promise.all([
        t.events.appendToStreams({
          streams: [
            { aggregateType: "Order", aggregateId: "frm-lost", expectation: exact(2), events: [noted("frm-lost-3")] },
            { aggregateType: "Order", aggregateId: "frm-lost-new", expectation: exact(0), events: [noted("frm-lost-new-1")] },
          ],
        } as never),
        t.events.appendEvents({ aggregateType: "Order", aggregateId: "frm-beside", expectation: exact(0), events: [noted("frm-beside-1")] }),
      ]),
    );
    expect(multi.streams.map((st) => st.events.map((e) => Number(e.sequenceNumber)))).toEqual([[3], [1]]);
    expect(beside.events.map((e) => Number(e.sequenceNumber))).toEqual([1]);
    expect([stats().reserved - before.reserved, stats().alone - before.alone]).toEqual([2, 1]);
    const heads = await db.selectFrom("stream_heads").select(["aggregate_id", "head"]).where("aggregate_id", "in", ["frm-lost", "frm-lost-new"]).orderBy("aggregate_id").execute();
    expect(heads.map((h) => [h.aggregate_id, Number(h.head)])).toEqual([["frm-lost", 3], ["frm-lost-new", 1]]);
  });

  it("reserves every call alone when a multi-stream call fails its flush's transaction (a head behind its slots, W6), and each lands", async () => {
    const db = t.server.database.db;
    await t.events.appendEvents({ aggregateType: "Order", aggregateId: "frm-behind", expectation: exact(0), events: [noted("frm-behind-1"), noted("frm-behind-2")] });
    // As after a restore of an older backup: the head row behind the stream's slots.
    await db.updateTable("stream_heads").set({ head: 1 }).where("aggregate_id", "=", "frm-behind").execute();
    const before = { ...stats() };
    const [multi, beside] = await whileHeld("multi-behind", 2, () =>
      Promise.all([
        t.events.appendToStreams({
          streams: [
            { aggregateType: "Order", aggregateId: "frm-behind", expectation: any, events: [noted("frm-behind-3")] },
            { aggregateType: "Order", aggregateId: "frm-behind-new", expectation: exact(0), events: [noted("frm-behind-new-1")] },
          ],
        } as never),
        t.events.appendEvents({ aggregateType: "Order", aggregateId: "frm-behind-beside", expectation: exact(0), events: [noted("frm-behind-beside-1")] }),
      ]),
    );
    expect(multi.streams.map((st) => st.events.map((e) => Number(e.sequenceNumber)))).toEqual([[3], [1]]);
    expect(beside.events.map((e) => Number(e.sequenceNumber))).toEqual([1]);
    expect(stats().alone - before.alone).toBe(2);
    const slots = await db.selectFrom("event_log").select(["seq", "state"]).where("aggregate_id", "=", "frm-behind").orderBy("seq").execute();
    expect(slots.map((r) => `${Number(r.seq)}/${r.state}`)).toEqual(["1/committed", "2/committed", "3/committed"]);
  });
});

/**
 * The write path against real PostgreSQL and S3Proxy, through the generated TypeScript client:
 * docs/CONTRACT.md W1, W2, W3, W4, W7 and the id rules of A2.
 */
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { storedEvent, storedEvents, storedSegments } from "../helpers/stored-events.js";
import { ConcurrencyConflictSchema, IdempotencyConflictSchema } from "../../gen/tidemark/v1/errors_pb.js";
import { badFields, collect, expectStatus, findDetail, grpc } from "../helpers/grpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/test-server.js";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t?.close();
});

const event = (eventId: string, data: Record<string, unknown> = { n: 1 }, eventType = "Noted") => ({ eventId, eventType, data: data as never });

describe("W1 durable ack", () => {
  it("acknowledges only events whose object is in S3, as protobuf JSON", async () => {
    const out = await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w1", expectation: { case: "expectedSeq", value: 0n }, events: [event("w1-e1", { total: 12.5 })] });
    expect(out.events[0]).toMatchObject({ eventId: "w1-e1", sequenceNumber: 1n });
    expect(out.events[0]!.globalPosition).toBeGreaterThan(0n);
    const stored = await storedEvent(t.server.objects, "Order", "w1", 1);
    expect(stored).toBeDefined();
    expect(JSON.parse(stored!.json)).toMatchObject({ event_id: "w1-e1", aggregate_type: "Order", aggregate_id: "w1", sequence_number: "1", data: { total: 12.5 } });
  });
});

describe("W1 durable ack: what an OK rests on", () => {
  // The reservation commits without waiting for the WAL flush (core/event-log.ts), for its own
  // transaction only; the commit transaction that precedes every OK must wait for it, or an
  // acknowledged event could vanish from the commit log (and never be published, R1) in a crash.
  it("leaves every pooled connection and the commit function flushing their commits", async () => {
    // Reservations on as many connections as the pool will open.
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        t.events.appendEvents({ aggregateType: "Order", aggregateId: `w1-flush-${i}`, expectation: { case: "expectedSeq", value: 0n }, events: [event(`w1-flush-e${i}`)] }),
      ),
    );
    const db = t.server.database.db;
    const settings = await Promise.all(
      Array.from({ length: 10 }, () =>
        db.connection().execute(async (c) => (await sql<{ s: string }>`select current_setting('synchronous_commit') as s, pg_sleep(0.05)`.execute(c)).rows[0]!.s),
      ),
    );
    expect(new Set(settings)).toEqual(new Set(["on"]));
    const { rows } = await sql<{ proconfig: string[] | null }>`
      select p.proconfig from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where p.proname = 'commit_slots' and n.nspname = current_schema()`.execute(db);
    expect(rows).toEqual([{ proconfig: null }]);
  });
});

describe("W2 immutable slots", () => {
  it("S3 answers exactly one of two concurrent conditional creates of one key", async () => {
    for (let round = 0; round < 5; round++) {
      const key = `probe/concurrent-${round}-${Date.now()}`;
      const outcomes = await Promise.all([
        t.server.objects.createIfAbsent(key, "a", "text/plain"),
        t.server.objects.createIfAbsent(key, "b", "text/plain"),
        t.server.objects.createIfAbsent(key, "c", "text/plain"),
      ]);
      expect(outcomes.filter((o) => o === "created")).toHaveLength(1);
      expect(outcomes.filter((o) => o === "exists")).toHaveLength(2);
    }
  });

  it("never overwrites a stored segment", async () => {
    await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w2", expectation: { case: "noStream", value: {} }, events: [event("w2-e1")] });
    const { key } = (await storedEvent(t.server.objects, "Order", "w2", 1))!;
    const before = await t.server.objects.read(key);
    expect(await t.server.objects.createIfAbsent(key, "overwrite attempt", "text/plain")).toBe("exists");
    expect(await t.server.objects.read(key)).toEqual(before);
  });

  it("gives every segment a number of its own, each key created once", async () => {
    const segments = await storedSegments(t.server.objects);
    const numbers = segments.map((s) => s.content.segment);
    expect(new Set(numbers).size).toBe(numbers.length);
    for (const s of segments) expect(s.key).toBe(`segments/${String(s.content.segment).padStart(20, "0")}.jsonl`);
  });
});

describe("W3 optimistic concurrency", () => {
  it("lets exactly one of 64 concurrent appends with the same expected_seq win", async () => {
    await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w3", expectation: { case: "noStream", value: {} }, events: [event("w3-seed")] });
    const results = await Promise.allSettled(
      Array.from({ length: 64 }, (_, i) =>
        t.events.appendEvents({ aggregateType: "Order", aggregateId: "w3", expectation: { case: "expectedSeq", value: 1n }, events: [event(`w3-${i}`)] }),
      ),
    );
    const won = results.filter((r) => r.status === "fulfilled");
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(63);
    for (const r of lost) {
      expect(r.reason.code).toBe(grpc.status.ABORTED);
      const detail = findDetail(r.reason, ConcurrencyConflictSchema);
      expect(detail).toMatchObject({ aggregateType: "Order", aggregateId: "w3", expectedSeq: 1n, actualSeq: 2n });
    }
    // No number consumed by the losers.
    const head = await t.events.getStreamHead({ aggregateType: "Order", aggregateId: "w3" });
    expect(head).toMatchObject({ head: 2n, allocated: 2n });
    expect(await storedEvents(t.server.objects, { aggregateType: "Order", aggregateId: "w3" })).toHaveLength(2);
  });

  it("refuses a stale expected_seq and writes nothing", async () => {
    const error = await expectStatus(
      t.events.appendEvents({ aggregateType: "Order", aggregateId: "w3", expectation: { case: "expectedSeq", value: 1n }, events: [event("w3-stale")] }),
      grpc.status.ABORTED,
    );
    expect(error.details).toMatch(/expected sequence 1, but the head is 2/);
    expect(await storedEvents(t.server.objects, { aggregateType: "Order", aggregateId: "w3" })).toHaveLength(2);
  });

  it("appends at any head only when asked explicitly", async () => {
    const out = await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w3", expectation: { case: "any", value: {} }, events: [event("w3-any")] });
    expect(out.events[0]!.sequenceNumber).toBe(3n);
    const error = await expectStatus(
      t.events.appendEvents({ aggregateType: "Order", aggregateId: "w3", events: [event("w3-none")] }),
      grpc.status.INVALID_ARGUMENT,
    );
    expect(badFields(error)).toEqual(["expectation"]);
  });
});

describe("W4 idempotent append", () => {
  it("returns the original result for a retry, even after the stream moved on", async () => {
    const first = await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w4", expectation: { case: "noStream", value: {} }, events: [event("w4-e1", { v: 1 })] });
    await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w4", expectation: { case: "expectedSeq", value: 1n }, events: [event("w4-e2")] });
    // A retry after a lost reply carries the original expectation, which is stale by now.
    const retry = await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w4", expectation: { case: "noStream", value: {} }, events: [event("w4-e1", { v: 1 })], actor: "someone-else" });
    expect(retry.replayed).toBe(true);
    expect(retry.events).toEqual(first.events);
    expect(await storedEvents(t.server.objects, { aggregateType: "Order", aggregateId: "w4" })).toHaveLength(2);
  });

  it("treats trace headers as transport, not content", async () => {
    const a = await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w4t", expectation: { case: "any", value: {} }, events: [{ ...event("w4t-e1"), metadata: { traceparent: "00-11111111111111111111111111111111-2222222222222222-01" } }] });
    const b = await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w4t", expectation: { case: "any", value: {} }, events: [{ ...event("w4t-e1"), metadata: { traceparent: "00-33333333333333333333333333333333-4444444444444444-01" } }] });
    expect(b.replayed).toBe(true);
    expect(b.events).toEqual(a.events);
  });

  it("answers ALREADY_EXISTS with both hashes when the content differs, also across aggregates", async () => {
    await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w4x", expectation: { case: "noStream", value: {} }, events: [event("w4x-e1", { v: 1 })] });
    for (const aggregateId of ["w4x", "another-aggregate"]) {
      const error = await expectStatus(
        t.events.appendEvents({ aggregateType: "Order", aggregateId, expectation: { case: "any", value: {} }, events: [event("w4x-e1", { v: 2 })] }),
        grpc.status.ALREADY_EXISTS,
      );
      const detail = findDetail(error, IdempotencyConflictSchema);
      expect(detail?.eventId).toBe("w4x-e1");
      expect(detail?.storedHash).toMatch(/^sha256:/);
      expect(detail?.incomingHash).toMatch(/^sha256:/);
      expect(detail?.storedHash).not.toBe(detail?.incomingHash);
    }
  });

  it("gives 16 concurrent duplicates one slot and the same answer", async () => {
    const results = await Promise.all(
      Array.from({ length: 16 }, () =>
        t.events.appendEvents({ aggregateType: "Order", aggregateId: "w4c", expectation: { case: "any", value: {} }, events: [event("w4c-e1")] }),
      ),
    );
    const seqs = new Set(results.map((r) => `${r.events[0]!.sequenceNumber}/${r.events[0]!.globalPosition}`));
    expect(seqs.size).toBe(1);
    expect(results.filter((r) => !r.replayed)).toHaveLength(1);
    expect(await storedEvents(t.server.objects, { aggregateType: "Order", aggregateId: "w4c" })).toHaveLength(1);
  });
});

describe("W7 batches", () => {
  it("gives a batch contiguous seqs and reads it back in order", async () => {
    await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w7", expectation: { case: "noStream", value: {} }, events: [event("w7-0")] });
    const out = await t.events.appendEvents({
      aggregateType: "Order",
      aggregateId: "w7",
      expectation: { case: "expectedSeq", value: 1n },
      events: Array.from({ length: 5 }, (_, i) => event(`w7-${i + 1}`, { i })),
    });
    expect(out.events.map((e) => e.sequenceNumber)).toEqual([2n, 3n, 4n, 5n, 6n]);
    const positions = out.events.map((e) => e.globalPosition);
    expect([...positions].sort((a, b) => Number(a - b))).toEqual(positions);
    const read = await collect(t.events.readStream({ aggregateType: "Order", aggregateId: "w7" }));
    expect(read.map((r) => r.event!.eventId)).toEqual(["w7-0", "w7-1", "w7-2", "w7-3", "w7-4", "w7-5"]);
    expect(read.map((r) => r.event!.globalPosition)).toEqual([read[0]!.event!.globalPosition, ...positions]);
  });

  it("writes nothing of a batch with one bad event", async () => {
    const error = await expectStatus(
      t.events.appendEvents({
        aggregateType: "Order",
        aggregateId: "w7",
        expectation: { case: "expectedSeq", value: 6n },
        events: [event("w7-ok"), event("w7 bad id")],
      }),
      grpc.status.INVALID_ARGUMENT,
    );
    expect(badFields(error)).toEqual(["events[1].event_id"]);
    expect(await storedEvents(t.server.objects, { aggregateType: "Order", aggregateId: "w7" })).toHaveLength(6);
    const head = await t.events.getStreamHead({ aggregateType: "Order", aggregateId: "w7" });
    expect(head.allocated).toBe(6n);
  });

  it("treats a retried batch as one unit", async () => {
    const batch = [event("w7b-1"), event("w7b-2")];
    const first = await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w7b", expectation: { case: "noStream", value: {} }, events: batch });
    const again = await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w7b", expectation: { case: "noStream", value: {} }, events: batch });
    expect(again.events).toEqual(first.events);
    await expectStatus(
      t.events.appendEvents({ aggregateType: "Order", aggregateId: "w7b", expectation: { case: "any", value: {} }, events: [batch[0]!, event("w7b-3")] }),
      grpc.status.ALREADY_EXISTS,
    );
  });
});

describe("A2 ids stored in S3", () => {
  const ids = ["a/b", "a/b/..", "..", "../../escape", "ünïcødé 名前", "x".repeat(256), "é".repeat(128), "a%2Fb", "%", "white space inside"];

  it("round-trips tricky aggregate ids, each stored under exactly its own name", async () => {
    for (const [i, id] of ids.entries()) {
      await t.events.appendEvents({ aggregateType: "Doc", aggregateId: id, expectation: { case: "noStream", value: {} }, events: [event(`a2-${i}`, { id })] });
    }
    for (const [i, id] of ids.entries()) {
      const read = await collect(t.events.readStream({ aggregateType: "Doc", aggregateId: id }));
      expect(read.map((r) => r.event!.eventId)).toEqual([`a2-${i}`]);
      expect(read[0]!.event!.aggregateId).toBe(id);
    }
    // The bucket names each event's aggregate exactly: segment headers carry the ids as JSON text.
    const stored = (await storedEvents(t.server.objects)).filter((e) => e.aggregateType === "Doc");
    expect(stored).toHaveLength(ids.length);
    expect(stored.map((e) => e.aggregateId).sort()).toEqual([...ids].sort());
    for (const e of stored) expect(JSON.parse(e.json)).toMatchObject({ aggregate_type: "Doc", aggregate_id: e.aggregateId });
  });

  it("refuses ids that cannot be stored safely, naming the field", async () => {
    for (const [aggregateId, pattern] of [
      ["x".repeat(257), /256 bytes/],
      ["bad\u0007bell", /control/],
      ["u\u0308", /NFC/],
      ["", /required/],
    ] as const) {
      const error = await expectStatus(
        t.events.appendEvents({ aggregateType: "Doc", aggregateId, expectation: { case: "any", value: {} }, events: [event("a2-bad")] }),
        grpc.status.INVALID_ARGUMENT,
      );
      expect(badFields(error)).toEqual(["aggregate_id"]);
      expect(error.details).toMatch(pattern);
    }
    await expectStatus(
      t.events.appendEvents({ aggregateType: "Doc/../x", aggregateId: "a", expectation: { case: "any", value: {} }, events: [event("a2-bad")] }),
      grpc.status.INVALID_ARGUMENT,
    );
  });

  it("refuses messages over the size limit", async () => {
    const error = await expectStatus(
      t.events.appendEvents({ aggregateType: "Doc", aggregateId: "big", expectation: { case: "any", value: {} }, events: [event("a2-big", { s: "x".repeat(5 * 1024 * 1024) })] }),
      grpc.status.RESOURCE_EXHAUSTED,
    );
    expect(error.details).toMatch(/larger than max/);
  });
});

describe("reads", () => {
  it("answers NOT_FOUND for a stream that does not exist", async () => {
    await expectStatus(collect(t.events.readStream({ aggregateType: "Order", aggregateId: "nope" })), grpc.status.NOT_FOUND);
    await expectStatus(t.events.getStreamHead({ aggregateType: "Order", aggregateId: "nope" }), grpc.status.NOT_FOUND);
  });

  it("reads from a sequence number with a limit", async () => {
    const read = await collect(t.events.readStream({ aggregateType: "Order", aggregateId: "w7", fromSeq: 3n, maxCount: 2 }));
    expect(read.map((r) => r.event!.sequenceNumber)).toEqual([3n, 4n]);
  });
});


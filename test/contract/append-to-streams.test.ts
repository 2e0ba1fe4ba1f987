/**
 * AppendToStreams, the multi-stream append (docs/CONTRACT.md W8, W9, W10), through the generated client on
 * both storages: several aggregates with their own expectations and consistency checks on others,
 * all or nothing, every failing check in the detail, idempotent retries (W4), one segment and
 * contiguous positions per call, 64 concurrent callers whose checks overlap (exactly one wins), and
 * bad input refused before anything is reserved (A2).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { storedEvents, storedSegments } from "../helpers/stored-events.js";
import { ConcurrencyConflictSchema, ConsistencyConflictSchema, IdempotencyConflictSchema } from "../../gen/tidemark/v1/errors_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AppendToStreamsRequestSchema } from "../../gen/tidemark/v1/event_store_pb.js";
import { badFields, collect, expectStatus, findDetail, grpc } from "../helpers/grpc-errors.js";
import { startTestServer, type TestServer } from "../helpers/test-server.js";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t?.close();
});

type Request = MessageInitShape<typeof AppendToStreamsRequestSchema>;
type Expect = { case: "expectedSeq"; value: bigint } | { case: "noStream"; value: object } | { case: "any"; value: object };
type StreamInit = { aggregateType: string; aggregateId: string; expectation?: Expect; events: Array<ReturnType<typeof event>>; database?: string };
type CheckInit = { aggregateType: string; aggregateId: string; expectation?: Exclude<Expect, { case: "any" }> };

const event = (eventId: string, data: Record<string, unknown> = { n: 1 }): { eventId: string; eventType: string; data: never } => ({ eventId, eventType: "Noted", data: data as never });
const noStream = { case: "noStream" as const, value: {} };
const any = { case: "any" as const, value: {} };
const exact = (seq: number) => ({ case: "expectedSeq" as const, value: BigInt(seq) });
const stream = (aggregateId: string, expectation: Expect, ...eventIds: string[]): StreamInit => ({ aggregateType: "Order", aggregateId, expectation, events: eventIds.map((id) => event(id)) });
const check = (aggregateId: string, expectation: Exclude<Expect, { case: "any" }>, aggregateType = "Order"): CheckInit => ({ aggregateType, aggregateId, expectation });
const call = (streams: StreamInit[], consistencyChecks: CheckInit[] = []): Request => ({ streams, consistencyChecks }) as Request;

async function allocated(aggregateId: string, aggregateType = "Order"): Promise<bigint | undefined> {
  try {
    return (await t.events.getStreamHead({ aggregateType, aggregateId })).allocated;
  } catch (e) {
    if ((e as grpc.ServiceError).code === grpc.status.NOT_FOUND) return undefined;
    throw e;
  }
}

describe("W8 multi-stream appends", () => {
  it("appends to several aggregates with their own expectations, in one segment, at contiguous positions (W9)", async () => {
    await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w8-a", expectation: noStream, events: [event("w8-a-1")] });
    await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w8-c", expectation: noStream, events: [event("w8-c-1"), event("w8-c-2")] });
    const segmentsBefore = (await storedSegments(t.server.objects)).length;
    const out = await t.events.appendToStreams(
      call([stream("w8-a", exact(1), "w8-a-2", "w8-a-3"), stream("w8-b", noStream, "w8-b-1"), stream("w8-d", any, "w8-d-1")], [check("w8-c", exact(2)), check("w8-never", noStream)]),
    );
    expect(out.replayed).toBe(false);
    expect(out.streams.map((s) => [s.aggregateId, s.events.map((e) => [e.eventId, e.sequenceNumber])])).toEqual([
      ["w8-a", [["w8-a-2", 2n], ["w8-a-3", 3n]]],
      ["w8-b", [["w8-b-1", 1n]]],
      ["w8-d", [["w8-d-1", 1n]]],
    ]);
    // Contiguous global positions, in request order (streams, then their events).
    const positions = out.streams.flatMap((s) => s.events.map((e) => e.globalPosition));
    expect(positions).toEqual(positions.map((_, i) => positions[0]! + BigInt(i)));
    // One call, one segment: every event of it, in that order.
    const segments = await storedSegments(t.server.objects);
    expect(segments).toHaveLength(segmentsBefore + 1);
    const last = segments.find((s) => s.events.some((e) => e.json.includes('"w8-b-1"')))!;
    expect(last.events.map((e) => JSON.parse(e.json).event_id)).toEqual(["w8-a-2", "w8-a-3", "w8-b-1", "w8-d-1"]);
    // Read back at their places; the checked streams are as they were, and a checked stream that
    // did not exist still does not.
    const a = await collect(t.events.readStream({ aggregateType: "Order", aggregateId: "w8-a" }));
    expect(a.map((r) => [r.event!.eventId, r.event!.globalPosition])).toEqual([
      ["w8-a-1", a[0]!.event!.globalPosition],
      ["w8-a-2", positions[0]],
      ["w8-a-3", positions[1]],
    ]);
    expect(await allocated("w8-c")).toBe(2n);
    expect(await allocated("w8-never")).toBeUndefined();
  });

  it("lists every failing expectation and check with its actual head, and writes nothing", async () => {
    await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w8f-a", expectation: noStream, events: [event("w8f-a-1"), event("w8f-a-2")] });
    await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w8f-c", expectation: noStream, events: [event("w8f-c-1")] });
    const eventsBefore = (await storedEvents(t.server.objects)).length;
    const request = call(
      [stream("w8f-a", exact(1), "w8f-x-1"), stream("w8f-ok", noStream, "w8f-x-2"), stream("w8f-c", noStream, "w8f-x-3")],
      [check("w8f-a2", exact(3)), check("w8f-c2", noStream), check("w8f-ok2", noStream)],
    );
    const error = await expectStatus(t.events.appendToStreams(request), grpc.status.ABORTED);
    // Then w8f-c2 is created: the same call now fails one more check.
    await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w8f-c2", expectation: noStream, events: [event("w8f-c2-1")] });
    const again = await expectStatus(t.events.appendToStreams(request), grpc.status.ABORTED);
    const detail = findDetail(again, ConsistencyConflictSchema);
    expect(detail?.conflicts.map((c) => [c.field, c.aggregateId, c.expectedSeq, c.actualSeq])).toEqual([
      ["streams[0]", "w8f-a", 1n, 2n],
      ["streams[2]", "w8f-c", 0n, 1n],
      ["consistency_checks[0]", "w8f-a2", 3n, 0n],
      ["consistency_checks[1]", "w8f-c2", 0n, 1n],
    ]);
    // The first also as the detail AppendEvents clients read.
    expect(findDetail(again, ConcurrencyConflictSchema)).toMatchObject({ aggregateId: "w8f-a", expectedSeq: 1n, actualSeq: 2n });
    expect(findDetail(error, ConsistencyConflictSchema)?.conflicts.map((c) => c.field)).toEqual(["streams[0]", "streams[2]", "consistency_checks[0]"]);
    // Nothing written, no number used up, no head row made for a stream that passed or was only checked.
    expect(await allocated("w8f-a")).toBe(2n);
    expect(await allocated("w8f-c")).toBe(1n);
    expect(await allocated("w8f-ok")).toBeUndefined();
    expect(await allocated("w8f-a2")).toBeUndefined();
    expect(await allocated("w8f-ok2")).toBeUndefined();
    expect((await storedEvents(t.server.objects)).length).toBe(eventsBefore + 1);
  });

  it("answers a retry with the original result, even after the streams moved on (W4)", async () => {
    const request = call([stream("w8r-a", noStream, "w8r-1", "w8r-2"), stream("w8r-b", noStream, "w8r-3")], [check("w8r-c", noStream)]);
    const first = await t.events.appendToStreams(request);
    await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w8r-a", expectation: exact(2), events: [event("w8r-4")] });
    await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w8r-c", expectation: noStream, events: [event("w8r-5")] });
    const retry = await t.events.appendToStreams({ ...request, actor: "someone-else" });
    expect(retry.replayed).toBe(true);
    expect(retry.streams).toEqual(first.streams);
    expect(await storedEvents(t.server.objects, { aggregateType: "Order", aggregateId: "w8r-a" })).toHaveLength(3);
  });

  it("gives concurrent duplicates of one call one set of slots and one answer", async () => {
    const request = call([stream("w8d-a", any, "w8d-1"), stream("w8d-b", any, "w8d-2", "w8d-3")]);
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => t.events.appendToStreams(request)));
    // A duplicate that finds the original unresolved for long settles it itself (docs/STORAGE.md),
    // so on a loaded machine an answer may be UNAVAILABLE — nothing acknowledged — but every OK
    // names the same slots, and the store holds the call once.
    const ok = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    for (const r of results) if (r.status === "rejected") expect(grpc.status[(r.reason as grpc.ServiceError).code]).toBe("UNAVAILABLE");
    expect(ok.length).toBeGreaterThan(0);
    expect(new Set(ok.map((r) => JSON.stringify(r.streams, (_, v: unknown) => (typeof v === "bigint" ? String(v) : v)))).size).toBe(1);
    expect(ok.filter((r) => !r.replayed).length).toBeLessThanOrEqual(1);
    const retry = await t.events.appendToStreams(request);
    expect(retry.streams).toEqual(ok[0]!.streams);
    expect(await storedEvents(t.server.objects, { aggregateType: "Order", aggregateId: "w8d-b" })).toHaveLength(2);
  });

  it("answers ALREADY_EXISTS for an event_id reused with other content or in another call", async () => {
    await t.events.appendToStreams(call([stream("w8x-a", noStream, "w8x-1"), stream("w8x-b", noStream, "w8x-2")]));
    const changed = await expectStatus(
      t.events.appendToStreams(call([{ ...stream("w8x-a", noStream), events: [event("w8x-1", { other: true })] }, stream("w8x-b", noStream, "w8x-2")])),
      grpc.status.ALREADY_EXISTS,
    );
    expect(findDetail(changed, IdempotencyConflictSchema)?.eventId).toBe("w8x-1");
    // Part of the original call, or the original's events with more: not the same call.
    await expectStatus(t.events.appendToStreams(call([stream("w8x-a", noStream, "w8x-1"), stream("w8x-z", noStream, "w8x-9")])), grpc.status.ALREADY_EXISTS);
    await expectStatus(t.events.appendToStreams(call([stream("w8x-a", noStream, "w8x-1")])), grpc.status.ALREADY_EXISTS);
    // An AppendEvents of an id a multi-stream call holds, and the other way round.
    await expectStatus(t.events.appendEvents({ aggregateType: "Order", aggregateId: "w8x-q", expectation: any, events: [event("w8x-2")] }), grpc.status.ALREADY_EXISTS);
    await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w8x-s", expectation: noStream, events: [event("w8x-s1")] });
    await expectStatus(t.events.appendToStreams(call([stream("w8x-s", noStream, "w8x-s1"), stream("w8x-t", noStream, "w8x-t1")])), grpc.status.ALREADY_EXISTS);
    expect(await allocated("w8x-z")).toBeUndefined();
    expect(await allocated("w8x-t")).toBeUndefined();
  });

  it("lets exactly one of 64 concurrent callers with overlapping checks win (W10, the Marten #4591 race)", async () => {
    // Caller i creates its own stream and checks that none of the other 63 exists yet, the way a
    // dynamic consistency boundary claims a tag: any two calls conflict, so exactly one may commit,
    // however the 64 reservations interleave — also with each checked stream created concurrently.
    const n = 64;
    const id = (i: number) => `w8race-${i}`;
    const results = await Promise.allSettled(
      Array.from({ length: n }, (_, i) =>
        t.events.appendToStreams(
          call(
            [stream(id(i), noStream, `w8race-e${i}`)],
            Array.from({ length: n }, (_, j) => j)
              .filter((j) => j !== i)
              .map((j) => check(id(j), noStream)),
          ),
        ),
      ),
    );
    const won = results.flatMap((r, i) => (r.status === "fulfilled" ? [i] : []));
    expect(won).toHaveLength(1);
    const winner = won[0]!;
    for (const [i, r] of results.entries()) {
      if (i === winner) continue;
      expect(r.status).toBe("rejected");
      const e = (r as PromiseRejectedResult).reason as grpc.ServiceError;
      expect(grpc.status[e.code]).toBe("ABORTED");
      // Every loser names the winner's stream, created with one event; no loser wrote anything.
      const conflicts = findDetail(e, ConsistencyConflictSchema)?.conflicts ?? [];
      expect(conflicts.map((c) => [c.aggregateId, c.actualSeq])).toContainEqual([id(winner), 1n]);
    }
    const heads = await Promise.all(Array.from({ length: n }, (_, i) => allocated(id(i))));
    expect(heads.filter((h) => h !== undefined)).toEqual([1n]);
    expect(heads[winner]).toBe(1n);
  });

  it("lets exactly one of 64 concurrent callers win a shared stream they all write and check beside (W10)", async () => {
    await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w8s-shared", expectation: noStream, events: [event("w8s-0")] });
    await t.events.appendEvents({ aggregateType: "Order", aggregateId: "w8s-checked", expectation: noStream, events: [event("w8s-c")] });
    const results = await Promise.allSettled(
      Array.from({ length: 64 }, (_, i) =>
        t.events.appendToStreams(call([stream(`w8s-own-${i}`, noStream, `w8s-e${i}`), stream("w8s-shared", exact(1), `w8s-s${i}`)], [check("w8s-checked", exact(1))])),
      ),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    expect(await allocated("w8s-shared")).toBe(2n);
    const own = await Promise.all(Array.from({ length: 64 }, (_, i) => allocated(`w8s-own-${i}`)));
    expect(own.filter((h) => h !== undefined)).toEqual([1n]);
  });
});

describe("A2 bad input to AppendToStreams", () => {
  const refused = async (request: Request, fields: string[]) => {
    const error = await expectStatus(t.events.appendToStreams(request), grpc.status.INVALID_ARGUMENT);
    expect(badFields(error)).toEqual(fields);
    return error;
  };

  it("refuses an empty call, or one with checks only", async () => {
    await refused(call([]), ["streams"]);
    await refused(call([], [check("bad-e", noStream)]), ["streams"]);
  });

  it("refuses more aggregates or events than the limits allow", async () => {
    const many = Array.from({ length: 60 }, (_, i) => stream(`bad-many-${i}`, any, `bad-many-e${i}`));
    const checks = Array.from({ length: 41 }, (_, i) => check(`bad-many-c${i}`, noStream));
    await refused(call(many, checks), ["streams"]);
    await refused(call([{ ...stream("bad-events-a", any), events: Array.from({ length: 60 }, (_, i) => event(`bad-ev-a${i}`)) }, { ...stream("bad-events-b", any), events: Array.from({ length: 41 }, (_, i) => event(`bad-ev-b${i}`)) }]), ["streams"]);
    expect(await allocated("bad-many-0")).toBeUndefined();
    expect(await allocated("bad-events-a")).toBeUndefined();
  });

  it("refuses an aggregate named twice: written twice, checked twice, or written and checked", async () => {
    await refused(call([stream("bad-twice", any, "bad-tw-1"), stream("bad-twice", any, "bad-tw-2")]), ["streams[1]"]);
    await refused(call([stream("bad-tw-a", any, "bad-tw-3")], [check("bad-tw-a", exact(0))]), ["consistency_checks[0]"]);
    await refused(call([stream("bad-tw-b", any, "bad-tw-4")], [check("bad-tw-c", noStream), check("bad-tw-c", exact(0))]), ["consistency_checks[1]"]);
    // Another type with the same id is another aggregate.
    await t.events.appendToStreams(call([stream("bad-tw-d", noStream, "bad-tw-5")], [check("bad-tw-d", noStream, "Invoice")]));
    expect(await allocated("bad-twice")).toBeUndefined();
    expect(await allocated("bad-tw-a")).toBeUndefined();
  });

  it("checks every stream and event as AppendEvents does, naming each field", async () => {
    await refused(
      call(
        [
          { aggregateType: "Instance", aggregateId: "db/C/x", expectation: any, events: [event("bad-f-1")] },
          { aggregateType: "Order", aggregateId: "bad-f", events: [event("bad-f-2")] },
          { ...stream("bad-f-ok", any), events: [event("bad f 3"), { ...event("bad-f-4"), data: { x: Number.NaN } as never }, event("bad-f-1")] },
          { ...stream("bad-f-empty", any), events: [] },
          { ...stream("db2/x", any, "bad-f-5"), database: "db1" },
        ],
        [{ aggregateType: "9bad", aggregateId: " lead", expectation: noStream }, { aggregateType: "Order", aggregateId: "bad-f-noexp" }],
      ),
      [
        "streams[0].aggregate_type",
        "streams[1].expectation",
        "streams[2].events[0].event_id",
        "streams[2].events[1].data.x",
        "streams[2].events[2].event_id",
        "streams[3].events",
        "streams[4].database",
        "consistency_checks[0].aggregate_type",
        "consistency_checks[0].aggregate_id",
        "consistency_checks[1].expectation",
      ],
    );
    expect(await allocated("bad-f-ok")).toBeUndefined();
    expect(await allocated("bad-f")).toBeUndefined();
  });

  it("may check an instance stream (reads of it are allowed) but never write one", async () => {
    await t.events.appendToStreams(call([stream("inst-check", noStream, "inst-check-1")], [check("db/Class/none", noStream, "Instance")]));
    await refused(call([{ aggregateType: "Instance", aggregateId: "db/Class/x", expectation: any, events: [event("inst-w-1")] }]), ["streams[0].aggregate_type"]);
  });
});

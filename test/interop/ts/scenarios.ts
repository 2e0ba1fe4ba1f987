/**
 * test/interop/SCENARIOS.md with the TypeScript stubs in gen/ (protoc-gen-es) over grpc-js. The
 * driver test calls {@link runScenarios} in-process; `node --import tsx test/interop/ts/scenarios.ts
 * ADDRESS NAMESPACE` runs it alone, exiting 1 with "FAIL Sn: ..." on the first failed expectation.
 */
import { isDeepStrictEqual } from "node:util";
import { pathToFileURL } from "node:url";
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { BadRequestSchema } from "../../../gen/google/rpc/error_details_pb.js";
import { ConcurrencyConflictSchema, ConsistencyConflictSchema, IdempotencyConflictSchema } from "../../../gen/tidemark/v1/errors_pb.js";
import { EventKind } from "../../../gen/tidemark/v1/envelope_pb.js";
import { EventStoreService, type SubscribeResponse } from "../../../gen/tidemark/v1/event_store_pb.js";
import { InstanceService } from "../../../gen/tidemark/v1/instance_pb.js";
import { createClient, findDetail, grpc, statusDetails } from "../../../server/grpc/client.js";

/** The namespace every run uses for its names (see SCENARIOS.md). */
export const NAMESPACE = /^[a-z0-9][a-z0-9-]{0,40}$/;
const HASH = /^sha256:[0-9a-f]{64}$/;

/** A failed expectation of one scenario; its message is the line the CLI prints. */
export class ScenarioFailure extends Error {
  constructor(scenario: string, message: string) {
    super(`FAIL ${scenario}: ${message}`);
    this.name = "ScenarioFailure";
  }
}

/**
 * Runs S1–S12 against the server at `address` with names in namespace `ns`; resolves when all
 * pass, rejects with a {@link ScenarioFailure} on the first failed expectation. `log` gets one
 * "ok Sn …" line per scenario.
 */
export async function runScenarios(address: string, ns: string, log: (line: string) => void = console.log): Promise<void> {
  if (!NAMESPACE.test(ns)) throw new Error(`namespace ${JSON.stringify(ns)} must match ${NAMESPACE}`);
  const instances = createClient(InstanceService, address);
  const events = createClient(EventStoreService, address);
  let scenario = "setup";
  const fail = (message: string): never => {
    throw new ScenarioFailure(scenario, message);
  };
  const expect = (condition: boolean, message: string) => {
    if (!condition) fail(message);
  };
  const expectEqual = (what: string, got: unknown, want: unknown) => {
    if (!isDeepStrictEqual(got, want)) fail(`${what}: expected ${show(want)}, got ${show(got)}`);
  };
  const ok = (message: string) => log(`ok ${scenario} ${message}`);
  /** Awaits a call that must fail with `code`; returns the error. */
  const expectStatus = async (call: Promise<unknown>, code: grpc.status): Promise<grpc.ServiceError> => {
    try {
      await call;
    } catch (e) {
      const error = e as grpc.ServiceError;
      expectEqual("status code", grpc.status[error.code], grpc.status[code]);
      return error;
    }
    return fail(`expected ${grpc.status[code]}, the call succeeded`);
  };
  /** The first detail of a type in the google.rpc.Status of grpc-status-details-bin. */
  const detail = <D extends DescMessage>(error: unknown, schema: D): MessageShape<D> =>
    findDetail(error, schema) ?? fail(`no ${schema.typeName} detail (details: ${statusDetails(error).map((d) => d.typeUrl).join(", ")})`);
  const badFields = (error: unknown) => detail(error, BadRequestSchema).fieldViolations.map((v) => v.field).sort();

  const orderType = `Order.${ns}`;
  const ada = { database: ns, className: "Person", instanceId: "ada" };
  const adaId = `${ns}/Person/ada`;
  const subscriptions: AbortController[] = [];
  try {
    scenario = "S1";
    const create = { ...ada, properties: { name: "Ada Lovelace", born: 1815 }, commandId: `${ns}-c1` };
    const created = (await instances.createInstance(create)).result ?? fail("no result");
    expectEqual("sequence_number", created.sequenceNumber, 1n);
    expectEqual("replayed", created.replayed, false);
    expect(created.eventId !== "", "event_id is empty");
    expect(created.globalPosition > 0n, "global_position is 0");
    ok(`created at seq 1, position ${created.globalPosition}`);

    scenario = "S2";
    const update = { ...ada, properties: { title: "Countess" }, expectedSeq: 1n, commandId: `${ns}-c2` };
    const updated = (await instances.updateInstance(update)).result ?? fail("no result");
    expectEqual("sequence_number", updated.sequenceNumber, 2n);
    expectEqual("replayed", updated.replayed, false);
    expect(updated.globalPosition > created.globalPosition, `global_position ${updated.globalPosition} not above S1's ${created.globalPosition}`);
    ok("updated to seq 2");

    scenario = "S3";
    const stale = await expectStatus(
      instances.updateInstance({ ...ada, properties: { title: "Lady" }, expectedSeq: 1n, commandId: `${ns}-c3` }),
      grpc.status.ABORTED,
    );
    const conflict = detail(stale, ConcurrencyConflictSchema);
    expectEqual("aggregate_type", conflict.aggregateType, "Instance");
    expectEqual("aggregate_id", conflict.aggregateId, adaId);
    expectEqual("expected_seq", conflict.expectedSeq, 1n);
    expectEqual("actual_seq", conflict.actualSeq, 2n);
    ok(`ABORTED, ConcurrencyConflict actual_seq ${conflict.actualSeq}`);

    scenario = "S4";
    const retried = (await instances.updateInstance(update)).result ?? fail("no result");
    expectEqual("retried update", retried, { ...updated, replayed: true });
    const recreated = (await instances.createInstance(create)).result ?? fail("no result");
    expectEqual("retried create", recreated, { ...created, replayed: true });
    ok("retries returned the original results");

    scenario = "S5";
    const got = (await instances.getInstance(ada)).instance ?? fail("no instance");
    expectEqual("version", got.version, 2n);
    expectEqual("deleted", got.deleted, false);
    expectEqual("properties", got.properties, { name: "Ada Lovelace", born: 1815, title: "Countess" });
    ok("version 2 with merged properties");

    scenario = "S6";
    const placed = {
      aggregateType: orderType,
      aggregateId: "o1",
      expectation: { case: "noStream" as const, value: {} },
      events: [{ eventId: `${ns}-o1-placed`, eventType: "OrderPlaced", data: { total: 42 } }],
    };
    const first = await events.appendEvents(placed);
    expectEqual("appended events", first.events.length, 1);
    expectEqual("sequence_number", first.events[0]!.sequenceNumber, 1n);
    expectEqual("replayed", first.replayed, false);
    const again = await events.appendEvents(placed);
    expectEqual("retry result", again.events, first.events);
    expectEqual("retry replayed", again.replayed, true);
    const reused = await expectStatus(
      events.appendEvents({ ...placed, expectation: { case: "any", value: {} }, events: [{ ...placed.events[0]!, data: { total: 43 } }] }),
      grpc.status.ALREADY_EXISTS,
    );
    const idem = detail(reused, IdempotencyConflictSchema);
    expectEqual("event_id", idem.eventId, `${ns}-o1-placed`);
    expect(HASH.test(idem.storedHash), `stored_hash ${show(idem.storedHash)} is not sha256:<hex>`);
    expect(HASH.test(idem.incomingHash), `incoming_hash ${show(idem.incomingHash)} is not sha256:<hex>`);
    expect(idem.storedHash !== idem.incomingHash, "stored and incoming hash are equal");
    ok("replayed append, then ALREADY_EXISTS with both hashes");

    scenario = "S7";
    const noExpectation = await expectStatus(
      events.appendEvents({ aggregateType: orderType, aggregateId: "o2", events: [{ eventId: `${ns}-o2-bad`, eventType: "OrderPlaced" }] }),
      grpc.status.INVALID_ARGUMENT,
    );
    expectEqual("violations", badFields(noExpectation), ["expectation"]);
    const unversioned = await expectStatus(instances.updateInstance({ ...ada, properties: {}, commandId: `${ns}-c4` }), grpc.status.INVALID_ARGUMENT);
    expectEqual("violations", badFields(unversioned), ["expected_seq"]);
    await expectStatus(events.getStreamHead({ aggregateType: orderType, aggregateId: "o2" }), grpc.status.NOT_FOUND);
    expectEqual("instance head", (await events.getStreamHead({ aggregateType: "Instance", aggregateId: adaId })).head, 2n);
    ok("INVALID_ARGUMENT names expectation and expected_seq; nothing written");

    scenario = "S8";
    const read = [];
    for await (const r of events.readStream({ aggregateType: "Instance", aggregateId: adaId })) read.push(r.event ?? fail("a message without an event"));
    expectEqual(
      "events read",
      read.map((e) => [e.sequenceNumber, e.eventType, e.eventId, e.globalPosition, e.aggregateType, e.aggregateId, e.metadata["command_id"]]),
      [
        [1n, "InstanceCreated", created.eventId, created.globalPosition, "Instance", adaId, `${ns}-c1`],
        [2n, "InstanceUpdated", updated.eventId, updated.globalPosition, "Instance", adaId, `${ns}-c2`],
      ],
    );
    expect(read.every((e) => e.data !== undefined), "an event has no data object");
    const tail = [];
    for await (const r of events.readStream({ aggregateType: "Instance", aggregateId: adaId, fromSeq: 2n })) tail.push(r.event?.sequenceNumber);
    expectEqual("from_seq 2", tail, [2n]);
    ok("two events in order; from_seq 2 reads one");

    scenario = "S9";
    const append = (aggregateId: string, expectation: { case: "expectedSeq"; value: bigint } | { case: "noStream"; value: object }, eventId: string, eventType: string) =>
      events.appendEvents({ aggregateType: orderType, aggregateId, expectation, events: [{ eventId, eventType }] });
    await append("o1", { case: "expectedSeq", value: 1n }, `${ns}-o1-paid`, "OrderPaid");
    await append("o2", { case: "noStream", value: {} }, `${ns}-o2-placed`, "OrderPlaced");
    const subscribe = (after: bigint) => {
      const controller = new AbortController();
      subscriptions.push(controller);
      const stream = events.subscribe({ start: { case: "afterPosition", value: after }, aggregateTypes: [orderType] }, { signal: controller.signal });
      return { iterator: stream[Symbol.asyncIterator](), cancel: () => controller.abort() };
    };
    const take = async (iterator: AsyncIterator<SubscribeResponse>, n: number) => {
      const out: SubscribeResponse[] = [];
      while (out.length < n) {
        const next = await iterator.next();
        if (next.done === true) fail(`Subscribe ended after ${out.length} of ${n} messages`);
        out.push(next.value as SubscribeResponse);
      }
      return out;
    };
    const expectEvents = (what: string, messages: SubscribeResponse[], ids: string[]) => {
      expectEqual(`${what} message count`, messages.length, ids.length);
      const positions: bigint[] = [];
      messages.forEach((m, i) => {
        if (m.message.case !== "event") return fail(`${what} message ${i + 1}: expected an event, got ${m.message.case}`);
        expectEqual(`${what} message ${i + 1} event_id`, m.message.value.eventId, ids[i]);
        expectEqual(`${what} message ${i + 1} position`, m.position, m.message.value.globalPosition);
        expect(i === 0 || m.position > positions[i - 1]!, `${what} positions not increasing: ${positions.join(", ")} then ${m.position}`);
        positions.push(m.position);
      });
      return positions;
    };
    const live = subscribe(0n);
    const catchUp = await take(live.iterator, 4);
    const positions = expectEvents("catch-up", catchUp.slice(0, 3), [`${ns}-o1-placed`, `${ns}-o1-paid`, `${ns}-o2-placed`]);
    expectEqual("message 4", catchUp[3]!.message.case, "caughtUp");
    expect(catchUp[3]!.position >= positions[2]!, `caught_up position ${catchUp[3]!.position} below the last event's ${positions[2]}`);
    await append("o2", { case: "expectedSeq", value: 1n }, `${ns}-o2-shipped`, "OrderShipped");
    expectEvents("live", await take(live.iterator, 1), [`${ns}-o2-shipped`]);
    live.cancel();
    const resumed = subscribe(positions[1]!);
    const rest = await take(resumed.iterator, 3);
    expectEvents("resume", rest.slice(0, 2), [`${ns}-o2-placed`, `${ns}-o2-shipped`]);
    expectEqual("resume message 3", rest[2]!.message.case, "caughtUp");
    resumed.cancel();
    ok(`catch-up, caught_up, live, resumed after position ${positions[1]} with no repeat`);

    scenario = "S10";
    const opened = { eventId: `${ns}-m1-opened`, eventType: "OrderOpened", data: { n: 1 } };
    const multi = {
      streams: [
        { aggregateType: orderType, aggregateId: "m1", expectation: { case: "noStream" as const, value: {} }, events: [opened] },
        { aggregateType: orderType, aggregateId: "o1", expectation: { case: "expectedSeq" as const, value: 2n }, events: [{ eventId: `${ns}-o1-noted`, eventType: "OrderNoted" }] },
      ],
      consistencyChecks: [{ aggregateType: orderType, aggregateId: "o2", expectation: { case: "expectedSeq" as const, value: 2n } }],
    };
    const both = await events.appendToStreams(multi);
    expectEqual("replayed", both.replayed, false);
    expectEqual("streams", both.streams.map((r) => [r.aggregateId, r.events.map((e) => e.sequenceNumber)]), [["m1", [1n]], ["o1", [3n]]]);
    const [m1, o1] = both.streams.map((r) => r.events[0]!.globalPosition);
    expectEqual("o1 global_position", o1, m1! + 1n);
    const repeated = await events.appendToStreams(multi);
    expectEqual("retry replayed", repeated.replayed, true);
    expectEqual("retry streams", repeated.streams, both.streams);
    const refusedAll = await expectStatus(
      events.appendToStreams({
        streams: [
          { aggregateType: orderType, aggregateId: "m2", expectation: { case: "noStream", value: {} }, events: [{ eventId: `${ns}-m2-opened`, eventType: "OrderOpened" }] },
          { aggregateType: orderType, aggregateId: "o1", expectation: { case: "expectedSeq", value: 1n }, events: [{ eventId: `${ns}-o1-late`, eventType: "OrderNoted" }] },
        ],
        consistencyChecks: [
          { aggregateType: orderType, aggregateId: "o2", expectation: { case: "expectedSeq", value: 1n } },
          { aggregateType: orderType, aggregateId: "m1", expectation: { case: "noStream", value: {} } },
        ],
      }),
      grpc.status.ABORTED,
    );
    expectEqual(
      "conflicts",
      detail(refusedAll, ConsistencyConflictSchema).conflicts.map((c) => [c.field, c.aggregateType, c.aggregateId, c.expectedSeq, c.actualSeq]),
      [
        ["streams[1]", orderType, "o1", 1n, 3n],
        ["consistency_checks[0]", orderType, "o2", 1n, 2n],
        ["consistency_checks[1]", orderType, "m1", 0n, 1n],
      ],
    );
    await expectStatus(events.getStreamHead({ aggregateType: orderType, aggregateId: "m2" }), grpc.status.NOT_FOUND);
    const checkedTwice = await expectStatus(
      events.appendToStreams({
        streams: [{ aggregateType: orderType, aggregateId: "m3", expectation: { case: "any", value: {} }, events: [{ eventId: `${ns}-m3-opened`, eventType: "OrderOpened" }] }],
        consistencyChecks: [{ aggregateType: orderType, aggregateId: "m3", expectation: { case: "noStream", value: {} } }],
      }),
      grpc.status.INVALID_ARGUMENT,
    );
    expectEqual("violations", badFields(checkedTwice), ["consistency_checks[0]"]);
    ok(`two streams at positions ${m1} and ${o1}, replayed, three conflicts listed, nothing written`);

    scenario = "S11";
    const filtered = (after: bigint, kinds: EventKind[] = [EventKind.DOMAIN]) =>
      events.subscribe({
        start: { case: "afterPosition", value: after },
        aggregateTypePrefix: orderType,
        eventTypes: ["OrderPlaced"],
        kinds,
        checkpoints: true,
        stopAtCaughtUp: true,
      });
    /** Every message of a stop_at_caught_up stream: events and checkpoints, then caught_up last. */
    const batch = async (after: bigint) => {
      const messages: SubscribeResponse[] = [];
      for await (const m of filtered(after)) messages.push(m);
      const last = messages.at(-1) ?? fail("the stream ended with no message");
      expectEqual("last message", last.message.case, "caughtUp");
      messages.forEach((m, i) => {
        if (i < messages.length - 1) expect(m.message.case === "event" || m.message.case === "checkpoint", `message ${i + 1}: expected an event or a checkpoint, got ${m.message.case}`);
        expect(i === 0 || m.position > messages[i - 1]!.position, `message ${i + 1}: position ${m.position} not above ${messages[i - 1]?.position}`);
      });
      return { ids: messages.flatMap((m) => (m.message.case === "event" ? [m.message.value.eventId] : [])), caughtUp: last.position, messages };
    };
    const batchFrom0 = await batch(0n);
    expectEqual("filtered events", batchFrom0.ids, [`${ns}-o1-placed`, `${ns}-o2-placed`]);
    const placedAt = batchFrom0.messages.filter((m) => m.message.case === "event").map((m) => m.position);
    expect(batchFrom0.caughtUp >= placedAt[1]!, `caught_up position ${batchFrom0.caughtUp} below ${placedAt[1]}`);
    const resumedBatch = await batch(batchFrom0.caughtUp);
    expectEqual("resumed events", resumedBatch.ids, []);
    const bad = await expectStatus(
      (async () => {
        for await (const _ of filtered(0n, [7 as EventKind])) void _;
      })(),
      grpc.status.INVALID_ARGUMENT,
    );
    expectEqual("violations", badFields(bad), ["kinds[0]"]);
    ok(`2 of the ORDER events matched, ${batchFrom0.messages.length - 3} checkpoints, ended OK at position ${batchFrom0.caughtUp}; resume empty; unknown kind refused`);

    scenario = "S12";
    const orders = (maxBatch: number) => events.subscribe({ start: { case: "afterPosition", value: 0n }, aggregateTypePrefix: orderType, stopAtCaughtUp: true, maxBatch });
    const reference: string[] = [];
    for await (const m of orders(0)) {
      if (m.message.case === "event") reference.push(m.message.value.eventId);
      else expectEqual("unbatched message", m.message.case, "caughtUp");
    }
    const batched: SubscribeResponse[] = [];
    for await (const m of orders(2)) batched.push(m);
    expectEqual("last message", batched.at(-1)?.message.case, "caughtUp");
    const batchIds: string[] = [];
    let largest = 0;
    batched.slice(0, -1).forEach((m, i) => {
      if (m.message.case !== "events") return fail(`message ${i + 1}: expected events, got ${m.message.case}`);
      const inBatch = m.message.value.events;
      expect(inBatch.length >= 1 && inBatch.length <= 2, `message ${i + 1}: ${inBatch.length} events`);
      expectEqual(`message ${i + 1} position`, m.position, inBatch.at(-1)!.globalPosition);
      largest = Math.max(largest, inBatch.length);
      batchIds.push(...inBatch.map((e) => e.eventId));
    });
    expectEqual("batched events", batchIds, reference);
    expect(largest === 2, "no message held two events");
    const tooMany = await expectStatus(
      (async () => {
        for await (const _ of orders(1001)) void _;
      })(),
      grpc.status.INVALID_ARGUMENT,
    );
    expectEqual("violations", badFields(tooMany), ["max_batch"]);
    ok(`${reference.length} ORDER events in ${batched.length - 1} messages of up to 2; max_batch 1001 refused`);
  } catch (e) {
    if (e instanceof ScenarioFailure) throw e;
    const code = (e as { code?: number }).code;
    throw new ScenarioFailure(scenario, code === undefined ? String(e) : `unexpected ${grpc.status[code]}: ${(e as Error).message}`);
  } finally {
    for (const controller of subscriptions) controller.abort();
    instances.close();
    events.close();
  }
}

function show(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => (typeof v === "bigint" ? `${v}n` : v));
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [address, ns] = process.argv.slice(2);
  if (address === undefined || ns === undefined || !NAMESPACE.test(ns)) {
    console.error("usage: scenarios.ts ADDRESS NAMESPACE (namespace: [a-z0-9][a-z0-9-]{0,40})");
    process.exit(2);
  }
  runScenarios(address, ns).then(
    () => process.exit(0),
    (e: unknown) => {
      console.error(e instanceof ScenarioFailure ? e.message : e);
      process.exit(1);
    },
  );
}

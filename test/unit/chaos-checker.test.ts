/**
 * The chaos checker on hand-made histories and observations: a consistent store has no anomaly,
 * and each kind of damage — a lost acknowledged write (W1), an event at two seqs or two events at
 * one seq (W2, W4), a skipped or reordered publication (R1, R2), a second side effect (C1), an
 * applied-out-of-order effect (C2), an unexplained gap or object (W5), a broken batch (W7) — is
 * counted as exactly its anomaly, while timeouts stay indeterminate.
 */
import { describe, expect, it } from "vitest";
import type { SlotObject } from "../../chaos/bucket.js";
import { check, type KafkaRecord, type Observations, type ReadEvent, type StreamObservation } from "../../chaos/checker.js";
import type { EffectRow } from "../../chaos/effects.js";
import type { Attempt, Op } from "../../chaos/history.js";

const T = "ChaosAccount";
const H = "chaos-effects";

/** A store where `ops` (each an append of its event ids to acct-0, in order) were acknowledged and fully delivered. */
function healthy(batches: string[][]): Observations {
  const ops: Op[] = [];
  const attempts: Attempt[] = [];
  const events: ReadEvent[] = [];
  const objects: SlotObject[] = [];
  const kafka: KafkaRecord[] = [];
  const effects: EffectRow[] = [];
  let seq = 0;
  for (const ids of batches) {
    const landed = ids.map((eventId) => ({ eventId, seq: ++seq, position: seq }));
    ops.push({ id: ids[0]!, kind: "append", round: 1, writer: 0, aggregateType: T, aggregateId: "acct-0", expected: landed[0]!.seq - 1, eventIds: ids });
    attempts.push({ op: ids[0]!, attempt: 1, sentAt: seq * 10, answeredAt: seq * 10 + 5, outcome: "ok", landed });
    for (const l of landed) {
      events.push({ eventId: l.eventId, eventType: "ChaosNoted", seq: l.seq, position: l.position, commandId: undefined });
      objects.push(eventObject(l.seq, l.eventId));
      kafka.push({ partition: 0, offset: kafka.length, eventId: l.eventId, aggregateType: T, aggregateId: "acct-0", seq: l.seq });
      effects.push({ n: effects.length + 1, handler: H, eventId: l.eventId, aggregateType: T, aggregateId: "acct-0", seq: l.seq });
    }
  }
  return {
    history: { ops, attempts },
    streams: [{ aggregateType: T, aggregateId: "acct-0", head: seq, allocated: seq, events }],
    objects,
    kafka,
    effects,
    handler: H,
    instances: [],
    deadLetters: 0,
    settled: true,
    notConverged: [],
  };
}

// Keys are opaque to the checker (the layout is chaos/bucket.ts's business): any unique name will do.
function key(seq: number): string {
  return `object-of-acct-0-at-${seq}`;
}

function eventObject(seq: number, eventId: string): SlotObject {
  return { key: key(seq), slot: { aggregateType: T, aggregateId: "acct-0", seq }, content: { type: "event", eventId, aggregateType: T, aggregateId: "acct-0", seq } };
}

function voidObject(seq: number, eventId: string): SlotObject {
  return { key: key(seq), slot: { aggregateType: T, aggregateId: "acct-0", seq }, content: { type: "void", eventId, seq } };
}

function stream(o: Observations): StreamObservation {
  return o.streams[0]!;
}

/** The non-zero anomaly counts. */
function found(o: Observations): Record<string, number> {
  return Object.fromEntries(Object.entries(check(o).anomalies).filter(([, n]) => n > 0));
}

describe("the chaos checker", () => {
  it("finds nothing in a consistent store, and counts what was acknowledged", () => {
    const o = healthy([["e1", "e2"], ["e3"]]);
    const r = check(o);
    expect(found(o)).toEqual({});
    expect(r).toMatchObject({ ok: true, acknowledged: 3, indeterminate: 0, readable: 3, kafkaMessages: 3, effects: 3 });
  });

  it("counts an acknowledged event that is not readable as lost (W1), and a readable one never published as lost on Kafka (R1)", () => {
    const o = healthy([["e1"], ["e2"]]);
    const s = stream(o);
    const gone = { ...o, streams: [{ ...s, events: s.events.slice(0, 1) }], kafka: o.kafka.slice(0, 1), effects: o.effects.slice(0, 1) };
    // e2's slot still holds its object and is below the head but unreadable: also a gap.
    expect(found(gone)).toEqual({ lost: 1, gaps: 1, orphans: 1 });
    const unpublished = { ...o, kafka: o.kafka.slice(0, 1) };
    expect(found(unpublished)).toEqual({ lostOnKafka: 1 });
  });

  it("keeps a timed-out write indeterminate: neither lost when absent nor a phantom when present", () => {
    const o = healthy([["e1"]]);
    const op: Op = { id: "e2", kind: "append", round: 1, writer: 1, aggregateType: T, aggregateId: "acct-0", expected: 1, eventIds: ["e2"] };
    const timeout: Attempt = { op: "e2", attempt: 1, sentAt: 100, answeredAt: 5100, outcome: "indeterminate", code: "DEADLINE_EXCEEDED" };
    const absent = { ...o, history: { ops: [...o.history.ops, op], attempts: [...o.history.attempts, timeout] } };
    expect(found(absent)).toEqual({});
    expect(check(absent).indeterminate).toBe(1);

    const landed = healthy([["e1"], ["e2"]]);
    const present = { ...landed, history: { ops: [landed.history.ops[0]!, op], attempts: [landed.history.attempts[0]!, timeout] } };
    expect(found(present)).toEqual({});
    expect(check(present)).toMatchObject({ acknowledged: 1, indeterminate: 1, indeterminateLanded: 1 });
  });

  it("counts a readable event that every attempt saw refused, or that nobody sent, as a phantom", () => {
    const o = healthy([["e1"], ["e2"]]);
    const refused: Attempt = { op: "e2", attempt: 1, sentAt: 15, answeredAt: 18, outcome: "fail", code: "ABORTED", actual: 1 };
    expect(found({ ...o, history: { ops: o.history.ops, attempts: [o.history.attempts[0]!, refused] } })).toEqual({ phantoms: 1 });
    expect(found({ ...o, history: { ops: [o.history.ops[0]!], attempts: [o.history.attempts[0]!] } })).toEqual({ phantoms: 1 });
  });

  it("counts one event id at two seqs as a duplicate (W4) and two events at one slot as a double slot (W2)", () => {
    const o = healthy([["e1"], ["e2"]]);
    const s = stream(o);
    const twice = { ...o, streams: [{ ...s, head: 3, allocated: 3, events: [...s.events, { ...s.events[0]!, seq: 3, position: 3 }] }], objects: [...o.objects, eventObject(3, "e1")] };
    expect(found(twice)).toMatchObject({ duplicates: 1 });
    const swapped = { ...o, kafka: [o.kafka[0]!, { ...o.kafka[1]!, seq: 1 }] };
    expect(found(swapped)).toMatchObject({ doubleSlot: 1 });
  });

  it("tells a republished tail (R4) from a reordering (R2) on Kafka", () => {
    const o = healthy([["e1"], ["e2"], ["e3"]]);
    const tail = { ...o, kafka: [...o.kafka, { ...o.kafka[1]!, offset: 3 }, { ...o.kafka[2]!, offset: 4 }] };
    expect(found(tail)).toEqual({});
    expect(check(tail).kafkaRedeliveries).toBe(2);
    const reordered = { ...o, kafka: [o.kafka[0]!, { ...o.kafka[2]!, offset: 1 }, { ...o.kafka[1]!, offset: 2 }] };
    expect(found(reordered)).toEqual({ reorderedKafka: 1 });
    const split = { ...o, kafka: [o.kafka[0]!, { ...o.kafka[1]!, partition: 1 }, o.kafka[2]!] };
    expect(found(split)).toEqual({ reorderedKafka: 1 });
  });

  it("counts a committed event never published as unseen, and one never applied as unapplied, when it was indeterminate", () => {
    const o = healthy([["e1"], ["e2"]]);
    const timeout: Attempt = { op: "e2", attempt: 1, sentAt: 15, answeredAt: 5015, outcome: "indeterminate", code: "UNAVAILABLE" };
    const unacked = { ...o, history: { ops: o.history.ops, attempts: [o.history.attempts[0]!, timeout] } };
    expect(found({ ...unacked, kafka: o.kafka.slice(0, 1) })).toEqual({ unseen: 1 });
    expect(found({ ...unacked, effects: o.effects.slice(0, 1) })).toEqual({ unapplied: 1 });
    expect(found({ ...o, effects: o.effects.slice(0, 1) })).toEqual({ lostEffects: 1 });
  });

  it("counts a second effect of one event (C1) and an effect applied after a higher seq (C2)", () => {
    const o = healthy([["e1"], ["e2"]]);
    expect(found({ ...o, effects: [...o.effects, { ...o.effects[0]!, n: 3 }] })).toEqual({ duplicateEffects: 1 });
    expect(found({ ...o, effects: [{ ...o.effects[1]!, n: 1 }, { ...o.effects[0]!, n: 2 }] })).toEqual({ reorderedEffects: 1 });
    expect(found({ ...o, effects: o.effects.map((e) => ({ ...e, handler: "someone-else" })) })).toEqual({ lostEffects: 2 });
  });

  it("explains a void slot and a voided batch's written object (W5), and nothing else", () => {
    // Slots 2 and 3 held a batch [x1, x2] whose writer died after writing x1: the sweeper voided
    // slot 3 (naming x2), the retry landed the batch at 4 and 5.
    const o = healthy([["e1"], ["x1", "x2"]]);
    const s = stream(o);
    const retried = s.events.slice(1).map((e, i) => ({ ...e, seq: 4 + i, position: 4 + i }));
    const history = {
      ops: o.history.ops,
      attempts: [o.history.attempts[0]!, { ...o.history.attempts[1]!, landed: retried.map((e) => ({ eventId: e.eventId, seq: e.seq, position: e.position })) }],
    };
    const voided: Observations = {
      ...o,
      history,
      streams: [{ ...s, head: 5, allocated: 5, events: [s.events[0]!, ...retried] }],
      objects: [o.objects[0]!, eventObject(2, "x1"), voidObject(3, "x2"), eventObject(4, "x1"), eventObject(5, "x2")],
      kafka: [o.kafka[0]!, ...retried.map((e, i) => ({ ...o.kafka[0]!, offset: 1 + i, eventId: e.eventId, seq: e.seq }))],
      effects: [o.effects[0]!, ...retried.map((e, i) => ({ ...o.effects[0]!, n: 2 + i, eventId: e.eventId, seq: e.seq }))],
    };
    expect(found(voided)).toEqual({});

    const noMarker = { ...voided, objects: voided.objects.filter((x) => x.content.type !== "void") };
    expect(found(noMarker)).toEqual({ gaps: 2, orphans: 1 });
    const above = { ...voided, objects: [...voided.objects, eventObject(9, "stray")] };
    expect(found(above)).toEqual({ orphans: 1 });
    const unbacked = { ...voided, objects: voided.objects.filter((x) => x.slot?.seq !== 5) };
    expect(found(unbacked)).toEqual({ unbacked: 1 });
  });

  it("explains missing seqs by attempts that may have used them up, and no more (segments leave no trace of a closed reservation)", () => {
    // e2's first attempt timed out after its reservation at seq 2 was closed; its retry landed at 3.
    const o = healthy([["e1"], ["e2"]]);
    const s = stream(o);
    const moved = { ...s.events[1]!, seq: 3, position: 3 };
    const timeout: Attempt = { op: "e2", attempt: 1, sentAt: 20, answeredAt: 5020, outcome: "indeterminate", code: "UNAVAILABLE" };
    const retry: Attempt = { ...o.history.attempts[1]!, attempt: 2, landed: [{ eventId: "e2", seq: 3, position: 3 }] };
    const gap: Observations = {
      ...o,
      history: { ops: o.history.ops, attempts: [o.history.attempts[0]!, timeout, retry] },
      streams: [{ ...s, head: 3, allocated: 3, events: [s.events[0]!, moved] }],
      objects: [o.objects[0]!, eventObject(3, "e2")],
      kafka: [o.kafka[0]!, { ...o.kafka[1]!, seq: 3 }],
      effects: [o.effects[0]!, { ...o.effects[1]!, seq: 3 }],
    };
    expect(found(gap)).toEqual({});
    // Two seqs missing, one attempt that could have used one up: one gap is unexplained.
    const wider = { ...gap, streams: [{ ...s, head: 4, allocated: 4, events: [s.events[0]!, { ...moved, seq: 4, position: 4 }] }], objects: [o.objects[0]!, eventObject(4, "e2")], kafka: [o.kafka[0]!, { ...o.kafka[1]!, seq: 4 }], effects: [o.effects[0]!, { ...o.effects[1]!, seq: 4 }] };
    expect(found({ ...wider, history: { ...wider.history, attempts: [o.history.attempts[0]!, timeout, { ...retry, landed: [{ eventId: "e2", seq: 4, position: 4 }] }] } })).toEqual({ gaps: 1 });
    // Without the timed-out attempt nothing explains the gap.
    expect(found({ ...gap, history: { ops: o.history.ops, attempts: [o.history.attempts[0]!, retry] } })).toEqual({ gaps: 1 });
  });

  it("counts a batch that is only partly readable, or not contiguous (W7)", () => {
    const o = healthy([["e1", "e2", "e3"]]);
    const s = stream(o);
    const timeout: Attempt = { op: "e1", attempt: 1, sentAt: 1, answeredAt: 5001, outcome: "indeterminate", code: "UNAVAILABLE" };
    const partial: Observations = {
      ...o,
      history: { ops: o.history.ops, attempts: [timeout] },
      streams: [{ ...s, head: 2, allocated: 2, events: s.events.slice(0, 2) }],
      objects: o.objects.slice(0, 2),
      kafka: o.kafka.slice(0, 2),
      effects: o.effects.slice(0, 2),
    };
    expect(found(partial)).toEqual({ partialBatches: 1 });
  });

  it("counts an instance created twice, a stale refusal (W3), a read model behind (C6), and unexpected answers", () => {
    const created = (seq: number, commandId: string): ReadEvent => ({ eventId: `i${seq}`, eventType: "InstanceCreated", seq, position: seq, commandId });
    const base: Observations = {
      ...healthy([]),
      streams: [{ aggregateType: "Instance", aggregateId: "chaos/Item/a", head: 2, allocated: 2, events: [created(1, "c1"), created(2, "c2")] }],
      objects: [],
      history: {
        ops: [
          { id: "c1", kind: "create", round: 1, writer: 0, aggregateType: "Instance", aggregateId: "chaos/Item/a", expected: 0, eventIds: [], commandId: "c1" },
          { id: "c2", kind: "create", round: 1, writer: 1, aggregateType: "Instance", aggregateId: "chaos/Item/a", expected: 0, eventIds: [], commandId: "c2" },
          { id: "u1", kind: "update", round: 1, writer: 2, aggregateType: "Instance", aggregateId: "chaos/Item/a", expected: 1, eventIds: [], commandId: "u1" },
        ],
        attempts: [
          { op: "c1", attempt: 1, sentAt: 0, answeredAt: 10, outcome: "ok", landed: [{ eventId: "i1", seq: 1, position: 1 }] },
          { op: "c2", attempt: 1, sentAt: 20, answeredAt: 30, outcome: "ok", landed: [{ eventId: "i2", seq: 2, position: 2 }] },
          { op: "u1", attempt: 1, sentAt: 40, answeredAt: 50, outcome: "fail", code: "NOT_FOUND", message: "5 NOT_FOUND: instance does not exist" },
          { op: "u1", attempt: 2, sentAt: 60, answeredAt: 70, outcome: "indeterminate", code: "INTERNAL", message: "13 INTERNAL: oops" },
        ],
      },
      instances: [{ aggregateId: "chaos/Item/a", eventualVersion: 1 }],
    };
    const r = check({ ...base, kafka: [], effects: [] });
    expect(r.anomalies).toMatchObject({ instanceHistory: 1, staleRefusals: 1, projection: 1, unexpectedErrors: 1 });
    // A torn connection that grpc-js reports as INTERNAL is transport, not Tidemark.
    const transport = { ...base.history.attempts[3]!, message: "13 INTERNAL: Received RST_STREAM with code 2" };
    expect(check({ ...base, history: { ...base.history, attempts: [...base.history.attempts.slice(0, 3), transport] } }).anomalies.unexpectedErrors).toBe(0);
  });

  it("reports every round that did not converge, and dead letters", () => {
    const o = healthy([["e1"]]);
    const late = [
      { round: 2, waitingFor: "consumer group g (3 messages behind)" },
      { round: 5, waitingFor: "one active relay (0 active)" },
    ];
    expect(found({ ...o, notConverged: late, deadLetters: 2 })).toEqual({ notConverged: 2, deadLetters: 2 });
  });

  it("counts what is not yet published, applied or projected as pending, not lost, while the pipeline has not settled", () => {
    const o = healthy([["e1"], ["e2"]]);
    const timeout: Attempt = { op: "e2", attempt: 1, sentAt: 15, answeredAt: 5015, outcome: "indeterminate", code: "UNAVAILABLE" };
    const behind: Observations = {
      ...o,
      history: { ops: o.history.ops, attempts: [o.history.attempts[0]!, timeout] },
      kafka: o.kafka.slice(0, 1),
      effects: [],
      settled: false,
      notConverged: [{ round: 1, waitingFor: "consumer group g (1 messages behind)" }],
    };
    expect(found(behind)).toEqual({ notConverged: 1 });
    expect(check(behind).pending).toEqual({ kafka: 1, effects: 2, projection: 0, inFlightObjects: 0 });
    // Settled, the same absences are losses.
    expect(found({ ...behind, settled: true, notConverged: [] })).toEqual({ unseen: 1, lostEffects: 1, unapplied: 1 });
    // Duplicates are judged either way: late is no excuse for twice.
    expect(found({ ...behind, effects: [o.effects[0]!, { ...o.effects[0]!, n: 2 }] })).toEqual({ notConverged: 1, duplicateEffects: 1 });
  });

  it("leaves an object above the head alone while its reservation is in flight", () => {
    const o = healthy([["e1"]]);
    const s = stream(o);
    const inFlight = { ...o, settled: false, streams: [{ ...s, allocated: 2 }], objects: [...o.objects, eventObject(2, "e2")] };
    expect(found(inFlight)).toEqual({});
    expect(check(inFlight).pending.inFlightObjects).toBe(1);
    // Resolved (allocated back at the head) with the object still there and nothing naming it: an orphan.
    expect(found({ ...inFlight, settled: true, streams: [s] })).toEqual({ orphans: 1 });
  });
});

/**
 * The independent checker, modeled on Jepsen's Kafka workload: a pure function from the clients'
 * history and what a user can observe — the streams through gRPC, the bucket, the Kafka topic,
 * the effect log, the read model — to counts of anomalies with samples. Timeouts and `UNAVAILABLE`
 * are indeterminate: such an operation may or may not have landed, and is never counted as lost or
 * as a success. docs/CHAOS.md defines each anomaly.
 */
import type { SlotObject } from "./bucket.js";
import type { EffectRow } from "./effects.js";
import { opStatus, type Attempt, type History, type Landed, type Op, type OpStatus } from "./history.js";

/** One event as ReadStream returned it. */
export interface ReadEvent {
  readonly eventId: string;
  readonly eventType: string;
  readonly seq: number;
  readonly position: number;
  /** The `command_id` metadata of an instance command's event. */
  readonly commandId: string | undefined;
}

/** One stream: its head (GetStreamHead) and its readable events (ReadStream). */
export interface StreamObservation {
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly head: number;
  readonly allocated: number;
  readonly events: readonly ReadEvent[];
}

/** One message of the event topic (decoded value; the partition's order is the offset). */
export interface KafkaRecord {
  readonly partition: number;
  readonly offset: number;
  readonly eventId: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly seq: number;
}

/** An instance's read-model version (EVENTUAL read) beside its stream. */
export interface InstanceObservation {
  readonly aggregateId: string;
  /** Undefined when the read model has no row. */
  readonly eventualVersion: number | undefined;
}

/** Everything the checker judges. */
export interface Observations {
  readonly history: History;
  readonly streams: readonly StreamObservation[];
  readonly objects: readonly SlotObject[];
  readonly kafka: readonly KafkaRecord[];
  readonly effects: readonly EffectRow[];
  /** The handler whose effects must cover every committed event. */
  readonly handler: string;
  readonly instances: readonly InstanceObservation[];
  /** Messages on the dead-letter topic. */
  readonly deadLetters: number;
  /**
   * True when the pipeline had caught up when these observations were made (every stream resolved,
   * the relay and every consumer group at the end). Only then is an event missing from Kafka, the
   * effect log or the read model missing for good; before, it may still be on its way.
   */
  readonly settled: boolean;
  /** The rounds so far whose pipeline did not converge within the bound after the heal. */
  readonly notConverged: readonly { readonly round: number; readonly waitingFor: string }[];
}

/** The anomalies, in report order. */
export const ANOMALIES = [
  "lost",
  "lostOnKafka",
  "lostEffects",
  "unseen",
  "unapplied",
  "ackMismatch",
  "partialBatches",
  "duplicates",
  "doubleSlot",
  "reorderedKafka",
  "reorderedEffects",
  "duplicateEffects",
  "phantoms",
  "unbacked",
  "orphans",
  "gaps",
  "projection",
  "instanceHistory",
  "staleRefusals",
  "deadLetters",
  "unexpectedErrors",
  "notConverged",
] as const;

/** One anomaly's name. */
export type Anomaly = (typeof ANOMALIES)[number];

/** The checker's verdict. */
export interface CheckReport {
  readonly ops: number;
  readonly attempts: number;
  /** Events of acknowledged operations. */
  readonly acknowledged: number;
  /** Operations with no OK and at least one attempt that may have landed. */
  readonly indeterminate: number;
  /** Events of indeterminate operations that are readable (they landed). */
  readonly indeterminateLanded: number;
  /** Operations refused in every attempt. */
  readonly failed: number;
  readonly readable: number;
  readonly kafkaMessages: number;
  /** Kafka messages that repeat an event already published (at least once, R4): not an anomaly. */
  readonly kafkaRedeliveries: number;
  readonly effects: number;
  /**
   * Readable events not yet on Kafka, not yet applied, or not yet in the read model while the
   * pipeline was not settled: not judged (their round counts as `notConverged`).
   */
  readonly pending: { readonly kafka: number; readonly effects: number; readonly projection: number; readonly inFlightObjects: number };
  readonly anomalies: Record<Anomaly, number>;
  readonly samples: Partial<Record<Anomaly, unknown[]>>;
  /** True when every anomaly count is zero. */
  readonly ok: boolean;
}

const SAMPLES = 10;
// Status names that mean the request itself was wrong, or Tidemark failed in a way it promises not to.
// NOT_FOUND is expected of an update whose only predecessor was voided; staleRefusals judges it.
const UNEXPECTED_CODES = new Set(["INVALID_ARGUMENT", "FAILED_PRECONDITION", "ALREADY_EXISTS", "CLIENT_ERROR"]);
// grpc-js reports a connection torn down mid-call as INTERNAL: transport, not Tidemark.
const TRANSPORT_INTERNAL = /RST_STREAM|Protocol error|Received http2 header|stream removed|Connection dropped|ECONNRESET/i;

const slotKey = (type: string, id: string, seq: number) => `${type}\u0000${id}\u0000${seq}`;
const streamKey = (type: string, id: string) => `${type}\u0000${id}`;

/** Judges the observations against the history. */
export function check(o: Observations): CheckReport {
  const anomalies = Object.fromEntries(ANOMALIES.map((a) => [a, 0])) as Record<Anomaly, number>;
  const samples: Partial<Record<Anomaly, unknown[]>> = {};
  const report = (a: Anomaly, sample: unknown, n = 1) => {
    anomalies[a] += n;
    const list = (samples[a] ??= []);
    if (list.length < SAMPLES) list.push(sample);
  };
  // Absences downstream of the commit log are judged only once the pipeline has caught up: before,
  // an event not yet applied is late, not lost (the round is reported as notConverged instead).
  const pending = { kafka: 0, effects: 0, projection: 0, inFlightObjects: 0 };

  // ---- the history
  const attemptsByOp = new Map<string, Attempt[]>();
  for (const a of o.history.attempts) {
    const list = attemptsByOp.get(a.op) ?? [];
    list.push(a);
    attemptsByOp.set(a.op, list);
  }
  const status = new Map<string, OpStatus>();
  const opByEvent = new Map<string, Op>();
  const opByCommand = new Map<string, Op>();
  let acknowledged = 0;
  let indeterminate = 0;
  let failed = 0;
  for (const op of o.history.ops) {
    const attempts = attemptsByOp.get(op.id) ?? [];
    const s = opStatus(attempts);
    status.set(op.id, s);
    for (const id of op.eventIds) opByEvent.set(id, op);
    if (op.commandId !== undefined) opByCommand.set(op.commandId, op);
    if (s.type === "acknowledged") {
      acknowledged += s.landed.length;
      if (op.commandId !== undefined) for (const l of s.landed) opByEvent.set(l.eventId, op);
      // Every OK of one operation must give the first result (W4).
      for (const a of attempts) {
        if (a.outcome === "ok" && JSON.stringify(a.landed) !== JSON.stringify(s.landed)) report("ackMismatch", { op: op.id, first: s.landed, later: a.landed });
      }
    } else if (s.type === "failed") failed++;
    else indeterminate++;
    for (const a of attempts) {
      if (a.code === undefined) continue;
      if (UNEXPECTED_CODES.has(a.code) || (a.code === "INTERNAL" && !TRANSPORT_INTERNAL.test(a.message ?? ""))) {
        report("unexpectedErrors", { op: op.id, attempt: a.attempt, code: a.code, message: a.message });
      }
    }
  }

  // ---- the streams (ReadStream, GetStreamHead)
  const readable = new Map<string, { type: string; id: string; seq: number; position: number }>();
  const readableAt = new Map<string, string>();
  const streamByKey = new Map<string, StreamObservation>();
  const eventOfCommand = new Map<string, string>();
  let readableCount = 0;
  for (const s of o.streams) {
    streamByKey.set(streamKey(s.aggregateType, s.aggregateId), s);
    let lastSeq = 0;
    for (const e of s.events) {
      readableCount++;
      const where = { type: s.aggregateType, id: s.aggregateId, seq: e.seq, position: e.position };
      if (e.seq <= lastSeq) report("doubleSlot", { stream: s.aggregateId, seq: e.seq, eventId: e.eventId, reason: "ReadStream returned a seq out of order or twice" });
      lastSeq = Math.max(lastSeq, e.seq);
      const earlier = readable.get(e.eventId);
      if (earlier !== undefined) report("duplicates", { eventId: e.eventId, first: earlier, again: where });
      else readable.set(e.eventId, where);
      readableAt.set(slotKey(s.aggregateType, s.aggregateId, e.seq), e.eventId);
      if (e.commandId !== undefined) eventOfCommand.set(e.commandId, e.eventId);

      // Who sent it? An append's event id, or an instance command's command_id metadata.
      const op = opByEvent.get(e.eventId) ?? (e.commandId === undefined ? undefined : opByCommand.get(e.commandId));
      const st = op === undefined ? undefined : status.get(op.id);
      if (op === undefined) report("phantoms", { eventId: e.eventId, at: where, reason: "no client ever sent it" });
      else if (st?.type === "failed") report("phantoms", { eventId: e.eventId, at: where, op: op.id, reason: "every attempt was refused" });
      else if (op.aggregateType !== s.aggregateType || op.aggregateId !== s.aggregateId) report("ackMismatch", { eventId: e.eventId, op: op.id, sentTo: op.aggregateId, readIn: s.aggregateId });
      else if (st?.type === "acknowledged") {
        const landed = st.landed.find((l) => l.eventId === e.eventId);
        if (landed === undefined || landed.seq !== e.seq || landed.position !== e.position) report("ackMismatch", { eventId: e.eventId, acknowledged: landed, read: where });
      }
    }
  }

  // ---- acknowledged and landed events, batch atomicity (W1, W7)
  const acked = new Map<string, Landed>();
  const landedIndeterminate = new Set<string>();
  for (const op of o.history.ops) {
    const s = status.get(op.id)!;
    if (s.type === "acknowledged") {
      for (const l of s.landed) {
        acked.set(l.eventId, l);
        if (!readable.has(l.eventId)) report("lost", { eventId: l.eventId, op: op.id, aggregate: op.aggregateId, acknowledged: l });
      }
    } else if (s.type === "indeterminate") {
      for (const id of op.eventIds) if (readable.has(id)) landedIndeterminate.add(id);
      const landed = op.commandId === undefined ? undefined : eventOfCommand.get(op.commandId);
      if (landed !== undefined) landedIndeterminate.add(landed);
    }
    if (op.eventIds.length > 1) {
      const present = op.eventIds.filter((id) => readable.has(id));
      const seqs = present.map((id) => readable.get(id)!.seq);
      const contiguous = seqs.every((seq, i) => i === 0 || seq === seqs[i - 1]! + 1);
      if ((present.length > 0 && present.length < op.eventIds.length) || !contiguous) report("partialBatches", { op: op.id, events: op.eventIds, readable: present, seqs });
    }
  }

  // ---- Kafka: every committed event published (R1), per-aggregate order (R2), at least once (R4)
  const published = new Set<string>();
  const byAggregate = new Map<string, KafkaRecord[]>();
  for (const r of o.kafka) {
    const k = streamKey(r.aggregateType, r.aggregateId);
    const list = byAggregate.get(k) ?? [];
    list.push(r);
    byAggregate.set(k, list);
    const at = readableAt.get(slotKey(r.aggregateType, r.aggregateId, r.seq));
    if (!readable.has(r.eventId)) report("phantoms", { eventId: r.eventId, partition: r.partition, offset: r.offset, reason: "on Kafka but not readable" });
    else if (at !== r.eventId) report("doubleSlot", { eventId: r.eventId, slot: [r.aggregateId, r.seq], readableThere: at, source: "kafka" });
  }
  let redeliveries = 0;
  for (const [k, records] of byAggregate) {
    const partitions = new Set(records.map((r) => r.partition));
    if (partitions.size > 1) report("reorderedKafka", { aggregate: k.replace("\u0000", "/"), partitions: [...partitions], reason: "one aggregate on several partitions" });
    // Order holds within a partition; an aggregate on several partitions is reported once above.
    records.sort((a, b) => a.partition - b.partition || a.offset - b.offset);
    let maxSeq = 0;
    let partition = records[0]?.partition;
    for (const r of records) {
      if (r.partition !== partition) {
        partition = r.partition;
        maxSeq = 0;
      }
      if (published.has(r.eventId)) {
        redeliveries++;
        continue;
      }
      published.add(r.eventId);
      if (r.seq <= maxSeq) report("reorderedKafka", { aggregate: r.aggregateId, seq: r.seq, after: maxSeq, offset: r.offset, partition: r.partition });
      maxSeq = Math.max(maxSeq, r.seq);
    }
  }
  for (const [eventId, where] of readable) {
    if (published.has(eventId)) continue;
    if (!o.settled) pending.kafka++;
    else if (acked.has(eventId)) report("lostOnKafka", { eventId, at: where });
    else report("unseen", { eventId, at: where });
  }

  // ---- the effect log: exactly one effect per event (C1), in order per aggregate (C2)
  const effectCount = new Map<string, number>();
  const effectsByAggregate = new Map<string, EffectRow[]>();
  for (const e of o.effects) {
    if (e.handler !== o.handler) continue;
    effectCount.set(e.eventId, (effectCount.get(e.eventId) ?? 0) + 1);
    const k = streamKey(e.aggregateType, e.aggregateId);
    const list = effectsByAggregate.get(k) ?? [];
    list.push(e);
    effectsByAggregate.set(k, list);
    const at = readableAt.get(slotKey(e.aggregateType, e.aggregateId, e.seq));
    if (!readable.has(e.eventId)) report("phantoms", { eventId: e.eventId, n: e.n, reason: "applied but not readable" });
    else if (at !== e.eventId) report("doubleSlot", { eventId: e.eventId, slot: [e.aggregateId, e.seq], readableThere: at, source: "effects" });
  }
  for (const [eventId, n] of effectCount) if (n > 1) report("duplicateEffects", { eventId, rows: n }, n - 1);
  for (const rows of effectsByAggregate.values()) {
    const seen = new Set<string>();
    let maxSeq = 0;
    for (const r of rows.sort((a, b) => a.n - b.n)) {
      if (seen.has(r.eventId)) continue;
      seen.add(r.eventId);
      if (r.seq <= maxSeq) report("reorderedEffects", { aggregate: r.aggregateId, seq: r.seq, after: maxSeq, n: r.n });
      maxSeq = Math.max(maxSeq, r.seq);
    }
  }
  for (const [eventId, where] of readable) {
    if (effectCount.has(eventId)) continue;
    if (!o.settled) pending.effects++;
    else if (acked.has(eventId)) report("lostEffects", { eventId, at: where });
    else report("unapplied", { eventId, at: where });
  }

  // ---- the bucket: every readable event backed by its object (W1), every other object and every
  // missing seq explained by a void marker (W5)
  const objectsByStream = new Map<string, Map<number, SlotObject>>();
  for (const obj of o.objects) {
    if (obj.slot === undefined || obj.content.type === "unreadable") {
      report("orphans", { key: obj.key, reason: obj.slot === undefined ? "key outside the layout" : obj.content.type === "unreadable" ? obj.content.reason : "" });
      continue;
    }
    if (obj.content.type === "event" && (obj.content.aggregateType !== obj.slot.aggregateType || obj.content.aggregateId !== obj.slot.aggregateId || obj.content.seq !== obj.slot.seq)) {
      report("orphans", { key: obj.key, reason: "the envelope names another slot", holds: obj.content });
      continue;
    }
    const k = streamKey(obj.slot.aggregateType, obj.slot.aggregateId);
    const m = objectsByStream.get(k) ?? new Map<number, SlotObject>();
    m.set(obj.slot.seq, obj);
    objectsByStream.set(k, m);
  }
  for (const [k, slots] of objectsByStream) {
    const s = streamByKey.get(k);
    if (s === undefined) {
      report("orphans", { stream: k.replace("\u0000", "/"), objects: slots.size, reason: "a stream the checker did not read" }, slots.size);
    }
  }
  // Seqs an unacknowledged attempt may have used up: with segments a closed reservation leaves no
  // trace in the bucket (a void segment does not list the slots it closed), so a missing seq is
  // explained when the stream's indeterminate attempts reserved at least as many seqs as are missing.
  const burnable = new Map<string, number>();
  const opOfAttempt = new Map(o.history.ops.map((op) => [op.id, op]));
  for (const a of o.history.attempts) {
    if (a.outcome !== "indeterminate") continue;
    const op = opOfAttempt.get(a.op);
    if (op === undefined) continue;
    const k = streamKey(op.aggregateType, op.aggregateId);
    burnable.set(k, (burnable.get(k) ?? 0) + Math.max(1, op.eventIds.length));
  }
  for (const s of o.streams) {
    const slots = objectsByStream.get(streamKey(s.aggregateType, s.aggregateId)) ?? new Map<number, SlotObject>();
    let budget = burnable.get(streamKey(s.aggregateType, s.aggregateId)) ?? 0;
    const readSeqs = new Map(s.events.map((e) => [e.seq, e.eventId]));
    // Ops whose reservation the sweeper voided: a void marker names the event it closed out.
    const voidedOps = new Set<string>();
    for (const obj of slots.values()) {
      if (obj.content.type !== "void") continue;
      const op = opByEvent.get(obj.content.eventId) ?? undefined;
      voidedOps.add(op?.id ?? `event:${obj.content.eventId}`);
    }
    const explainedEvent = (eventId: string) => {
      const op = opByEvent.get(eventId);
      return op !== undefined && voidedOps.has(op.id);
    };
    const top = Math.max(s.head, s.allocated, ...slots.keys());
    for (let seq = 1; seq <= top; seq++) {
      const obj = slots.get(seq);
      const readId = readSeqs.get(seq);
      if (readId !== undefined) {
        if (obj === undefined) report("unbacked", { stream: s.aggregateId, seq, eventId: readId });
        else if (obj.content.type !== "event" || obj.content.eventId !== readId) report("doubleSlot", { stream: s.aggregateId, seq, readable: readId, object: obj.content, source: "bucket" });
        continue;
      }
      const inHead = seq <= s.head;
      const explained = obj !== undefined && inHead && (obj.content.type === "void" || (obj.content.type === "event" && explainedEvent(obj.content.eventId)));
      if (explained) continue;
      if (inHead && obj === undefined && budget > 0) {
        budget--;
        continue;
      }
      if (inHead) report("gaps", { stream: s.aggregateId, seq, head: s.head, object: obj?.content ?? null });
      // A reservation still in flight (head below allocated): its object may yet be committed or voided.
      else if (obj !== undefined && seq <= s.allocated) {
        pending.inFlightObjects++;
        continue;
      }
      if (obj !== undefined) report("orphans", { key: obj.key, head: s.head, holds: obj.content });
    }
  }

  // ---- instance streams: created once, first; the workload never deletes (Instances, W3)
  for (const s of o.streams) {
    if (s.aggregateType !== "Instance") continue;
    s.events.forEach((e, i) => {
      if ((i === 0) !== (e.eventType === "InstanceCreated")) report("instanceHistory", { instance: s.aggregateId, seq: e.seq, eventType: e.eventType, reason: i === 0 ? "the first event is not the creation" : "created again" });
    });
  }

  // ---- refusals that contradict an earlier acknowledgement: an ABORTED head, or a NOT_FOUND,
  // behind a write acknowledged before the refused attempt was sent (W3)
  const ackedBy = new Map<string, { seq: number; at: number }[]>();
  for (const op of o.history.ops) {
    const s = status.get(op.id)!;
    if (s.type !== "acknowledged") continue;
    const at = Math.min(...(attemptsByOp.get(op.id) ?? []).filter((a) => a.outcome === "ok").map((a) => a.answeredAt));
    const list = ackedBy.get(streamKey(op.aggregateType, op.aggregateId)) ?? [];
    list.push({ seq: Math.max(...s.landed.map((l) => l.seq)), at });
    ackedBy.set(streamKey(op.aggregateType, op.aggregateId), list);
  }
  const opById = new Map(o.history.ops.map((op) => [op.id, op]));
  for (const a of o.history.attempts) {
    if (a.code !== "ABORTED" && a.code !== "NOT_FOUND") continue;
    const op = opById.get(a.op);
    if (op === undefined) continue;
    const before = (ackedBy.get(streamKey(op.aggregateType, op.aggregateId)) ?? []).filter((x) => x.at < a.sentAt);
    const known = before.reduce((m, x) => Math.max(m, x.seq), 0);
    const seen = a.code === "ABORTED" ? (a.actual ?? known) : 0;
    if (seen < known) report("staleRefusals", { op: op.id, attempt: a.attempt, code: a.code, answered: a.message, acknowledgedBefore: known });
  }

  // ---- the read model (C6): each instance at the seq of its stream's last event
  for (const inst of o.instances) {
    const s = streamByKey.get(streamKey("Instance", inst.aggregateId));
    const last = s?.events.at(-1)?.seq;
    if (last === inst.eventualVersion) continue;
    if (!o.settled) pending.projection++;
    else report("projection", { instance: inst.aggregateId, readModel: inst.eventualVersion ?? null, lastEvent: last ?? null });
  }

  if (o.deadLetters > 0) report("deadLetters", { messages: o.deadLetters }, o.deadLetters);
  for (const r of o.notConverged) report("notConverged", { round: r.round, waitingFor: r.waitingFor });

  return {
    ops: o.history.ops.length,
    attempts: o.history.attempts.length,
    acknowledged,
    indeterminate,
    indeterminateLanded: landedIndeterminate.size,
    failed,
    readable: readableCount,
    kafkaMessages: o.kafka.length,
    kafkaRedeliveries: redeliveries,
    effects: o.effects.length,
    pending,
    anomalies,
    samples,
    ok: ANOMALIES.every((a) => anomalies[a] === 0),
  };
}


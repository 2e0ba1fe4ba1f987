/**
 * `tidemark verify`: a read-only audit of the store (docs/OPERATIONS.md "Verifying the store").
 * It reads the commit log and every segment in the bucket and reports where they disagree:
 *
 * - every event of every segment is committed in the log at its `(aggregate, seq)`, at the bytes
 *   the header says, and its content hashes to its `content_hash` (W4's canonical hash);
 * - every committed slot of the log is in the segment it names, at that range (none points nowhere);
 * - every void segment's number is void in the log, and no committed slot is in it;
 * - each stream is contiguous from 1 to its head: every slot committed, pending (in flight), or void
 *   for a reason (its segment is void or does not hold it, its reservation was never written);
 * - each stream's hash chain holds (docs/STORAGE.md "Hash chain"): every event's `previous_hash`
 *   is the link of the slot before it, so a changed, removed or reordered event shows.
 *
 * It writes nothing, takes no lock and may run beside servers (slots in flight are counted as
 * pending, not reported).
 */
import type { Kysely } from "kysely";
import {
  chainLink,
  contentHash,
  decodeEnvelope,
  decodeSegment,
  type EventEnvelope,
  type ObjectStore,
  SEGMENT_PREFIX,
  segmentKey,
  segmentOfKey,
  selectSlots,
  type SlotRow,
  toSlotRow,
  type WriteSideTables,
} from "../core/index.js";

/** Kinds of anomaly. */
export type AnomalyKind =
  | "segment-unreadable"
  | "segment-missing"
  | "header-mismatch"
  | "content-hash-mismatch"
  | "event-not-in-log"
  | "log-mismatch"
  | "committed-event-missing"
  | "void-segment-not-void-in-log"
  | "stored-event-void-in-log"
  | "gap"
  | "chain-broken"
  | "log-chain-mismatch";

/** One finding, with whatever names it. */
export interface Anomaly {
  readonly kind: AnomalyKind;
  readonly message: string;
  readonly eventId?: string;
  readonly aggregateType?: string;
  readonly aggregateId?: string;
  readonly seq?: number;
  readonly segment?: number;
}

/** What an audit found. */
export interface VerifyReport {
  readonly clean: boolean;
  readonly segments: number;
  readonly voidSegments: number;
  readonly events: number;
  readonly streams: number;
  /** Slots in flight (pending): not anomalies. */
  readonly pending: number;
  /** Chain links that cannot be checked: the slot before is void and a recovery kept no link for it. */
  readonly unverifiedLinks: number;
  readonly counts: Partial<Record<AnomalyKind, number>>;
  /** At most `maxAnomalies` of them, in the order found. */
  readonly anomalies: readonly Anomaly[];
}

/** Progress, after every segment read. */
export interface VerifyProgress {
  readonly segments: number;
  readonly total: number;
  readonly events: number;
}

/** What an audit reads. */
export interface VerifyOptions {
  readonly db: Kysely<WriteSideTables>;
  readonly objects: ObjectStore;
  readonly maxAnomalies?: number;
  readonly onProgress?: (progress: VerifyProgress) => void;
}

/** Where a segment holds an event, and what the checks after the bucket's pass need of it (not its data). */
interface StoredAt {
  readonly segment: number;
  readonly start: number;
  readonly length: number;
  readonly envelope: Pick<EventEnvelope, "eventId" | "aggregateType" | "aggregateId" | "sequenceNumber" | "previousHash" | "contentHash">;
}

const slotKey = (aggregateType: string, aggregateId: string, seq: number) => `${aggregateType}\u0000${aggregateId}\u0000${seq}`;

/** Audits the commit log against the bucket (see the module comment). */
export async function verifyStore(options: VerifyOptions): Promise<VerifyReport> {
  const max = options.maxAnomalies ?? 100;
  const anomalies: Anomaly[] = [];
  const counts: Partial<Record<AnomalyKind, number>> = {};
  const report = (a: Anomaly) => {
    counts[a.kind] = (counts[a.kind] ?? 0) + 1;
    if (anomalies.length < max) anomalies.push(a);
  };

  const rows = (await selectSlots(options.db).orderBy("aggregate_type").orderBy("aggregate_id").orderBy("seq").execute()).map(toSlotRow);
  const heads = await options.db.selectFrom("stream_heads").select(["aggregate_type", "aggregate_id", "head"]).execute();
  const segmentStates = new Map((await options.db.selectFrom("segments").select(["segment", "state"]).execute()).map((r) => [Number(r.segment), r.state]));
  const live = new Map<string, SlotRow>();
  const voided = new Set<string>();
  for (const row of rows) {
    const k = slotKey(row.aggregateType, row.aggregateId, row.seq);
    if (row.state !== "void") live.set(k, row);
    else voided.add(k);
  }

  const keys = (await options.objects.list(SEGMENT_PREFIX)).filter((k) => segmentOfKey(k) !== undefined);
  const stored = new Map<string, StoredAt>();
  const inBucket = new Map<number, "events" | "void">();
  let events = 0;
  let voidSegments = 0;
  let done = 0;
  for (const key of keys) {
    const segment = segmentOfKey(key)!;
    const body = await options.objects.read(key);
    done += 1;
    if (body === undefined) continue;
    let decoded;
    try {
      decoded = decodeSegment(body);
    } catch (e) {
      report({ kind: "segment-unreadable", segment, message: `segment ${segment} (${key}) is not a readable segment: ${(e as Error).message}` });
      continue;
    }
    const { content } = decoded;
    if (content.type === "void") {
      voidSegments += 1;
      inBucket.set(segment, "void");
      if (segmentStates.get(segment) !== "void") report({ kind: "void-segment-not-void-in-log", segment, message: `segment ${segment} is a void marker in S3, but the log has it ${segmentStates.get(segment) ?? "unknown"}` });
      continue;
    }
    inBucket.set(segment, "events");
    for (const { entry, json } of decoded.events) {
      events += 1;
      const where = { eventId: entry.eventId, aggregateType: entry.aggregateType, aggregateId: entry.aggregateId, seq: entry.seq, segment };
      const name = `event ${entry.eventId} (${entry.aggregateType}/${entry.aggregateId} seq ${entry.seq}, segment ${segment})`;
      let envelope: EventEnvelope;
      try {
        envelope = decodeEnvelope(json);
      } catch (e) {
        report({ kind: "segment-unreadable", ...where, message: `${name}: its envelope does not decode: ${(e as Error).message}` });
        continue;
      }
      if (envelope.eventId !== entry.eventId || envelope.aggregateType !== entry.aggregateType || envelope.aggregateId !== entry.aggregateId || Number(envelope.sequenceNumber) !== entry.seq) {
        report({ kind: "header-mismatch", ...where, message: `${name}: the envelope says ${envelope.eventId} ${envelope.aggregateType}/${envelope.aggregateId} seq ${envelope.sequenceNumber}` });
      }
      const hash = contentHash({
        eventType: envelope.eventType,
        aggregateType: envelope.aggregateType,
        aggregateId: envelope.aggregateId,
        data: envelope.data ?? {},
        metadata: envelope.metadata,
        schemaVersion: envelope.schemaVersion,
        kind: envelope.kind,
        subject: envelope.subject,
        sealedData: envelope.sealedData,
      });
      if (hash !== envelope.contentHash) report({ kind: "content-hash-mismatch", ...where, message: `${name}: its content hashes to ${hash}, not its content_hash ${envelope.contentHash}: the bytes in S3 changed` });
      const start = content.bodyStart + entry.offset;
      const { eventId, aggregateType, aggregateId, sequenceNumber, previousHash, contentHash: hashed } = envelope;
      stored.set(slotKey(entry.aggregateType, entry.aggregateId, entry.seq), { segment, start, length: entry.length, envelope: { eventId, aggregateType, aggregateId, sequenceNumber, previousHash, contentHash: hashed } });
      const row = live.get(slotKey(entry.aggregateType, entry.aggregateId, entry.seq));
      if (row === undefined) {
        if (voided.has(slotKey(entry.aggregateType, entry.aggregateId, entry.seq))) report({ kind: "stored-event-void-in-log", ...where, message: `${name} is in S3, but its slot is void in the log` });
        else report({ kind: "event-not-in-log", ...where, message: `${name} is in S3, but the log has no slot for it` });
        continue;
      }
      if (row.state === "pending") continue;
      if (row.eventId !== entry.eventId || row.segment !== segment || row.segmentOffset !== start || row.segmentLength !== entry.length || row.contentHash !== envelope.contentHash) {
        report({
          kind: "log-mismatch",
          ...where,
          message: `${name}: the log holds ${row.eventId} at segment ${row.segment} bytes [${row.segmentOffset}, +${row.segmentLength}) hash ${row.contentHash}; S3 holds it at bytes [${start}, +${entry.length}) hash ${envelope.contentHash}`,
        });
      }
    }
    options.onProgress?.({ segments: done, total: keys.length, events });
  }

  // The log's side: committed slots must be where they say; void slots must have a reason.
  const missingSegments = new Set<number>();
  for (const row of rows) {
    const where = { eventId: row.eventId, aggregateType: row.aggregateType, aggregateId: row.aggregateId, seq: row.seq, ...(row.segment === null ? {} : { segment: row.segment }) };
    const name = `event ${row.eventId} (${row.aggregateType}/${row.aggregateId} seq ${row.seq})`;
    const at = stored.get(slotKey(row.aggregateType, row.aggregateId, row.seq));
    if (row.state === "committed") {
      if (row.segment !== null && !inBucket.has(row.segment) && !missingSegments.has(row.segment)) {
        missingSegments.add(row.segment);
        report({ kind: "segment-missing", segment: row.segment, message: `segment ${row.segment} (${segmentKey(row.segment)}) holds committed events but is not in S3` });
      }
      if (at === undefined || at.envelope.eventId !== row.eventId || at.segment !== row.segment || at.start !== row.segmentOffset || at.length !== row.segmentLength) {
        if (at === undefined || at.envelope.eventId !== row.eventId)
          report({ kind: "committed-event-missing", ...where, message: `${name} is committed, but segment ${row.segment} bytes [${row.segmentOffset}, +${row.segmentLength}) do not hold it` });
      }
    } else if (row.state === "void" && row.segment !== null && inBucket.get(row.segment) === "events" && at !== undefined && at.segment === row.segment && at.envelope.eventId === row.eventId) {
      report({ kind: "stored-event-void-in-log", ...where, message: `${name} is void in the log, but its segment ${row.segment} holds it` });
    }
  }

  // Streams: contiguous, and chained.
  const byStream = new Map<string, SlotRow[]>();
  for (const row of rows) {
    const k = `${row.aggregateType}\u0000${row.aggregateId}`;
    let list = byStream.get(k);
    if (list === undefined) byStream.set(k, (list = []));
    list.push(row);
  }
  let pending = 0;
  let unverifiedLinks = 0;
  // Contiguity is the log's: every slot up to the head has a row.
  for (const head of heads) {
    const seqs = new Set((byStream.get(`${head.aggregate_type}\u0000${head.aggregate_id}`) ?? []).map((s) => s.seq));
    for (let seq = 1; seq <= Number(head.head); seq++) {
      if (!seqs.has(seq)) report({ kind: "gap", aggregateType: head.aggregate_type, aggregateId: head.aggregate_id, seq, message: `${head.aggregate_type}/${head.aggregate_id} seq ${seq} is below the head ${head.head} but the log has no slot for it` });
    }
  }
  // The chain is S3's: each stored event's previous_hash is the link of the stored event before it;
  // the log only explains a slot S3 has no event for (a void or pending slot keeps its reservation's link).
  const streams = new Map<string, { aggregateType: string; aggregateId: string; last: number }>();
  const extend = (aggregateType: string, aggregateId: string, seq: number) => {
    const k = `${aggregateType}\u0000${aggregateId}`;
    const cur = streams.get(k);
    if (cur === undefined) streams.set(k, { aggregateType, aggregateId, last: seq });
    else if (cur.last < seq) streams.set(k, { ...cur, last: seq });
  };
  for (const head of heads) extend(head.aggregate_type, head.aggregate_id, Number(head.head));
  for (const at of stored.values()) extend(at.envelope.aggregateType, at.envelope.aggregateId, Number(at.envelope.sequenceNumber));
  for (const [k, stream] of streams) {
    const logged = new Map<number, SlotRow>();
    for (const s of byStream.get(k) ?? []) if (s.state !== "void" || !logged.has(s.seq)) logged.set(s.seq, s);
    let previous = "";
    let unknownBefore = false;
    for (let seq = 1; seq <= stream.last; seq++) {
      const slot = logged.get(seq);
      if (slot?.state === "pending") pending += 1;
      const at = stored.get(slotKey(stream.aggregateType, stream.aggregateId, seq));
      if (at === undefined) {
        // A void or pending slot keeps its reservation's link; a void one a recovery made keeps none,
        // so the next link cannot be checked. A committed slot S3 has no event for explains nothing:
        // the next event is checked against the last link S3 has, and shows the removal.
        if (slot !== undefined && slot.state !== "committed" && slot.chainHash !== null) previous = slot.chainHash;
        else if (slot?.state === "void") unknownBefore = true;
        continue;
      }
      const e = at.envelope;
      const link = chainLink(e.previousHash, e.eventId, seq, e.contentHash);
      const where = { eventId: e.eventId, aggregateType: stream.aggregateType, aggregateId: stream.aggregateId, seq, segment: at.segment };
      if (e.previousHash !== previous) {
        if (unknownBefore) unverifiedLinks += 1;
        else
          report({
            kind: "chain-broken",
            ...where,
            message: `event ${e.eventId} (${stream.aggregateType}/${stream.aggregateId} seq ${seq}, segment ${at.segment}): its previous_hash ${e.previousHash || "(none)"} is not the link ${previous || "(none)"} of the slot before it: an event before it was changed, removed or reordered`,
          });
      }
      if (slot !== undefined && slot.eventId === e.eventId && slot.chainHash !== null && slot.chainHash !== link) {
        report({ kind: "log-chain-mismatch", ...where, message: `event ${e.eventId} (${stream.aggregateType}/${stream.aggregateId} seq ${seq}): the log's chain hash ${slot.chainHash} is not the link ${link} of its bytes in S3` });
      }
      previous = link;
      unknownBefore = false;
    }
  }
  options.onProgress?.({ segments: done, total: keys.length, events });
  return {
    clean: Object.keys(counts).length === 0,
    segments: keys.length,
    voidSegments,
    events,
    streams: streams.size,
    pending,
    unverifiedLinks,
    counts,
    anomalies,
  };
}

/**
 * The write path and stream reads (docs/CONTRACT.md W1–W7, docs/STORAGE.md): reserve slots in
 * PostgreSQL, hand the envelopes to the segment writer (one S3 object per group commit, committed
 * through the group committer), and read streams back with ranged GETs of their segments.
 */
import { create, type JsonObject } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Kysely } from "kysely";
import {
  CommittedEventReader,
  committedEventOf,
  encodeEnvelope,
  type EventEnvelope,
  EventEnvelopeSchema,
  EventKind,
  type Expectation,
  inSpan,
  type Logger,
  NotFoundError,
  type ObjectStore,
  reserveSlots,
  reserveStreams,
  type SegmentEvent,
  segmentKey,
  type SlotRequest,
  type ReservedStreams,
  type StreamSlotRequest,
  type SlotRow,
  slotsById,
  sleep,
  streamSlots,
  streamState,
  type StreamState,
  UnavailableError,
  UnreadableEventError,
  voidUnflushed,
  type WriteSideTables,
} from "../core/index.js";
import type { Committer } from "./committer.js";
import { EventCache } from "./event-cache.js";
import { SegmentRecovery } from "./segment-recovery.js";
import { type FlushAppend, type FlushAppendResult, SegmentWriter, type SegmentWriterSettings, type SegmentWriterStats } from "./segment-writer.js";

/** A validated event to append. */
export interface ProposedEventInput {
  readonly eventId: string;
  readonly eventType: string;
  readonly data: JsonObject;
  /** `data` encoded as JSON, when validation already encoded it (saves encoding it again). */
  readonly dataJson?: string | undefined;
  /** Includes `kind`; trace keys are carried but not hashed. */
  readonly metadata: Readonly<Record<string, string>>;
  readonly schemaVersion: number;
  readonly kind: EventKind;
  /** The canonical content hash of this event (core/envelope.ts contentHash). */
  readonly contentHash: string;
  /** The data subject (docs/SECURITY.md "Erasure"). Set with `sealedData` once sealed (server/privacy.ts), when `data` is `{}`. */
  readonly subject?: string;
  readonly sealedData?: Uint8Array;
}

/** A validated append. */
export interface AppendInput {
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly expectation: Expectation;
  readonly events: readonly ProposedEventInput[];
  readonly actor: string;
}

/** One aggregate a validated multi-stream append writes. */
export interface StreamAppendInput {
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly expectation: Expectation;
  readonly events: readonly ProposedEventInput[];
}

/** A validated multi-stream append (docs/CONTRACT.md W8). */
export interface MultiAppendInput {
  readonly streams: readonly StreamAppendInput[];
  /** Aggregates not written whose heads must equal `expectedSeq`. */
  readonly checks: ReadonlyArray<{ readonly aggregateType: string; readonly aggregateId: string; readonly expectedSeq: number }>;
  readonly actor: string;
}

/** Where each written stream's events landed, streams and events in request order. */
export interface MultiAppendOutput {
  readonly streams: ReadonlyArray<AppendOutput["events"]>;
  /** True when this is the stored result of an earlier identical call. */
  readonly replayed: boolean;
}

/** Where each appended event landed, in request order. */
export interface AppendOutput {
  readonly events: ReadonlyArray<{ eventId: string; seq: number; position: number }>;
  /** True when this is the stored result of an earlier identical append. */
  readonly replayed: boolean;
}

/** Dependencies of the event store. */
export interface EventStoreDeps {
  readonly db: Kysely<WriteSideTables>;
  readonly objects: ObjectStore;
  readonly committer: Committer;
  readonly log: Logger;
  readonly segments: SegmentWriterSettings;
  readonly now?: () => Date;
  /**
   * Decoded events kept in memory (default 10 000); also bounds the envelope lines of the latest
   * writes kept for the first read of them (at most 4 096, 0: none).
   */
  readonly cacheSize?: number;
  /**
   * A retry that finds its original append still unresolved waits this long for it, then settles
   * it itself (default 2 000 ms): the original's writer is probably gone (docs/STORAGE.md).
   */
  readonly settleAfterMs?: number;
  /** Called before a segment holding the slot is written (tests inject crashes and delays here). */
  readonly beforeWrite?: (slot: SlotRow) => Promise<void>;
  /** Called after the segment holding the slot is created and before it commits (tests inject crashes here). */
  readonly afterWrite?: (slot: SlotRow) => Promise<void>;
}

/** How often a retry looks at its unresolved original. */
const ORIGINAL_POLL_MS = 50;
/** How many times an append starts over after its original (a retry's) was closed. */
const MAX_RESTARTS = 3;

/** What the reservation needs of each proposed event. */
function slotRequests(events: readonly ProposedEventInput[]): SlotRequest[] {
  return events.map((e) => ({ eventId: e.eventId, eventType: e.eventType, contentHash: e.contentHash, orderingKey: e.metadata["ordering_key"] ?? null }));
}

/** What the reservation needs of a validated append to one stream. */
function streamRequest(input: Omit<AppendInput, "actor">): StreamSlotRequest {
  return { aggregateType: input.aggregateType, aggregateId: input.aggregateId, expectation: input.expectation, events: slotRequests(input.events) };
}

/** Where an event landed: its slot's event id and seq, at `position`. */
function landed(slot: SlotRow, position: number): AppendOutput["events"][number] {
  return { eventId: slot.eventId, seq: slot.seq, position };
}

/** An envelope's bytes besides its data, ids, metadata and sealed data (timestamps, hashes, field names), rounded up. */
const ENVELOPE_FIXED_BYTES = 400;

/**
 * `input` with every event's data encoded as JSON (validation encodes it already, commands do not),
 * so the size estimate of its lines and the lines themselves share one encoding.
 */
function withDataJson(input: AppendInput): AppendInput {
  if (input.events.every((e) => e.dataJson !== undefined)) return input;
  return { ...input, events: input.events.map((e) => (e.dataJson === undefined ? { ...e, dataJson: JSON.stringify(e.data) } : e)) };
}

/** What an append's envelope lines will take, before its slots are known: for the segment limits only. */
function estimatedLineBytes(input: AppendInput): number {
  let bytes = 0;
  for (const e of input.events) {
    bytes += ENVELOPE_FIXED_BYTES + e.eventId.length + e.eventType.length + input.aggregateType.length + input.aggregateId.length + input.actor.length;
    bytes += Buffer.byteLength(e.dataJson ?? "");
    for (const key in e.metadata) bytes += key.length + e.metadata[key]!.length + 6;
    if (e.sealedData !== undefined) bytes += Math.ceil(e.sealedData.length / 3) * 4 + (e.subject?.length ?? 0);
  }
  return bytes;
}

/** Envelope lines of this process's latest writes, kept for the first read of each (Subscribe's tail reads every one). */
const MAX_WRITTEN_LINES = 4096;

/** An event's line as this process created it in a segment, and where it is there. */
interface WrittenLine {
  readonly segment: number;
  readonly offset: number;
  readonly length: number;
  readonly line: string;
}

/** Appends and reads event streams. */
export class EventStore {
  private readonly cache: EventCache;
  /**
   * The lines of events this process has just written, by slot key: the first read of a committed
   * row whose location is one of them decodes its event from the line exactly as from the bytes of
   * a GET (they are those bytes: this process created the segment with them, and a segment never
   * changes, W2), instead of fetching them back from S3.
   */
  private readonly written: EventCache<WrittenLine>;
  private readonly now: () => Date;
  private readonly reader: CommittedEventReader;
  private readonly writer: SegmentWriter;
  /** Settles segment numbers against S3 (the sweeper uses the same). */
  readonly recovery: SegmentRecovery;

  constructor(private readonly deps: EventStoreDeps) {
    this.cache = new EventCache(deps.cacheSize ?? 10_000);
    this.written = new EventCache(Math.min(MAX_WRITTEN_LINES, deps.cacheSize ?? 10_000));
    this.now = deps.now ?? (() => new Date());
    this.reader = new CommittedEventReader(deps.objects);
    this.recovery = new SegmentRecovery({ db: deps.db, objects: deps.objects, committer: deps.committer, log: deps.log, now: this.now });
    this.writer = new SegmentWriter({
      db: deps.db,
      objects: deps.objects,
      committer: deps.committer,
      log: deps.log,
      settings: deps.segments,
      now: this.now,
      resync: (segment, ours) => this.recovery.resyncFrom(segment, ours),
      settleSoon: (segment) => {
        this.recovery.settle(segment, "the write failed").catch((e: unknown) => deps.log.warn({ err: e, segment }, "settling a failed segment write deferred to the sweeper"));
      },
      onWritten: (segment, slots, events, ranges) => {
        slots.forEach((slot, i) => this.written.set(cacheKey(slot), { segment, offset: ranges[i]!.start, length: ranges[i]!.length, line: events[i]!.json }));
      },
      ...(deps.beforeWrite === undefined ? {} : { beforeWrite: deps.beforeWrite }),
      ...(deps.afterWrite === undefined ? {} : { afterWrite: deps.afterWrite }),
    });
  }

  /** Totals of the segment writer since start. */
  get segmentStats(): SegmentWriterStats {
    return this.writer.stats;
  }

  /** Before serving: brings in segments S3 holds beyond the log's counter (W6). */
  catchUp(): Promise<number> {
    return this.recovery.catchUp();
  }

  /** Refuses new appends; those in flight finish. */
  close(): void {
    this.writer.close();
  }

  /**
   * Appends events atomically; returns after every event is in S3 and committed (W1). The append
   * queues for a flush of the segment writer, which reserves its slots together with the other
   * appends of its segment (one round trip for all of them, server/segment-writer.ts); one the
   * flush could not reserve is reserved alone and queued again.
   */
  async append(request: AppendInput): Promise<AppendOutput> {
    const input = withDataJson(request);
    const stream = streamRequest(input);
    const lines = ([own]: ReservedStreams) => this.lines(input, own!.slots, own!.previousHash);
    return this.land({ call: { kind: "stream", append: stream }, bytes: estimatedLineBytes(input), lines }, async () => {
      const reservation = await inSpan("tidemark.reserve", () => reserveSlots(this.deps.db, stream.aggregateType, stream.aggregateId, stream.expectation, stream.events));
      return reservation.type === "existing" ? reservation : this.writeAlone([reservation], lines);
    });
  }

  /**
   * Appends to several aggregates atomically (W8): one reservation locks every named head and
   * checks every expectation and consistency check — the flush's, with the other appends of its
   * segment, as for append — one segment holds every event of the call, and one commit gives them
   * contiguous positions. Returns after all of it (W1).
   */
  async appendToStreams(request: MultiAppendInput): Promise<MultiAppendOutput> {
    const inputs = request.streams.map((st) => withDataJson({ ...st, actor: request.actor }));
    const streams = inputs.map(streamRequest);
    const lines = (reserved: ReservedStreams) => reserved.flatMap((r, i) => this.lines(inputs[i]!, r.slots, r.previousHash));
    const { replayed, events } = await this.land(
      { call: { kind: "streams", streams, checks: request.checks }, bytes: inputs.reduce((n, i) => n + estimatedLineBytes(i), 0), lines },
      async () => {
        const reservation = await inSpan("tidemark.reserve", () => reserveStreams(this.deps.db, streams, request.checks));
        return reservation.type === "existing" ? { type: "existing", slots: reservation.streams.flat() } : this.writeAlone(reservation.streams, lines);
      },
    );
    // The events of every stream, in request order: one slice per stream.
    let from = 0;
    return { replayed, streams: streams.map((st) => events.slice(from, (from += st.events.length))) };
  }

  /**
   * Queues `append` for a flush to reserve and write, reserving it `alone` when the flush could not
   * (a head behind the log, W6; the flush's transaction failed). A retry of an earlier call is
   * answered with what the original got, or starts over when the original was closed.
   */
  private async land(append: FlushAppend, alone: () => Promise<Exclude<FlushAppendResult, { type: "alone" }>>): Promise<AppendOutput> {
    for (let restart = 0; ; restart++) {
      // One segment holds many appends: this call's span waits for it, the flush's span links them all (segment-writer.ts).
      let result = await inSpan("tidemark.segment.write", () => this.writer.append(append));
      if (result.type === "alone") result = await alone();
      if (result.type === "written") {
        const { slots, positions } = result;
        return { replayed: false, events: slots.map((slot) => landed(slot, positions.get(slot.logId)!)) };
      }
      const settled = await this.original(result.slots);
      if (settled !== undefined) {
        const byId = new Map(settled.map((slot) => [slot.logId, slot]));
        return { replayed: true, events: result.slots.map((s) => byId.get(s.logId)!).map((slot) => landed(slot, slot.globalPosition!)) };
      }
      if (restart >= MAX_RESTARTS) throw new UnavailableError("the append was closed while it was retried; retry the append");
    }
  }

  /** A call reserved alone (core/event-log.ts, which repairs a head behind the log, W6), queued with its slots for the next flush. */
  private async writeAlone(reserved: ReservedStreams, lines: (reserved: ReservedStreams) => SegmentEvent[]): Promise<Extract<FlushAppendResult, { type: "written" }>> {
    const slots = reserved.flatMap((r) => r.slots);
    const positions = await inSpan("tidemark.segment.write", () => this.writer.write({ slots, events: lines(reserved) }));
    return { type: "written", slots, positions };
  }

  /**
   * Each slot's envelope line: the event as it will be stored (no global position: it is set at
   * commit), linked to its stream predecessor by `previous_hash` (the reservation computed the
   * links from the predecessor's row, so no S3 read).
   */
  private lines(input: AppendInput, slots: readonly SlotRow[], previousHash: string): SegmentEvent[] {
    const occurredAt = timestampFromDate(this.now());
    return slots.map((slot, i) => {
      const event = input.events[i]!;
      // The one place plaintext could reach S3 by mistake: an event naming a subject must be sealed.
      if (event.subject !== undefined && event.sealedData === undefined) throw new Error(`event ${event.eventId} names a subject but was not sealed (server/privacy.ts sealSubjectData)`);
      const envelope = create(EventEnvelopeSchema, {
        eventId: event.eventId,
        eventType: event.eventType,
        aggregateType: input.aggregateType,
        aggregateId: input.aggregateId,
        sequenceNumber: BigInt(slot.seq),
        occurredAt,
        actor: input.actor,
        data: event.data,
        metadata: event.metadata,
        schemaVersion: event.schemaVersion,
        kind: event.kind,
        contentHash: event.contentHash,
        ...(event.sealedData === undefined ? {} : { subject: event.subject, sealedData: event.sealedData }),
        previousHash: i === 0 ? previousHash : (slots[i - 1]!.chainHash ?? ""),
      });
      return { eventId: slot.eventId, aggregateType: input.aggregateType, aggregateId: input.aggregateId, seq: slot.seq, json: encodeEnvelope(envelope, event.dataJson) };
    });
  }

  /**
   * Waits for an earlier append of the same events to resolve: its committed slots, or undefined
   * when it was closed (or handed to other events) and this append must start over. After
   * `settleAfterMs` it settles the original itself — closing slots no flush took, or settling
   * their segment against S3 — since its writer is probably gone (W5).
   */
  private async original(slots: readonly SlotRow[]): Promise<SlotRow[] | undefined> {
    const ids = slots.map((s) => s.logId);
    const wanted = new Map(slots.map((s) => [s.logId, s.eventId]));
    const settleAt = Date.now() + (this.deps.settleAfterMs ?? 2000);
    let settled = false;
    for (;;) {
      const rows = await slotsById(this.deps.db, ids);
      if (rows.length !== ids.length || rows.some((r) => r.state === "void" || r.eventId !== wanted.get(r.logId))) return undefined;
      if (rows.every((r) => r.state === "committed")) return rows;
      if (!settled && Date.now() >= settleAt) {
        settled = true;
        const segments = [...new Set(rows.filter((r) => r.state === "pending").map((r) => r.segment))];
        for (const segment of segments) {
          if (segment === null) await voidUnflushed(this.deps.db, ids);
          else await this.recovery.settle(segment, "a retry found its writer gone");
        }
        continue;
      }
      await sleep(ORIGINAL_POLL_MS);
    }
  }

  /** The stream's heads, or undefined when the stream was never reserved. */
  headIfAny(aggregateType: string, aggregateId: string): Promise<StreamState | undefined> {
    return streamState(this.deps.db, aggregateType, aggregateId);
  }

  /** The stream's heads; NotFoundError when the stream was never written. */
  async head(aggregateType: string, aggregateId: string): Promise<StreamState> {
    const state = await streamState(this.deps.db, aggregateType, aggregateId);
    if (state === undefined || state.allocated === 0) {
      throw new NotFoundError(`stream ${aggregateType}/${aggregateId} does not exist`);
    }
    return state;
  }

  /**
   * The stream's committed events from `fromSeq`, in order, with their global positions. Stops at
   * the first unresolved slot, so readers only ever see a prefix in commit order; void slots are
   * skipped. Reads only the stream's own bytes: ranged GETs of its segments (W5).
   */
  async *read(aggregateType: string, aggregateId: string, fromSeq: number, maxCount: number): AsyncGenerator<EventEnvelope> {
    const pageSize = 500;
    let next = Math.max(1, fromSeq);
    let remaining = maxCount > 0 ? maxCount : Number.POSITIVE_INFINITY;
    for (;;) {
      const rows = await streamSlots(this.deps.db, aggregateType, aggregateId, next, pageSize);
      const ready: SlotRow[] = [];
      let blocked = false;
      for (const row of rows) {
        if (row.state === "pending") {
          blocked = true;
          break;
        }
        if (row.state === "committed") ready.push(row);
      }
      const wanted = ready.slice(0, Math.min(ready.length, remaining));
      for (const envelope of await this.loadAll(wanted)) {
        remaining -= 1;
        yield envelope;
      }
      if (blocked || rows.length < pageSize || remaining <= 0) return;
      next = rows[rows.length - 1]!.seq + 1;
    }
  }

  /** One committed event, from the cache or S3, with its global position. */
  async load(row: SlotRow): Promise<EventEnvelope> {
    return (await this.loadAll([row]))[0]!;
  }

  /** Committed events, from the cache or S3 (neighbours in one segment in one ranged GET), in the rows' order. */
  async loadAll(rows: readonly SlotRow[]): Promise<EventEnvelope[]> {
    const out = new Array<EventEnvelope>(rows.length);
    const missing: number[] = [];
    rows.forEach((row, i) => {
      const key = cacheKey(row);
      const hit = this.cache.get(key) ?? this.fromWritten(key, row);
      if (hit === undefined) missing.push(i);
      else out[i] = withPosition(hit, row);
    });
    if (missing.length > 0) {
      const results = await this.reader.read(missing.map((i) => rows[i]!));
      results.forEach((result, j) => {
        if (result instanceof UnreadableEventError) throw result;
        const row = rows[missing[j]!]!;
        this.cache.set(cacheKey(row), result.envelope);
        out[missing[j]!] = withPosition(result.envelope, row);
      });
    }
    return out;
  }

  /**
   * The event of `row` decoded from the line this process wrote at the row's location, moved into
   * the cache; undefined when there is none (then it is read from S3).
   */
  private fromWritten(key: string, row: SlotRow): EventEnvelope | undefined {
    const written = this.written.get(key);
    if (written === undefined) return undefined;
    this.written.delete(key);
    if (row.segment !== written.segment || row.segmentOffset !== written.offset || row.segmentLength !== written.length) return undefined;
    let envelope: EventEnvelope;
    try {
      envelope = committedEventOf(row, segmentKey(written.segment), written.line).envelope;
    } catch {
      return undefined;
    }
    this.cache.set(key, envelope);
    return envelope;
  }
}

/** A committed (aggregate, seq) never changes, so it names its event in the caches. */
function cacheKey(row: SlotRow): string {
  return `${row.aggregateType}\u0000${row.aggregateId}\u0000${row.seq}`;
}

/**
 * A shallow copy with the row's global position: the cached envelope is shared and never changes,
 * and protobuf-es's clone would rebuild `data` by assignment (losing a `__proto__` key).
 */
function withPosition(envelope: EventEnvelope, row: SlotRow): EventEnvelope {
  return { ...envelope, globalPosition: BigInt(row.globalPosition ?? 0) };
}

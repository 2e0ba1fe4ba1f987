/**
 * Adaptive group commit into segments (docs/STORAGE.md): appends queue here; a flush takes what is
 * queued into one segment — a number from PostgreSQL's counter and the appends' slots in one
 * transaction, one conditional PUT, one commit — and answers every append in it. No timer: while the flushes in
 * flight occupy every slot (`maxInFlight`), appends queue, and the next flush takes them all (up to
 * `maxBytes` and `maxEvents`), so at low load a segment holds one call and an append is one PUT long,
 * and under load segments grow by themselves. `lingerMs` may add a wait for fewer, larger PUTs.
 * The flush reserves the appends it takes, all in one transaction (reserve_segment), one flush at a
 * time: flushes overlap in their PUTs, not in their reservations.
 *
 * A flush holds its place among the `maxInFlight` from its reservation to the end of its PUT, not
 * of its commit: a commit may wait for a stream predecessor (R2) that is still queued here, and a
 * place held across that wait could leave the predecessor no flush to go in (every place taken by
 * a flush waiting for a slot behind it in the queue, until the commit's deadline).
 *
 * The rules (docs/CONTRACT.md): an append is answered OK only once its segment is in S3 and its
 * slots committed (W1); a segment key is created once (W2); a segment that fails answers every
 * append in it UNAVAILABLE and commits none (the sweeper settles what the store may hold); a 412 on
 * a new segment's key means PostgreSQL is behind S3, and the store re-synchronises before writing
 * on (W6).
 */
import {
  activeContext,
  allocateSegment,
  inSpan,
  annotateSpan,
  type CommitRequest,
  ConcurrencyError,
  decodeSegmentHeader,
  encodeSegment,
  type EncodedSegment,
  type Logger,
  type ObjectStore,
  type FlushCall,
  type FlushOutcome,
  type ReservedStreams,
  reserveSegment,
  SEGMENT_CONTENT_TYPE,
  segmentKey,
  type SegmentEvent,
  type SlotRow,
  type TraceContext,
  inBatchSpan,
  UnavailableError,
  voidSegmentSlotsExcept,
  type WriteSideTables,
} from "../core/index.js";
import type { Kysely } from "kysely";
import type { Committer } from "./committer.js";

const UNIQUE_VIOLATION = "23505";

/** A call whose slots were reserved before it queued (an append reserved alone): its slots and their envelopes, in slot order. */
export interface PendingWrite {
  readonly slots: readonly SlotRow[];
  /** One per slot: the envelope JSON line (no global position). */
  readonly events: readonly SegmentEvent[];
}

/**
 * An append reserved by the flush that takes it (core/db/functions/reserve_segment.sql): to one
 * stream (AppendEvents) or to several, with consistency checks (AppendToStreams, W8).
 */
export interface FlushAppend {
  readonly call: FlushCall;
  /** The bytes its envelope lines will take, estimated before its slots are known (for the segment limits). */
  readonly bytes: number;
  /** Its envelope lines (no global position), once its slots are reserved: per written stream, in request order. */
  lines(streams: ReservedStreams): SegmentEvent[];
}

/** What became of an append a flush reserved (a conflict rejects: ConcurrencyError, ConsistencyError). */
export type FlushAppendResult =
  /** Its slots, every stream's in request order. */
  | { readonly type: "written"; readonly slots: readonly SlotRow[]; readonly positions: Map<number, number> }
  /** Its event ids were appended before (a retry): the slots holding them, in request order. */
  | { readonly type: "existing"; readonly slots: readonly SlotRow[] }
  /**
   * To be reserved alone (core/event-log.ts reserveSlots or reserveStreams, which repair and
   * decide): a head behind the log (W6), or the flush's reservation failed as a whole. Nothing reserved.
   */
  | { readonly type: "alone" };

/** Settings of the segment writer (each a server setting, docs/CONFIGURATION.md). */
export interface SegmentWriterSettings {
  /** Most bytes of envelopes in one segment (a single larger call still gets a segment of its own). */
  readonly maxBytes: number;
  /** Most events in one segment. */
  readonly maxEvents: number;
  /** Segment writes in flight at once, so one slow PUT does not stall the queue. */
  readonly maxInFlight: number;
  /** Extra wait before a flush takes the queue (0: none, the default). */
  readonly lingerMs: number;
}

/** What the writer works with. */
export interface SegmentWriterDeps {
  readonly db: Kysely<WriteSideTables>;
  readonly objects: ObjectStore;
  readonly committer: Committer;
  readonly log: Logger;
  readonly settings: SegmentWriterSettings;
  readonly now: () => Date;
  /**
   * Re-synchronises the log from the segments in S3 from `segment` on (W6); resolves once the log
   * holds what they hold. Returns the slots of `ours` that S3 handed to other events.
   */
  readonly resync: (segment: number, ours: readonly SlotRow[]) => Promise<ReadonlySet<number>>;
  /** Settles a number whose PUT failed, in the background (it may have landed). */
  readonly settleSoon: (segment: number) => void;
  /**
   * Called once a segment is in S3, before its commit (which makes its events visible to readers):
   * its slots, their envelope lines and where each line is in the segment — the bytes S3 now holds.
   */
  readonly onWritten?: (segment: number, slots: readonly SlotRow[], events: readonly SegmentEvent[], ranges: EncodedSegment["ranges"]) => void;
  /** Test hooks: before the PUT and after it (before the commit), for each slot of the segment (`segment` set). */
  readonly beforeWrite?: (slot: SlotRow) => Promise<void>;
  readonly afterWrite?: (slot: SlotRow) => Promise<void>;
}

interface Queued {
  /** Envelope bytes and events it brings to a segment (for the size limits). */
  readonly bytes: number;
  readonly events: number;
  /** The append's trace context (tracing on). */
  readonly trace: TraceContext | undefined;
  reject(e: Error): void;
}

/** A call reserved before it queued. */
interface ReservedWaiter extends Queued {
  readonly write: PendingWrite;
  readonly append?: undefined;
  resolve(positions: Map<number, number>): void;
}

/** An append the flush reserves. */
interface AppendWaiter extends Queued {
  readonly append: FlushAppend;
  readonly write?: undefined;
  resolve(result: FlushAppendResult): void;
}

type Waiter = ReservedWaiter | AppendWaiter;

/** A call going into a segment: its slots and their lines, and how to answer it once committed. */
interface Part {
  readonly slots: readonly SlotRow[];
  readonly events: readonly SegmentEvent[];
  readonly waiter: Waiter;
}

/** Totals since start, and the writer's state now, for metrics and tests. */
export interface SegmentWriterStats {
  segments: number;
  events: number;
  bytes: number;
  failed: number;
  conflicts: number;
  /** Appends the flushes reserved (reserve_segment), and appends sent back to be reserved alone. */
  reserved: number;
  alone: number;
  /** Appends waiting for a flush now. */
  readonly queued: number;
  /** Segment PUTs out now (at most `maxInFlight`). */
  inFlight: number;
}

/** The one segment writer of a server process. */
export class SegmentWriter {
  private readonly queue: Waiter[] = [];
  private closed = false;
  private lingering: NodeJS.Timeout | undefined;
  /**
   * A flush is reserving now (reserve_segment): the next one starts only after it, with everything
   * queued meanwhile, so flushes overlap in their PUTs but not in their reservations — which would
   * contend for the same head rows and split the queue into smaller segments.
   */
  private reserving = false;
  /** Flushes wait for a re-synchronisation in progress: nothing new is written meanwhile (W6). */
  private resyncing: Promise<void> | undefined;
  readonly stats: SegmentWriterStats;

  constructor(private readonly deps: SegmentWriterDeps) {
    const queue = this.queue;
    this.stats = {
      segments: 0,
      events: 0,
      bytes: 0,
      failed: 0,
      conflicts: 0,
      reserved: 0,
      alone: 0,
      get queued() {
        return queue.length;
      },
      inFlight: 0,
    };
  }

  /** Queues a call reserved before; resolves with each slot's global position once its segment is written and committed. */
  write(write: PendingWrite): Promise<Map<number, number>> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new UnavailableError("server is shutting down"));
      const bytes = write.events.reduce((n, e) => n + Buffer.byteLength(e.json) + 1, 0);
      this.queue.push({ write, bytes, events: write.events.length, trace: activeContext(), resolve, reject });
      this.kick();
    });
  }

  /**
   * Queues an append for the next flush to reserve and write; resolves once its segment is
   * written and committed, or with why it was not reserved (a conflict rejects, W3).
   */
  append(append: FlushAppend): Promise<FlushAppendResult> {
    const { call } = append;
    const events = call.kind === "stream" ? call.append.events.length : call.streams.reduce((n, st) => n + st.events.length, 0);
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new UnavailableError("server is shutting down"));
      this.queue.push({ append, bytes: append.bytes, events, trace: activeContext(), resolve, reject });
      this.kick();
    });
  }

  /** Fails everything still queued (shutdown); flushes in flight finish. */
  close(): void {
    this.closed = true;
    if (this.lingering !== undefined) clearTimeout(this.lingering);
    for (const w of this.queue.splice(0)) w.reject(new UnavailableError("server is shutting down"));
  }

  private kick(): void {
    if (this.closed || this.reserving || this.queue.length === 0 || this.stats.inFlight >= this.deps.settings.maxInFlight) return;
    const { lingerMs } = this.deps.settings;
    if (lingerMs > 0) {
      if (this.lingering !== undefined) return;
      this.lingering = setTimeout(() => {
        this.lingering = undefined;
        this.start();
      }, lingerMs);
      return;
    }
    this.start();
  }

  private start(): void {
    while (!this.closed && !this.reserving && this.queue.length > 0 && this.stats.inFlight < this.deps.settings.maxInFlight) {
      const batch = this.take();
      this.stats.inFlight += 1;
      this.reserving = true;
      let reservationOver = false;
      const reservationDone = (): void => {
        if (reservationOver) return;
        reservationOver = true;
        this.reserving = false;
        this.kick();
      };
      let released = false;
      const release = (): void => {
        if (released) return;
        released = true;
        this.stats.inFlight -= 1;
        this.kick();
      };
      void this.flush(batch, reservationDone, release).finally(() => {
        reservationDone();
        release();
      });
    }
  }

  /** The queue's head, up to the size limits (at least one call). */
  private take(): Waiter[] {
    const { maxBytes, maxEvents } = this.deps.settings;
    const batch: Waiter[] = [];
    let bytes = 0;
    let events = 0;
    while (this.queue.length > 0) {
      const next = this.queue[0]!;
      if (batch.length > 0 && (bytes + next.bytes > maxBytes || events + next.events > maxEvents)) break;
      batch.push(this.queue.shift()!);
      bytes += next.bytes;
      events += next.events;
    }
    return batch;
  }

  /**
   * One segment for many appends, so one span for it: a child of the first append's
   * `tidemark.segment.write` span, linking the others' (each of which records the segment number).
   */
  private flush(batch: Waiter[], reservationDone: () => void, release: () => void): Promise<void> {
    return inBatchSpan("tidemark.segment.flush", batch.map((w) => w.trace), () => this.flushBatch(batch, reservationDone, release));
  }

  /**
   * Writes and commits one segment; `reservationDone` lets the next flush start once this one has
   * reserved, `release` gives its place back once the segment is in S3.
   */
  private async flushBatch(batch: Waiter[], reservationDone: () => void, release: () => void): Promise<void> {
    const { deps } = this;
    try {
      let taken;
      try {
        await this.resyncing;
        taken = await this.reserve(batch);
      } finally {
        reservationDone();
      }
      if (taken === undefined) return;
      const { segment, parts } = taken;
      const events = parts.flatMap((p) => p.events);
      const slots = parts.flatMap((p) => p.slots);
      const encoded = encodeSegment(segment, deps.now(), events);
      const key = segmentKey(segment);
      annotateSpan({ "tidemark.segment": segment, "tidemark.segment.appends": parts.length, "tidemark.segment.events": events.length, "tidemark.segment.bytes": encoded.body.length });
      for (const p of parts) if (p.waiter.trace !== undefined) annotateSpan({ "tidemark.segment": segment }, p.waiter.trace);
      for (const slot of slots) await deps.beforeWrite?.({ ...slot, segment });
      let outcome;
      try {
        outcome = await deps.objects.createIfAbsent(key, encoded.body, SEGMENT_CONTENT_TYPE);
      } catch (e) {
        // The PUT may or may not have landed: settle the number now rather than at the deadline,
        // so the streams in it are not held up (their successors wait for these slots).
        deps.settleSoon(segment);
        throw e;
      }
      if (outcome === "exists") {
        // Our own bytes: the SDK retried a PUT whose reply was lost, so it is written.
        const existing = await deps.objects.read(key);
        if (existing === undefined || !existing.equals(encoded.body)) {
          await this.conflict(segment, existing, parts, slots);
          return;
        }
      }
      deps.onWritten?.(segment, slots, events, encoded.ranges);
      for (const slot of slots) await deps.afterWrite?.({ ...slot, segment });
      release();
      this.stats.segments += 1;
      this.stats.events += events.length;
      this.stats.bytes += encoded.body.length;
      const requests: CommitRequest[] = slots.map((slot, i) => ({
        logId: slot.logId,
        written: { eventId: slot.eventId, offset: encoded.ranges[i]!.start, length: encoded.ranges[i]!.length },
      }));
      const positions = await deps.committer.commit(requests);
      for (const { waiter, slots: own } of parts) {
        const mine = new Map(own.map((s) => [s.logId, positions.get(s.logId)!]));
        if (waiter.append === undefined) waiter.resolve(mine);
        else waiter.resolve({ type: "written", slots: own, positions: mine });
      }
    } catch (e) {
      this.stats.failed += 1;
      // Nothing is acknowledged; what the store may hold is settled by the sweeper (W5).
      const error = e instanceof Error ? e : new Error(String(e));
      for (const w of batch) w.reject(error);
    }
  }

  /**
   * Takes a segment number for the flush and what goes into it: the calls reserved before whose
   * slots are still open (one the sweeper closed meanwhile came too late), and the appends it
   * reserves (core/db/functions/reserve_segment.sql) — each of the others answered here: a
   * conflict, a retry of an earlier append, or one to be reserved alone. Undefined: nothing to write.
   */
  private async reserve(batch: Waiter[]): Promise<{ segment: number; parts: Part[] } | undefined> {
    const { deps } = this;
    const earlier = batch.filter((w): w is ReservedWaiter => w.write !== undefined);
    const appends = batch.filter((w): w is AppendWaiter => w.append !== undefined);
    const calls = earlier.map((w) => w.write.slots.map((s) => s.logId));
    let allocation: { segment: number; taken: Set<number> } | undefined;
    const parts: Part[] = [];
    if (appends.length === 0) {
      allocation = await allocateSegment(deps.db, calls);
    } else {
      let reservation;
      try {
        reservation = await inSpan("tidemark.reserve", () => reserveSegment(deps.db, calls, appends.map((w) => w.append.call)));
      } catch (e) {
        this.reservationFailed(e instanceof Error ? e : new Error(String(e)), appends, earlier);
        return undefined;
      }
      allocation = reservation;
      const unwritten = reservation.outcomes.flatMap((outcome, i) => this.answer(appends[i]!, outcome, parts));
      // Reserved, but no line to write (a bug): closed now, so nothing waits for them (W7).
      if (unwritten.length > 0) await voidSegmentSlotsExcept(deps.db, reservation.segment, parts.flatMap((p) => p.slots.map((s) => s.logId)));
    }
    earlier.forEach((w, i) => {
      // Left out: the sweeper closed its slots meanwhile (the append came too late).
      if (allocation?.taken.has(i) === true) parts.unshift({ slots: w.write.slots, events: w.write.events, waiter: w });
      else w.reject(new UnavailableError("the write reached the store after its slots were closed; retry the append"));
    });
    if (allocation === undefined || parts.length === 0) return undefined;
    return { segment: allocation.segment, parts };
  }

  /**
   * What the flush's reservation decided for one append: reserved, it goes into the segment (its
   * lines built now, `parts`); otherwise it is answered here. Returns the log ids of slots reserved
   * but left out of the segment (their lines could not be built).
   */
  private answer(w: AppendWaiter, outcome: FlushOutcome, parts: Part[]): number[] {
    switch (outcome.type) {
      case "reserved": {
        this.stats.reserved += 1;
        const slots = outcome.streams.flatMap((st) => st.slots);
        try {
          parts.push({ slots, events: w.append.lines(outcome.streams), waiter: w });
          return [];
        } catch (e) {
          w.reject(e instanceof Error ? e : new Error(String(e)));
          return slots.map((st) => st.logId);
        }
      }
      case "existing":
        w.resolve({ type: "existing", slots: outcome.slots });
        return [];
      case "head_behind":
        this.stats.alone += 1;
        w.resolve({ type: "alone" });
        return [];
      case "refused":
        w.reject(outcome.error);
        return [];
    }
  }

  /**
   * The flush's reservation rolled back whole (an event id reserved elsewhere at the same moment, a
   * head behind its slots): each append is reserved alone, which repairs and decides; the calls
   * reserved before go into the next flush when an append caused it, and fail otherwise.
   */
  private reservationFailed(e: Error, appends: readonly AppendWaiter[], earlier: readonly ReservedWaiter[]): void {
    const raced = (e as { code?: string }).code === UNIQUE_VIOLATION;
    if (raced) this.deps.log.debug({ err: e, appends: appends.length }, "a flush's reservation met a concurrent one; reserving its appends one by one");
    else this.deps.log.warn({ err: e, appends: appends.length }, "a flush's reservation failed; reserving its appends one by one");
    this.stats.alone += appends.length;
    for (const w of appends) w.resolve({ type: "alone" });
    if (raced) this.queue.unshift(...earlier);
    else for (const w of earlier) w.reject(e);
  }

  /**
   * The segment's key exists and holds something else. A void segment means the sweeper closed the
   * number first (too late: UNAVAILABLE); anything else means PostgreSQL is behind S3 (W6):
   * re-synchronise, then answer ABORTED where S3 handed a slot to another event and UNAVAILABLE
   * (retry) otherwise.
   */
  private async conflict(segment: number, existing: Buffer | undefined, parts: readonly Part[], slots: SlotRow[]): Promise<void> {
    const { deps } = this;
    if (existing !== undefined && decodeSegmentHeader(existing).type === "void") {
      throw new UnavailableError("the write reached the store after its segment was closed; retry the append");
    }
    this.stats.conflicts += 1;
    deps.log.warn({ segment }, "segment number already in S3: the commit log is behind the bucket; re-synchronising");
    const done = deps.resync(segment, slots);
    this.resyncing = done.then(
      () => {},
      () => {},
    );
    let handedOver: ReadonlySet<number>;
    try {
      handedOver = await done;
    } finally {
      this.resyncing = undefined;
    }
    for (const { waiter: w, slots: mine } of parts) {
      const lost = mine.find((s) => handedOver.has(s.logId));
      if (lost !== undefined) {
        // A multi-stream call (W8) holds several streams: name the one that lost its slot.
        const own = mine.filter((s) => s.aggregateType === lost.aggregateType && s.aggregateId === lost.aggregateId);
        w.reject(new ConcurrencyError(lost.aggregateType, lost.aggregateId, own[0]!.seq - 1, Math.max(...own.map((s) => s.seq))));
      }
      else w.reject(new UnavailableError("the commit log was behind the object store and has been re-synchronised; retry the append"));
    }
  }
}

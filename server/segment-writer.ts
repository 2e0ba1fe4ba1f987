/**
 * Adaptive group commit into segments (docs/STORAGE.md): appends whose slots are reserved queue
 * here; a flush takes what is queued into one segment — a number from PostgreSQL's counter, one
 * conditional PUT, one commit — and answers every append in it. No timer: while the flushes in
 * flight occupy every slot (`maxInFlight`), appends queue, and the next flush takes them all (up to
 * `maxBytes` and `maxEvents`), so at low load a segment holds one call and an append is one PUT long,
 * and under load segments grow by themselves. `lingerMs` may add a wait for fewer, larger PUTs.
 *
 * A flush holds its place among the `maxInFlight` from its allocation to the end of its PUT, not
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
  annotateSpan,
  type CommitRequest,
  ConcurrencyError,
  decodeSegmentHeader,
  encodeSegment,
  type EncodedSegment,
  type Logger,
  type ObjectStore,
  SEGMENT_CONTENT_TYPE,
  segmentKey,
  type SegmentEvent,
  type SlotRow,
  type TraceContext,
  inBatchSpan,
  UnavailableError,
  type WriteSideTables,
} from "../core/index.js";
import type { Kysely } from "kysely";
import type { Committer } from "./committer.js";

/** One append waiting for its segment: its reserved slots and their envelopes, in slot order. */
export interface PendingWrite {
  readonly slots: readonly SlotRow[];
  /** One per slot: the envelope JSON line (no global position). */
  readonly events: readonly SegmentEvent[];
}

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

interface Waiter {
  readonly write: PendingWrite;
  readonly bytes: number;
  /** The append's trace context (tracing on). */
  readonly trace: TraceContext | undefined;
  resolve(positions: Map<number, number>): void;
  reject(e: Error): void;
}

/** Totals since start, and the writer's state now, for metrics and tests. */
export interface SegmentWriterStats {
  segments: number;
  events: number;
  bytes: number;
  failed: number;
  conflicts: number;
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
      get queued() {
        return queue.length;
      },
      inFlight: 0,
    };
  }

  /** Queues an append; resolves with each slot's global position once its segment is written and committed. */
  write(write: PendingWrite): Promise<Map<number, number>> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new UnavailableError("server is shutting down"));
      const bytes = write.events.reduce((n, e) => n + Buffer.byteLength(e.json) + 1, 0);
      this.queue.push({ write, bytes, trace: activeContext(), resolve, reject });
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
    if (this.closed || this.queue.length === 0 || this.stats.inFlight >= this.deps.settings.maxInFlight) return;
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
    while (!this.closed && this.queue.length > 0 && this.stats.inFlight < this.deps.settings.maxInFlight) {
      const batch = this.take();
      this.stats.inFlight += 1;
      let released = false;
      const release = (): void => {
        if (released) return;
        released = true;
        this.stats.inFlight -= 1;
        this.kick();
      };
      void this.flush(batch, release).finally(release);
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
      if (batch.length > 0 && (bytes + next.bytes > maxBytes || events + next.write.events.length > maxEvents)) break;
      batch.push(this.queue.shift()!);
      bytes += next.bytes;
      events += next.write.events.length;
    }
    return batch;
  }

  /**
   * One segment for many appends, so one span for it: a child of the first append's
   * `tidemark.segment.write` span, linking the others' (each of which records the segment number).
   */
  private flush(batch: Waiter[], release: () => void): Promise<void> {
    return inBatchSpan("tidemark.segment.flush", batch.map((w) => w.trace), () => this.flushBatch(batch, release));
  }

  /** Writes and commits one segment; `release` gives its place back once the segment is in S3. */
  private async flushBatch(batch: Waiter[], release: () => void): Promise<void> {
    const { deps } = this;
    try {
      await this.resyncing;
      const allocation = await allocateSegment(deps.db, batch.map((w) => w.write.slots.map((s) => s.logId)));
      const taken: Waiter[] = [];
      batch.forEach((w, i) => {
        // Left out: the sweeper closed its slots meanwhile (the append came too late).
        if (allocation?.taken.has(i) === true) taken.push(w);
        else w.reject(new UnavailableError("the write reached the store after its slots were closed; retry the append"));
      });
      if (allocation === undefined || taken.length === 0) return;
      const { segment } = allocation;
      const events = taken.flatMap((w) => w.write.events);
      const slots = taken.flatMap((w) => w.write.slots);
      const encoded = encodeSegment(segment, deps.now(), events);
      const key = segmentKey(segment);
      annotateSpan({ "tidemark.segment": segment, "tidemark.segment.appends": taken.length, "tidemark.segment.events": events.length, "tidemark.segment.bytes": encoded.body.length });
      for (const w of taken) if (w.trace !== undefined) annotateSpan({ "tidemark.segment": segment }, w.trace);
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
          await this.conflict(segment, existing, taken, slots);
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
      for (const w of taken) w.resolve(new Map(w.write.slots.map((s) => [s.logId, positions.get(s.logId)!])));
    } catch (e) {
      this.stats.failed += 1;
      // Nothing is acknowledged; what the store may hold is settled by the sweeper (W5).
      const error = e instanceof Error ? e : new Error(String(e));
      for (const w of batch) w.reject(error);
    }
  }

  /**
   * The segment's key exists and holds something else. A void segment means the sweeper closed the
   * number first (too late: UNAVAILABLE); anything else means PostgreSQL is behind S3 (W6):
   * re-synchronise, then answer ABORTED where S3 handed a slot to another event and UNAVAILABLE
   * (retry) otherwise.
   */
  private async conflict(segment: number, existing: Buffer | undefined, taken: Waiter[], slots: SlotRow[]): Promise<void> {
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
    for (const w of taken) {
      const lost = w.write.slots.find((s) => handedOver.has(s.logId));
      if (lost !== undefined) {
        // A multi-stream call (W8) holds several streams: name the one that lost its slot.
        const own = w.write.slots.filter((s) => s.aggregateType === lost.aggregateType && s.aggregateId === lost.aggregateId);
        w.reject(new ConcurrencyError(lost.aggregateType, lost.aggregateId, own[0]!.seq - 1, Math.max(...own.map((s) => s.seq))));
      }
      else w.reject(new UnavailableError("the commit log was behind the object store and has been re-synchronised; retry the append"));
    }
  }
}

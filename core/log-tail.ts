/**
 * One shared tail of the commit log for every live subscriber of a process. A single reader reads
 * the committed rows after its position (woken by commits, polling as the fallback) and hands each
 * row to every attached subscriber, each with its own bounded buffer; an event's envelope is loaded
 * once (by the tail before it hands the row out, or by the first subscriber that takes a row no one
 * wanted then) and shared. A subscriber whose buffer overflows (it
 * does not keep up) is detached and reads the log on its own, by position, until it reaches the
 * tail again, then re-joins; one that starts far behind does the same before it joins. Nothing here
 * knows about gRPC: server/subscribe.ts is a thin layer on top.
 *
 * Why no event is missed or repeated: positions are assigned in commit order under the commit
 * counter's lock, so reading "position > p" in order never skips an event that becomes visible
 * later (docs/CONTRACT.md R1; core/commit-log-reader.ts reads it). Each subscriber keeps the position up to which it has queued (or
 * filtered out) every event; the tail hands it only rows above that position, and a hand-over
 * (join, detach) happens synchronously between two reads, at exactly that position.
 */
import { CommitLogTailer, type CommitLogSource, type CommitWake, type TailPage } from "./commit-log-reader.js";
import type { EventEnvelope } from "./envelope.js";
import type { SlotRow } from "./event-log.js";
import { filtersNothing, rowMatcher, type LogFilter } from "./log-filter.js";
import type { Logger } from "./log.js";
import { sleep, sleepUntilWoken } from "./sleep.js";

/** The commit log as the tail reads it, plus loading an event; the server adapts its event store to it. */
export interface TailSource extends CommitLogSource {
  /** The envelope of a committed row, with its global position filled in. */
  load(row: SlotRow): Promise<EventEnvelope>;
  /**
   * Committed rows matching `filter` with a position in (after, upTo], in position order, at most
   * `limit` (core/event-log.ts committedMatching). Without it, a filtered subscriber reads every row.
   */
  committedMatching?(after: number, upTo: number, filter: LogFilter, limit: number): Promise<readonly SlotRow[]>;
}

/** Sizes and timings of a {@link LogTail}; see {@link LOG_TAIL_DEFAULTS}. */
export interface LogTailSettings {
  /** Rows per read of the log, by the tail and by a subscriber reading on its own. */
  readonly pageSize: number;
  /** Events a subscriber may have queued; one more detaches it from the tail (≥ pageSize). */
  readonly bufferSize: number;
  /** Recent events the tail keeps so a subscriber just behind it can join without another read (≤ bufferSize). */
  readonly historySize: number;
  /** Longest wait for a commit notification before the tail looks anyway. */
  readonly pollMs: number;
  /** A subscriber that has passed this many positions since its last message gets a checkpoint. */
  readonly checkpointPositions: number;
  /** A subscriber that has passed positions and sent nothing for this long gets a checkpoint. */
  readonly checkpointMs: number;
  /** Most positions one filtered read of a subscriber on its own spans (the query's bound on rows scanned). */
  readonly scanWindow: number;
}

/**
 * Default settings: pages of 256 rows, 1 024 queued events per subscriber, 1 024 of history, 1 s
 * polling; checkpoints every 1 000 positions or 1 s (docs/ARCHITECTURE.md "Filtered Subscribe");
 * filtered reads over at most 10 000 positions.
 */
export const LOG_TAIL_DEFAULTS: LogTailSettings = {
  pageSize: 256,
  bufferSize: 1024,
  historySize: 1024,
  pollMs: 1000,
  checkpointPositions: 1000,
  checkpointMs: 1000,
  scanWindow: 10_000,
};

/**
 * What a subscription yields: an event with its position, the one marker that catch-up is done, or
 * a checkpoint: every wanted event up to its position has been yielded (only when asked for, and
 * only when a filter skipped events since the last item).
 */
export type TailItem =
  | { readonly kind: "event"; readonly position: number; readonly event: EventEnvelope }
  | { readonly kind: "caught-up"; readonly position: number }
  | { readonly kind: "checkpoint"; readonly position: number };

/** Where a subscription starts and what it wants. */
export interface TailSubscribeOptions {
  /** Events with a position above this one, or "end": only events committed after the call. */
  readonly after: number | "end";
  /** Only rows this accepts are delivered (default: every row); the position still moves past the others. */
  readonly filter?: (row: SlotRow) => boolean;
  /**
   * Only rows matching this are delivered, like `filter` (both apply). Pushed down into the source's
   * query when it has `committedMatching`, so a subscriber reading on its own never sees the others.
   */
  readonly query?: LogFilter;
  /** Only events this accepts are delivered, tested once loaded (what the commit log does not hold, e.g. the kind). */
  readonly acceptEvent?: (event: EventEnvelope) => boolean;
  /** Yield checkpoints while the filters skip events (default: no). */
  readonly checkpoints?: boolean;
  /** Aborting it ends the subscription: the iterator finishes. */
  readonly signal?: AbortSignal;
}

/** Running totals of a tail, read by the server's metrics at scrape time. */
export interface LogTailStats {
  /** Reads of the commit log by the shared tail. */
  tailReads: number;
  /** Reads of the commit log by subscribers catching up on their own. */
  ownReads: number;
  /** Subscribers detached from the tail because their buffer overflowed. */
  detached: number;
}

/** A committed row on its way to subscribers; its envelope is loaded once, on first use, and shared. */
interface Entry {
  readonly row: SlotRow;
  readonly position: number;
  envelope: EventEnvelope | undefined;
  loading: Promise<EventEnvelope> | undefined;
  item?: TailItem;
}

interface CaughtUpMarker {
  readonly caughtUp: true;
  readonly position: number;
}

type Queued = Entry | CaughtUpMarker;

const MAX_BACKOFF_MS = 5000;
/** Parallel envelope loads of one read (the same bound as stream reads). */
const LOAD_CONCURRENCY = 16;

/**
 * The shared tail. `start` begins reading (only while someone is attached), `subscribe` opens a
 * subscription, `stop` ends every subscription and the reader.
 */
export class LogTail {
  /** Every event at or below this position has been handed to the attached subscribers. */
  private position = 0;
  /** The last read found less than a page: `position` was the end of the log then. */
  private atEnd = false;
  /** A read is in flight: `position` must not jump meanwhile. */
  private reading = false;
  /** Reads of the log the tail has started (subscriptions note it when they are opened). */
  readsStarted = 0;
  /** The read whose page the tail's position and end come from. */
  private freshFrom = 0;
  /** The last events handed out, every committed one in (historyStart, position], in order. */
  private history: Entry[] = [];
  private historyStart = 0;
  private readonly members = new Set<TailSubscription>();
  private readonly open = new Set<TailSubscription>();
  private readonly memberWaiters = new Set<() => void>();
  /** Ends the tail's wait for a commit (set while it waits). */
  private idle: AbortController | undefined;
  private readonly stopping = new AbortController();
  private loop: Promise<void> | undefined;
  private readonly settings: LogTailSettings;
  /** Running totals (see {@link LogTailStats}). */
  readonly stats: LogTailStats = { tailReads: 0, ownReads: 0, detached: 0 };
  private readonly tailer: CommitLogTailer;

  constructor(
    readonly source: TailSource,
    wake: CommitWake,
    private readonly log: Logger,
    settings: Partial<LogTailSettings> = {},
  ) {
    this.settings = { ...LOG_TAIL_DEFAULTS, ...settings };
    const s = this.settings;
    // A page or the history handed to an empty queue must fit, or keeping up would not be enough.
    const positive = s.pollMs > 0 && s.checkpointPositions >= 1 && s.checkpointMs > 0 && s.scanWindow >= 1;
    if (!(s.pageSize >= 1 && s.pageSize <= s.bufferSize && s.historySize >= 0 && s.historySize <= s.bufferSize && positive)) {
      throw new RangeError(`invalid log tail settings ${JSON.stringify(s)}: sizes must be positive, pageSize and historySize at most bufferSize`);
    }
    this.tailer = new CommitLogTailer(source, wake, s.pollMs);
  }

  /** Subscribers attached to the tail. */
  get live(): number {
    return this.members.size;
  }

  /** Open subscribers reading the log on their own (catching up, or detached for being slow). */
  get catchingUp(): number {
    return this.open.size - this.members.size;
  }

  /** Starts the reader; it reads only while at least one subscriber is attached. */
  start(): void {
    this.loop ??= this.run();
  }

  /** Ends every subscription (their iterators finish) and waits for the reader to stop. */
  async stop(): Promise<void> {
    this.stopping.abort();
    for (const s of [...this.open]) s.close();
    await this.loop;
  }

  /** Opens a subscription: an async iterator of events in position order and one caught-up marker. */
  subscribe(options: TailSubscribeOptions): TailSubscription {
    const subscription = new TailSubscription(this, options, this.settings);
    if (this.stopping.signal.aborted) subscription.close();
    else this.open.add(subscription);
    return subscription;
  }

  /**
   * For {@link TailSubscription}: attaches `s` (its queue is empty) if the tail can continue exactly
   * where it stands: from the history when it is just behind, or at once when it is level or ahead
   * (rows it already has are skipped when they arrive). An idle tail moves up to a subscriber that
   * just read the end of the log. Synchronous, so no read can land between the check and the attach.
   */
  tryJoin(s: TailSubscription): boolean {
    const at = s.position!;
    const idle = this.members.size === 0 && !this.reading;
    // An idle tail stopped reading when its last subscriber left, so it may stand anywhere behind
    // the end of the log: only a subscriber that has just read the end joins it.
    if (idle && !s.atEnd) return false;
    if (at > this.position) {
      if (idle) {
        // Nobody depends on the idle tail's position: it moves up to the subscriber.
        this.position = at;
        this.history = [];
        this.historyStart = at;
        this.atEnd = true;
      }
      // Otherwise the tail is behind the subscriber: rows it already has are skipped as they arrive.
    } else {
      const from = firstAfter(this.history, at);
      if (at < this.historyStart || this.history.length - from > this.settings.historySize) return false;
      for (let i = from; i < this.history.length; i++) {
        const entry = this.history[i]!;
        if (s.accepts(entry.row)) s.enqueue(entry);
      }
      s.position = this.position;
    }
    // The tail's end is the subscriber's only when the tail read it after the call (or the
    // subscriber read it itself): a commit acknowledged just before the call may not have reached
    // the tail yet (its wake-up is on the way). Otherwise the marker comes with the next page.
    const fresh = s.readSinceStart || this.freshFrom > s.tailReadsAtStart;
    if (this.atEnd && s.position! <= this.position && !s.caughtUp) {
      if (fresh) s.enqueueCaughtUp();
      // The tail reads again at once rather than wait for a commit: the marker comes with that
      // read. A read in flight meanwhile ends with it unsure of this subscriber, which does the same.
      else this.idle?.abort();
    }
    s.live = true;
    this.members.add(s);
    for (const wake of [...this.memberWaiters]) wake();
    return true;
  }

  /** For {@link TailSubscription}: forgets a closed subscription. */
  remove(s: TailSubscription): void {
    this.members.delete(s);
    this.open.delete(s);
  }

  /** For {@link TailSubscription}: an entry's envelope, loaded by the first one that needs it, then shared. */
  envelopeOf(entry: Entry): Promise<EventEnvelope> | EventEnvelope {
    if (entry.envelope !== undefined) return entry.envelope;
    if (entry.loading === undefined) {
      const loading = this.source.load(entry.row).then((envelope) => (entry.envelope = envelope));
      entry.loading = loading;
      // A failed load fails the subscribers waiting for it; a later one tries again.
      loading.catch(() => {
        if (entry.loading === loading) entry.loading = undefined;
      });
    }
    return entry.loading;
  }

  private async run(): Promise<void> {
    const signal = this.stopping.signal;
    const { pageSize, pollMs } = this.settings;
    let backoff = 100;
    while (!signal.aborted) {
      if (this.members.size === 0) {
        await sleepUntilWoken(this.memberWaiters, pollMs, signal);
        continue;
      }
      let page: TailPage;
      this.reading = true;
      const read = ++this.readsStarted;
      try {
        this.stats.tailReads += 1;
        page = await this.tailer.read(this.position, pageSize);
      } catch (e) {
        this.reading = false;
        this.log.warn({ err: e, after: this.position }, "log tail: reading the commit log failed; retrying");
        await sleep(backoff, signal);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
        continue;
      }
      backoff = 100;
      const rows = page.rows;
      const entries: Entry[] = rows.map((row) => ({ row, position: row.globalPosition!, envelope: undefined, loading: undefined }));
      await this.preload(entries);
      const unsure = this.fanOut(entries, page.atEnd, read);
      this.freshFrom = read;
      this.reading = false;
      if (page.atEnd && !unsure) {
        this.idle = new AbortController();
        await page.waitForMore(AbortSignal.any([signal, this.idle.signal]));
        this.idle = undefined;
      }
    }
  }

  /**
   * Loads, before they are handed out, the envelopes some attached subscriber wants, so that every
   * subscriber finds them ready. One that fails stays unloaded: the subscribers that take it load it
   * themselves, and fail if it still cannot be read.
   */
  private async preload(entries: readonly Entry[]): Promise<void> {
    const members = [...this.members];
    const wanted = entries.filter((e) => members.some((s) => s.accepts(e.row)));
    let next = 0;
    const worker = async () => {
      while (next < wanted.length) {
        const entry = wanted[next++]!;
        try {
          entry.envelope = await this.source.load(entry.row);
        } catch (e) {
          this.log.debug({ err: e, position: entry.position }, "log tail: event not loaded; its subscribers will try");
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(LOAD_CONCURRENCY, wanted.length) }, worker));
  }

  /**
   * Hands entries read after `position` by read number `read` to every attached subscriber;
   * detaches those with no room. A short page is the end of the log only for a subscriber whose
   * call came before the read started (or that has read the log itself since): one that joined
   * while the read was in flight may have been acknowledged a commit the read did not see. Returns
   * whether a subscriber was left waiting for its marker that way: the tail then reads again at once.
   */
  private fanOut(entries: readonly Entry[], short: boolean, read: number): boolean {
    const last = entries.length > 0 ? entries[entries.length - 1]!.position : this.position;
    const { bufferSize, historySize } = this.settings;
    let unsure = false;
    for (const s of [...this.members]) {
      let detached = false;
      for (const entry of entries) {
        if (entry.position <= s.position!) continue;
        if (s.accepts(entry.row)) {
          if (s.queuedEvents >= bufferSize) {
            detached = true;
            break;
          }
          s.enqueue(entry);
        }
        s.position = entry.position;
      }
      if (detached) {
        // It reads on its own from the position it stands at, and joins again when it is back.
        this.members.delete(s);
        s.live = false;
        s.atEnd = false;
        this.stats.detached += 1;
      } else if (short && !s.caughtUp && s.position! <= last) {
        if (s.readSinceStart || read > s.tailReadsAtStart) s.enqueueCaughtUp();
        else unsure = true;
      }
      s.wake();
    }
    this.position = last;
    this.atEnd = short;
    if (entries.length > 0) {
      this.history.push(...entries);
      if (this.history.length > historySize * 2 || (historySize === 0 && this.history.length > 0)) {
        const drop = this.history.length - historySize;
        this.historyStart = this.history[drop - 1]!.position;
        this.history = this.history.slice(drop);
      }
    }
    return unsure;
  }
}

/** The item of a loaded entry: one object per event, shared by every subscriber that takes it. */
function itemOf(entry: Entry, event: EventEnvelope): TailItem {
  return (entry.item ??= { kind: "event", position: entry.position, event });
}

/** Index of the first entry with a position above `position` (entries are in position order). */
function firstAfter(entries: readonly Entry[], position: number): number {
  let lo = 0;
  let hi = entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (entries[mid]!.position <= position) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const DONE: IteratorReturnResult<undefined> = { done: true, value: undefined };

/**
 * One subscriber of a {@link LogTail}: an async iterator with a single consumer. While attached it
 * is fed by the tail; otherwise each `next` on an empty queue reads the next page of the log
 * itself (so a slow consumer reads only as fast as it consumes) and tries to join the tail again.
 */
export class TailSubscription implements AsyncIterableIterator<TailItem> {
  /** Every event up to here has been queued or filtered out; undefined until "end" is resolved. */
  position: number | undefined;
  /** Attached to the tail's fan-out. */
  live = false;
  /** The last read of its own returned less than a page: it stood at the end of the log then. */
  atEnd = false;
  /** The caught-up marker has been queued (it is sent once). */
  caughtUp = false;
  /** It has read the log itself since the call: it has seen every commit acknowledged before it. */
  readSinceStart = false;
  /** The tail's read count when the call came: a read the tail starts later has seen what this one must. */
  readonly tailReadsAtStart: number;
  /** Events in the queue (markers not counted). */
  queuedEvents = 0;
  private closed = false;
  private queue: Queued[] = [];
  private head = 0;
  /** The consumer's `next` waiting for the tail. */
  private pending: { resolve: (r: IteratorResult<TailItem, undefined>) => void; reject: (e: unknown) => void } | undefined;
  private readonly filter: ((row: SlotRow) => boolean) | undefined;
  private readonly query: LogFilter | undefined;
  private readonly acceptEvent: ((event: EventEnvelope) => boolean) | undefined;
  private readonly checkpoints: boolean;
  /** The position of the last item yielded: the consumer knows everything wanted up to it. */
  private reported: number | undefined;
  /** When the last item was yielded (performance.now()). */
  private reportedAt = performance.now();
  private readonly signal: AbortSignal | undefined;
  private readonly onAbort = () => this.close();

  constructor(
    private readonly tail: LogTail,
    options: TailSubscribeOptions,
    private readonly settings: LogTailSettings,
  ) {
    this.position = options.after === "end" ? undefined : options.after;
    this.reported = this.position;
    this.tailReadsAtStart = tail.readsStarted;
    const query = options.query === undefined || filtersNothing(options.query) ? undefined : options.query;
    const byQuery = query === undefined ? undefined : rowMatcher(query);
    const byFilter = options.filter;
    this.filter = byQuery === undefined ? byFilter : byFilter === undefined ? byQuery : (row) => byQuery(row) && byFilter(row);
    this.query = query;
    this.acceptEvent = options.acceptEvent;
    this.checkpoints = options.checkpoints === true;
    this.signal = options.signal;
    if (this.signal?.aborted) this.close();
    else this.signal?.addEventListener("abort", this.onAbort, { once: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Whether this subscriber wants `row`. */
  accepts(row: SlotRow): boolean {
    return this.filter === undefined || this.filter(row);
  }

  /** Queues an event (the tail checks the bound first). */
  enqueue(entry: Entry): void {
    this.queue.push(entry);
    this.queuedEvents += 1;
  }

  /** Queues the caught-up marker at the current position. */
  enqueueCaughtUp(): void {
    this.caughtUp = true;
    this.queue.push({ caughtUp: true, position: this.position! });
  }

  /** Hands a consumer waiting for the tail what is new: an item, the end, or its own read. */
  wake(): void {
    const pending = this.pending;
    if (pending === undefined) return;
    if (!this.closed && this.live && this.head >= this.queue.length) {
      // Nothing queued, but the tail may have carried it past positions it does not want.
      const checkpoint = this.position === undefined ? undefined : this.checkpointAt(this.position);
      if (checkpoint === undefined) return;
      this.pending = undefined;
      pending.resolve({ done: false, value: checkpoint });
      return;
    }
    this.pending = undefined;
    const ready = this.closed ? undefined : this.takeReady();
    if (this.closed) pending.resolve(DONE);
    else if (ready !== undefined) pending.resolve({ done: false, value: ready });
    else this.nextSlowly().then(pending.resolve, pending.reject);
  }

  next(): Promise<IteratorResult<TailItem, undefined>> {
    // A live subscriber takes the fast paths: the next item is queued with its envelope loaded, or
    // it waits for the tail to hand it one. Per event and subscriber, the async machinery of the
    // general path cost about as much as the write to the client.
    if (this.closed) return Promise.resolve(DONE);
    const ready = this.takeReady();
    if (ready !== undefined) return Promise.resolve({ done: false, value: ready });
    if (this.live && this.head >= this.queue.length) {
      return new Promise((resolve, reject) => (this.pending = { resolve, reject }));
    }
    return this.nextSlowly();
  }

  /** The general path: load an envelope, resolve "end", join the tail, or read a page alone. */
  private async nextSlowly(): Promise<IteratorResult<TailItem, undefined>> {
    try {
      for (;;) {
        if (this.closed) return DONE;
        const ready = this.takeReady();
        if (ready !== undefined) return { done: false, value: ready };
        if (this.head < this.queue.length) {
          // Only an event whose envelope is not loaded yet is not ready.
          await this.tail.envelopeOf(this.queue[this.head] as Entry);
          continue;
        }
        if (this.live) return await this.next();
        if (this.position === undefined) {
          this.position = await this.tail.source.lastPosition();
          this.readSinceStart = true;
          this.atEnd = true;
          this.enqueueCaughtUp();
          continue;
        }
        if (this.tail.tryJoin(this)) continue;
        await this.readPage();
      }
    } catch (e) {
      this.close();
      throw e;
    }
  }

  async return(): Promise<IteratorResult<TailItem, undefined>> {
    this.close();
    return DONE;
  }

  /** Ends the subscription: the consumer's pending and later `next` calls finish. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.live = false;
    this.signal?.removeEventListener("abort", this.onAbort);
    this.tail.remove(this);
    this.queue = [];
    this.head = 0;
    this.queuedEvents = 0;
    this.wake();
  }

  /** One page of the log after `position`, read alone (catching up, or after being detached). */
  private async readPage(): Promise<void> {
    this.tail.stats.ownReads += 1;
    const source = this.tail.source;
    const { pageSize, scanWindow } = this.settings;
    if (this.query !== undefined && source.committedMatching !== undefined) {
      // Pushed down: the query returns only matching rows, over a bounded window of positions. The
      // end is read first: every position up to it is committed and visible to the query (R1), so
      // a short page means nothing else up to `upTo` matches, and the position moves there.
      const end = await source.lastPosition();
      const after = this.position!;
      const upTo = Math.min(end, after + scanWindow);
      const rows = upTo > after ? await source.committedMatching(after, upTo, this.query, pageSize) : [];
      this.readSinceStart = true;
      if (this.closed) return;
      this.take(rows);
      const short = rows.length < pageSize;
      if (short) this.position = Math.max(this.position!, upTo);
      this.atEnd = short && upTo >= end;
      if (this.atEnd && !this.caughtUp) this.enqueueCaughtUp();
      return;
    }
    const rows = await source.committedAfter(this.position!, pageSize);
    this.readSinceStart = true;
    if (this.closed) return;
    this.take(rows);
    this.atEnd = rows.length < pageSize;
    if (this.atEnd && !this.caughtUp) this.enqueueCaughtUp();
  }

  /** Queues the wanted rows of a page read alone and moves past all of them. */
  private take(rows: readonly SlotRow[]): void {
    for (const row of rows) {
      if (this.accepts(row)) this.enqueue({ row, position: row.globalPosition!, envelope: undefined, loading: undefined });
      this.position = row.globalPosition!;
    }
  }

  /**
   * A checkpoint at `at` when one is due: the consumer was last told of a position below it, and
   * since then the subscriber has passed checkpointPositions positions or checkpointMs has gone by.
   * Whoever calls it yields the result.
   */
  private checkpointAt(at: number): TailItem | undefined {
    if (!this.checkpoints || this.reported === undefined || at <= this.reported) return undefined;
    const now = performance.now();
    if (at - this.reported < this.settings.checkpointPositions && now - this.reportedAt < this.settings.checkpointMs) return undefined;
    this.reported = at;
    this.reportedAt = now;
    return { kind: "checkpoint", position: at };
  }

  /**
   * Takes the next item if it can be handed out now (a marker, or an event with its envelope), or a
   * checkpoint when one is due while nothing else is ready.
   */
  private takeReady(): TailItem | undefined {
    for (;;) {
      if (this.head >= this.queue.length) return this.position === undefined ? undefined : this.checkpointAt(this.position);
      const item = this.queue[this.head]!;
      if ("caughtUp" in item) {
        this.shift();
        this.report(item.position);
        return { kind: "caught-up", position: item.position };
      }
      // Everything below a queued event has been yielded or filtered out.
      if (item.envelope === undefined) return this.checkpointAt(item.position - 1);
      this.shift();
      if (this.acceptEvent !== undefined && !this.acceptEvent(item.envelope)) continue;
      this.report(item.position);
      return itemOf(item, item.envelope);
    }
  }

  /**
   * Up to `max` more events that can be handed out without waiting for the tail: those queued next,
   * up to the first marker, for a consumer that sends several events in one message. Envelopes not
   * loaded yet (a page read alone) are loaded first, up to {@link LOAD_CONCURRENCY} at once; the
   * events are taken up to the first one still not loaded, which the next `next` loads (and fails
   * on if it cannot be read). May return none. Never yields checkpoints.
   */
  takeEvents(max: number): TailItem[] | Promise<TailItem[]> {
    const missing: Promise<EventEnvelope>[] = [];
    let events = 0;
    for (let i = this.head; i < this.queue.length && events < max && missing.length < LOAD_CONCURRENCY; i++) {
      const entry = this.queue[i]!;
      if ("caughtUp" in entry) break;
      if (entry.envelope === undefined) missing.push(Promise.resolve(this.tail.envelopeOf(entry)));
      events += 1;
    }
    if (missing.length === 0) return this.takeLoaded(max);
    return Promise.allSettled(missing).then(() => this.takeLoaded(max));
  }

  /** The queued events up to `max`, the first marker or the first envelope not loaded. */
  private takeLoaded(max: number): TailItem[] {
    const items: TailItem[] = [];
    while (items.length < max && !this.closed && this.head < this.queue.length) {
      const entry = this.queue[this.head]!;
      if ("caughtUp" in entry || entry.envelope === undefined) break;
      this.shift();
      if (this.acceptEvent === undefined || this.acceptEvent(entry.envelope)) items.push(itemOf(entry, entry.envelope));
    }
    if (items.length > 0) this.report(items[items.length - 1]!.position);
    return items;
  }

  /** Notes that the consumer has been told of everything wanted up to `position`. */
  private report(position: number): void {
    this.reported = position;
    this.reportedAt = performance.now();
  }

  private shift(): void {
    const item = this.queue[this.head]!;
    this.head += 1;
    if (this.head >= this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    if (!("caughtUp" in item)) this.queuedEvents -= 1;
  }
}

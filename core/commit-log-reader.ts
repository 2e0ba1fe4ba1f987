/**
 * Reading the commit log, once for everyone: what every reader of committed events does the same
 * way — the server's reads and Subscribe's shared tail, the relay, the rebuild of a projection and
 * the sweeper. Two pieces: reading committed events from their segments (`CommittedEventReader`:
 * ranged GETs coalesced per segment, or whole segments for readers in position order; each event's
 * bytes, its envelope with the global position, and a check that the bytes hold the event the log
 * says), and tailing the log by position (`CommitLogTailer`: a page of rows after a position, and a
 * wait for more that is woken by commits).
 *
 * Why tailing by position skips nothing: positions are assigned in commit order under the commit
 * counter's lock, so a reader that sees position p has seen every position below it
 * (docs/CONTRACT.md R1).
 */
import type { Kysely } from "kysely";
import type { WriteSideTables } from "./db/schema.js";
import { decodeEnvelope, type EventEnvelope } from "./envelope.js";
import { UnavailableError } from "./errors.js";
import { committedAfter, lastPosition, type SlotRow } from "./event-log.js";
import { segmentKey } from "./segment.js";
import type { ObjectStore } from "./object-store.js";

/** Why a committed event could not be read. */
export type UnreadableReason = "missing" | "unavailable" | "corrupt" | "mismatch";

/**
 * A committed event that cannot be read now: the store is unavailable, or the object is missing,
 * corrupt, or holds another event. Readers never skip it: a read fails with
 * UNAVAILABLE, the relay blocks there and raises an alarm until the object reads again.
 */
export class UnreadableEventError extends UnavailableError {
  constructor(
    readonly reason: UnreadableReason,
    readonly position: number,
    readonly key: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A committed event as stored: its key, its bytes and its envelope (global position filled in). */
export interface CommittedEvent {
  readonly key: string;
  /** The stored JSON, byte for byte (the relay publishes it as it is). */
  readonly body: string;
  readonly envelope: EventEnvelope;
}

/** Where a committed row's event is: its segment's key and its bytes there; throws when the log has no location. */
export function locationOf(row: SlotRow): { readonly segment: number; readonly key: string; readonly start: number; readonly length: number } {
  if (row.segment === null || row.segmentOffset === null || row.segmentLength === null) {
    throw new UnreadableEventError("missing", row.globalPosition ?? 0, "", `committed event ${row.eventId} has no location in the commit log`);
  }
  return { segment: row.segment, key: segmentKey(row.segment), start: row.segmentOffset, length: row.segmentLength };
}

/** The stored event of committed `row` (one ranged GET); throws UnreadableEventError naming why it cannot be read. */
export async function readCommittedEvent(objects: ObjectStore, row: SlotRow): Promise<CommittedEvent> {
  const [result] = await new CommittedEventReader(objects).read([row]);
  if (result instanceof UnreadableEventError) throw result;
  return result!;
}

/** How a {@link CommittedEventReader} fetches. */
export interface CommittedEventReaderOptions {
  /**
   * Whole segments, one GET each, kept in a small cache (the relay and rebuilds read every event of
   * a segment in order); otherwise ranged GETs, neighbours of one segment coalesced (stream reads).
   */
  readonly wholeSegments?: boolean;
  /** Whole segments kept (default 8): a page of the log may end inside a segment. */
  readonly cacheSegments?: number;
  /** GETs in flight at once (default 16). */
  readonly concurrency?: number;
  /** Largest coalesced range, in bytes (default 1 MiB). */
  readonly maxRangeBytes?: number;
}

/** Largest hole between two events of one segment that a coalesced range spans (64 KiB). */
const MAX_GAP_BYTES = 64 * 1024;

/**
 * Reads the events of committed rows from their segments with as few requests as it can: one GET
 * per segment (cached) or one ranged GET per run of neighbours. Every row's result is its event or
 * the UnreadableEventError saying why not, in the rows' order; nothing is skipped silently.
 */
export class CommittedEventReader {
  private readonly cache = new Map<number, Buffer>();

  constructor(
    private readonly objects: ObjectStore,
    private readonly options: CommittedEventReaderOptions = {},
  ) {}

  async read(rows: readonly SlotRow[]): Promise<Array<CommittedEvent | UnreadableEventError>> {
    const out = new Array<CommittedEvent | UnreadableEventError>(rows.length);
    const located: Array<{ index: number; row: SlotRow; at: ReturnType<typeof locationOf> }> = [];
    rows.forEach((row, index) => {
      try {
        located.push({ index, row, at: locationOf(row) });
      } catch (e) {
        out[index] = e as UnreadableEventError;
      }
    });
    const bySegment = new Map<number, typeof located>();
    for (const item of located) {
      const list = bySegment.get(item.at.segment);
      if (list === undefined) bySegment.set(item.at.segment, [item]);
      else list.push(item);
    }
    await inParallel(
      [...bySegment],
      this.options.concurrency ?? 16,
      async ([segment, items]) => {
        if (this.options.wholeSegments === true) {
          let body: Buffer | undefined;
          try {
            body = await this.segmentBytes(segment, items[0]!.at.key);
          } catch (e) {
            for (const item of items) out[item.index] = unavailable(item.row, item.at.key, e);
            return;
          }
          for (const item of items) out[item.index] = slice(item.row, item.at, body, 0);
          return;
        }
        for (const run of runs(items, this.options.maxRangeBytes ?? 1024 * 1024)) {
          const start = run[0]!.at.start;
          const end = Math.max(...run.map((i) => i.at.start + i.at.length));
          let body: Buffer | undefined;
          try {
            body = await this.objects.read(run[0]!.at.key, { start, length: end - start });
          } catch (e) {
            for (const item of run) out[item.index] = unavailable(item.row, item.at.key, e);
            continue;
          }
          for (const item of run) out[item.index] = slice(item.row, item.at, body, start);
        }
      },
    );
    return out;
  }

  private async segmentBytes(segment: number, key: string): Promise<Buffer | undefined> {
    const cached = this.cache.get(segment);
    if (cached !== undefined) {
      // Most recently used last.
      this.cache.delete(segment);
      this.cache.set(segment, cached);
      return cached;
    }
    const body = await this.objects.read(key);
    if (body !== undefined) {
      this.cache.set(segment, body);
      const limit = this.options.cacheSegments ?? 8;
      while (this.cache.size > limit) this.cache.delete(this.cache.keys().next().value!);
    }
    return body;
  }
}

/** Runs `work` on every item, at most `limit` at once. */
async function inParallel<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await work(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** Neighbours of one segment, in offset order, grouped into ranges no larger than `maxBytes`. */
function runs<T extends { at: { start: number; length: number } }>(items: readonly T[], maxBytes: number): T[][] {
  const sorted = [...items].sort((a, b) => a.at.start - b.at.start);
  const out: T[][] = [];
  let current: T[] = [];
  let runStart = 0;
  let runEnd = 0;
  for (const item of sorted) {
    const end = item.at.start + item.at.length;
    if (current.length > 0 && item.at.start - runEnd <= MAX_GAP_BYTES && end - runStart <= maxBytes) {
      current.push(item);
      runEnd = Math.max(runEnd, end);
      continue;
    }
    if (current.length > 0) out.push(current);
    current = [item];
    runStart = item.at.start;
    runEnd = end;
  }
  if (current.length > 0) out.push(current);
  return out;
}

function unavailable(row: SlotRow, key: string, cause: unknown): UnreadableEventError {
  return new UnreadableEventError("unavailable", row.globalPosition ?? 0, key, `object store unavailable reading ${key}`, { cause });
}

/** The row's event from `body`, which starts at byte `base` of its segment. */
function slice(row: SlotRow, at: ReturnType<typeof locationOf>, body: Buffer | undefined, base: number): CommittedEvent | UnreadableEventError {
  const position = row.globalPosition ?? 0;
  if (body === undefined) {
    return new UnreadableEventError("missing", position, at.key, `committed event ${row.eventId} at position ${position}: segment ${at.key} is missing`);
  }
  const from = at.start - base;
  if (from < 0 || from + at.length > body.length) {
    return new UnreadableEventError("corrupt", position, at.key, `segment ${at.key} is shorter than the event's bytes [${at.start}, ${at.start + at.length})`);
  }
  try {
    return committedEventOf(row, at.key, body.subarray(from, from + at.length).toString("utf8"));
  } catch (e) {
    if (e instanceof UnreadableEventError) return e;
    throw e;
  }
}

/**
 * The committed event of `row` in the stored `body` of its object at `key` (pure): throws
 * UnreadableEventError when the bytes are not an envelope or hold another event.
 */
export function committedEventOf(row: SlotRow, key: string, body: string): CommittedEvent {
  const position = row.globalPosition ?? 0;
  let stored: EventEnvelope;
  try {
    stored = decodeEnvelope(body);
  } catch (e) {
    throw new UnreadableEventError("corrupt", position, key, `object ${key} does not hold an envelope at the event's bytes`, { cause: e });
  }
  if (stored.eventId !== row.eventId || Number(stored.sequenceNumber) !== row.seq) {
    throw new UnreadableEventError(
      "mismatch",
      position,
      key,
      `object ${key} holds event ${stored.eventId} seq ${stored.sequenceNumber}, the log says ${row.eventId} seq ${row.seq}`,
    );
  }
  // A shallow copy: protobuf-es's clone would rebuild `data` by assignment (losing `__proto__`).
  return { key, body, envelope: { ...stored, globalPosition: BigInt(position) } };
}

/** Wakes readers when a commit is announced (core/commit-listener.ts `CommitListener` is one). */
export interface CommitWake {
  /** Highest position announced so far; a change during a read means "look again". */
  readonly lastAnnounced: number;
  /** Resolves at the next announced commit, after `timeoutMs`, or when `signal` aborts. */
  wait(timeoutMs: number, signal?: AbortSignal): Promise<void>;
}

/** The commit log as a tailer reads it (tests give an in-memory one). */
export interface CommitLogSource {
  /** Committed rows with a global position above `after`, in position order, at most `limit`. */
  committedAfter(after: number, limit: number): Promise<readonly SlotRow[]>;
  /** The highest committed global position. */
  lastPosition(): Promise<number>;
}

/** The commit log of `db` as a {@link CommitLogSource}. */
export function commitLogOf(db: Kysely<WriteSideTables>): CommitLogSource {
  return { committedAfter: (after, limit) => committedAfter(db, after, limit), lastPosition: () => lastPosition(db) };
}

/** One page read by a {@link CommitLogTailer}. */
export interface TailPage {
  readonly rows: readonly SlotRow[];
  /** True when the page came up short: the log had no more rows when it was read. */
  readonly atEnd: boolean;
  /**
   * Waits for more rows: returns at once when a commit was announced since the read began (it may
   * have missed it), else at the next announcement, after the poll interval, or when `signal` aborts.
   */
  waitForMore(signal?: AbortSignal): Promise<void>;
}

/**
 * Follows the commit log by position: pages of committed rows, and the wait between them, woken
 * by commit notifications with polling as the fallback (docs/CONTRACT.md R6). Used by Subscribe's
 * shared tail, the relay (Kafka and embedded) and rebuilds.
 */
export class CommitLogTailer {
  constructor(
    readonly source: CommitLogSource,
    private readonly wake: CommitWake | undefined,
    private readonly pollMs: number,
  ) {}

  /** The rows after `after`, at most `limit`. */
  async read(after: number, limit: number): Promise<TailPage> {
    // Noted before the query: a commit announced while it runs must be looked at again.
    const announced = this.wake?.lastAnnounced ?? 0;
    const rows = await this.source.committedAfter(after, limit);
    return {
      rows,
      atEnd: rows.length < limit,
      waitForMore: async (signal) => {
        if (this.wake === undefined) return;
        if (this.wake.lastAnnounced === announced) await this.wake.wait(this.pollMs, signal);
      },
    };
  }

  /** Every page after `after` up to the end of the log as the pages are read (catch-up; no waiting). */
  async *toEnd(after: number, limit: number): AsyncGenerator<readonly SlotRow[]> {
    let position = after;
    for (;;) {
      const page = await this.read(position, limit);
      if (page.rows.length > 0) {
        yield page.rows;
        position = page.rows[page.rows.length - 1]!.globalPosition!;
      }
      if (page.atEnd) return;
    }
  }
}

/**
 * Reading the commit log, once for everyone: what every reader of committed events does the same
 * way — the server's reads and Subscribe's shared tail, the relay, the rebuild of a projection and
 * the sweeper. Two pieces: reading one slot's object from the store (`readSlot`, and
 * `readCommittedEvent` for a committed row: its bytes, its envelope with the global position, and
 * a check that the object holds the event the log says), and tailing the log by position
 * (`CommitLogTailer`: a page of rows after a position, and a wait for more that is woken by commits).
 *
 * Why tailing by position skips nothing: positions are assigned in commit order under the commit
 * counter's lock, so a reader that sees position p has seen every position below it
 * (docs/CONTRACT.md R1).
 */
import type { Kysely } from "kysely";
import type { WriteSideTables } from "./db/schema.js";
import { decodeSlot, type EventEnvelope, type SlotContent } from "./envelope.js";
import { UnavailableError } from "./errors.js";
import { committedAfter, lastPosition, type SlotRow } from "./event-log.js";
import { slotKey } from "./ids.js";
import type { ObjectStore } from "./object-store.js";

/** Why a committed event could not be read. */
export type UnreadableReason = "missing" | "unavailable" | "void" | "corrupt" | "mismatch";

/**
 * A committed event that cannot be read now: the store is unavailable, or the object is missing,
 * corrupt, a void marker, or holds another event. Readers never skip it: a read fails with
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

/** What one slot's object holds, or undefined when there is no object. Store failures propagate. */
export async function readSlot(objects: ObjectStore, key: string): Promise<SlotContent | undefined> {
  const body = await objects.get(key);
  return body === undefined ? undefined : decodeSlot(body);
}

/** A committed event as stored: its key, its bytes and its envelope (global position filled in). */
export interface CommittedEvent {
  readonly key: string;
  /** The stored JSON, byte for byte (the relay publishes it as it is). */
  readonly body: string;
  readonly envelope: EventEnvelope;
}

/** The stored event of committed `row`; throws UnreadableEventError naming why it cannot be read. */
export async function readCommittedEvent(objects: ObjectStore, row: SlotRow): Promise<CommittedEvent> {
  const position = row.globalPosition ?? 0;
  const key = slotKey(row.aggregateType, row.aggregateId, row.seq);
  let body: string | undefined;
  try {
    body = await objects.get(key);
  } catch (e) {
    throw new UnreadableEventError("unavailable", position, key, `object store unavailable reading ${key}`, { cause: e });
  }
  if (body === undefined) {
    throw new UnreadableEventError("missing", position, key, `committed event ${row.eventId} at position ${position} has no object at ${key}`);
  }
  return committedEventOf(row, key, body);
}

/**
 * The committed event of `row` in the stored `body` of its object at `key` (pure): throws
 * UnreadableEventError when the body is corrupt, a void marker, or holds another event.
 */
export function committedEventOf(row: SlotRow, key: string, body: string): CommittedEvent {
  const position = row.globalPosition ?? 0;
  let content: SlotContent;
  try {
    content = decodeSlot(body);
  } catch (e) {
    throw new UnreadableEventError("corrupt", position, key, `object ${key} is not an envelope`, { cause: e });
  }
  if (content.type === "void") {
    throw new UnreadableEventError("void", position, key, `object ${key} is a void marker but the log says committed`);
  }
  const stored = content.envelope;
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

/**
 * Reads the next committed events in global order and their bytes from S3, the source of truth,
 * with core's commit-log tailer and event reader (core/commit-log-reader.ts: tailing by position
 * never passes an event that becomes visible later, docs/CONTRACT.md R1). Each segment is fetched
 * whole, once (a few are kept, as a page of the log may end inside one). An event that cannot be
 * read stops the batch right before it: the relay never skips an event.
 */
import {
  CommittedEventReader,
  type CommitLogTailer,
  type Logger,
  type ObjectStore,
  sleep,
  type TailPage,
  UnreadableEventError,
} from "../core/index.js";
import { logBlocked, toKafkaMessage, type EventMessage } from "./to-kafka-message.js";

/** Committed events after `after`, up to and including `last`, with their messages, in order. */
export interface ReadBatch {
  readonly after: number;
  readonly last: number;
  readonly messages: readonly EventMessage[];
}

/** Reads batches of committed events. */
export class EventReader {
  private readonly events: CommittedEventReader;

  constructor(
    private readonly tailer: CommitLogTailer,
    objects: ObjectStore,
    private readonly batchSize: number,
    /** Segment GETs in flight at once. */
    concurrency: number,
  ) {
    this.events = new CommittedEventReader(objects, { wholeSegments: true, concurrency });
  }

  /**
   * The next committed events after `after` (at most batchSize) — `batch` undefined when there are
   * none — and the page they came from (its `waitForMore` waits for the next commit). When an
   * event is unreadable, returns the events before it; when the first one is unreadable, throws
   * UnreadableEventError, so the caller retries that very position.
   */
  async next(after: number): Promise<{ readonly batch: ReadBatch | undefined; readonly page: TailPage }> {
    const page = await this.tailer.read(after, this.batchSize);
    const rows = page.rows;
    if (rows.length === 0) return { batch: undefined, page };
    const results = await this.events.read(rows);
    const messages: EventMessage[] = [];
    for (const [i, result] of results.entries()) {
      if (result instanceof UnreadableEventError) {
        if (messages.length === 0) throw result;
        break;
      }
      messages.push(toKafkaMessage(rows[i]!, result));
    }
    return { batch: { after, last: messages[messages.length - 1]!.position, messages }, page };
  }
}

/** What a {@link PatientReader} works with; the callbacks set the caller's own metrics. */
export interface PatientReaderDeps {
  readonly reader: EventReader;
  readonly log: Logger;
  /** Names the relay in alarm lines ("relay", "embedded relay"). */
  readonly label: string;
  /** A read failed because the event at `e.position` cannot be read (called on every attempt). */
  onUnreadable(e: UnreadableEventError): void;
  /** The event that blocked publication was read after all. */
  onUnblocked(): void;
}

const MAX_BACKOFF_MS = 5000;
const ALARM_LOG_INTERVAL_MS = 30_000;

/**
 * Reads the commit log one step at a time for a relay loop: a batch, or nothing after waiting —
 * for a commit when the log has no news, or with exponential backoff after a failed read. An
 * unreadable event is never skipped: the step retries it and raises the blocked alarm (logged at
 * most every 30 s) until the event reads again (docs/CONTRACT.md R1).
 */
export class PatientReader {
  private backoff = 100;
  private lastAlarmLog = 0;
  /** Position publication is blocked at, if any. */
  blockedAt: number | undefined;

  constructor(private readonly deps: PatientReaderDeps) {}

  async step(cursor: number, signal: AbortSignal): Promise<ReadBatch | undefined> {
    const { deps } = this;
    let batch: ReadBatch | undefined;
    try {
      const read = await deps.reader.next(cursor);
      batch = read.batch;
      if (batch === undefined) {
        this.backoff = 100;
        await read.page.waitForMore(signal);
        return undefined;
      }
    } catch (e) {
      if (e instanceof UnreadableEventError) {
        deps.onUnreadable(e);
        const first = this.blockedAt !== e.position;
        this.blockedAt = e.position;
        if (first || Date.now() - this.lastAlarmLog > ALARM_LOG_INTERVAL_MS) {
          this.lastAlarmLog = Date.now();
          logBlocked(deps.log, e, deps.label);
        }
      } else {
        deps.log.warn({ err: e, after: cursor }, "reading the commit log failed; retrying");
      }
      await sleep(this.backoff, signal);
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
      return undefined;
    }
    this.backoff = 100;
    if (this.blockedAt !== undefined && batch.last >= this.blockedAt) {
      deps.log.warn({ alarm: "relay_blocked", position: this.blockedAt }, `${deps.label} unblocked: the event is readable again`);
      this.blockedAt = undefined;
      deps.onUnblocked();
    }
    return batch;
  }
}

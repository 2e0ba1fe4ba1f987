/**
 * Reads the next committed events in global order and their bytes from S3, the source of truth.
 * Positions are assigned under the commit counter's lock, so "position > cursor, in order" never
 * passes an event that becomes visible later (CONTRACT.md R1). An object that cannot be read stops
 * the batch right before it: the relay never skips an event.
 */
import type { Kysely } from "kysely";
import { committedAfter, type SlotRow } from "../core/event-log.js";
import { slotKey } from "../core/ids.js";
import type { ObjectStore } from "../core/object-store.js";
import { writeSideView, type RelayTables } from "./schema.js";
import { toKafkaMessage, UnreadableEventError, type EventMessage } from "./to-kafka-message.js";

/** Committed events after `after`, up to and including `last`, with their messages, in order. */
export interface ReadBatch {
  readonly after: number;
  readonly last: number;
  readonly messages: readonly EventMessage[];
}

/** Reads batches of committed events. */
export class EventReader {
  constructor(
    private readonly db: Kysely<RelayTables>,
    private readonly objects: ObjectStore,
    private readonly batchSize: number,
    private readonly concurrency: number,
  ) {}

  /**
   * The next committed events after `after` (at most batchSize), or undefined when there are none.
   * When an object is unreadable, returns the events before it; when the first one is unreadable,
   * throws UnreadableEventError, so the caller retries that very position.
   */
  async next(after: number): Promise<ReadBatch | undefined> {
    const rows = await committedAfter(writeSideView(this.db), after, this.batchSize);
    if (rows.length === 0) return undefined;
    const results = await this.load(rows);
    const messages: EventMessage[] = [];
    for (const result of results) {
      if (result instanceof UnreadableEventError) {
        if (messages.length === 0) throw result;
        break;
      }
      messages.push(result);
    }
    return { after, last: messages[messages.length - 1]!.position, messages };
  }

  private async load(rows: readonly SlotRow[]): Promise<Array<EventMessage | UnreadableEventError>> {
    const out = new Array<EventMessage | UnreadableEventError>(rows.length);
    let nextIndex = 0;
    let failedAt = rows.length;
    const worker = async () => {
      // Rows after a failure are not fetched: they cannot be published before it anyway.
      while (nextIndex < failedAt) {
        const i = nextIndex++;
        const result = await this.loadOne(rows[i]!);
        out[i] = result;
        if (result instanceof UnreadableEventError) failedAt = Math.min(failedAt, i);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, rows.length) }, worker));
    return out.slice(0, Math.min(rows.length, failedAt + 1));
  }

  private async loadOne(row: SlotRow): Promise<EventMessage | UnreadableEventError> {
    const position = row.globalPosition!;
    const key = slotKey(row.aggregateType, row.aggregateId, row.seq);
    let body: string | undefined;
    try {
      body = await this.objects.get(key);
    } catch (e) {
      return new UnreadableEventError("unavailable", position, key, `object store unavailable reading ${key}`, { cause: e });
    }
    if (body === undefined) {
      return new UnreadableEventError("missing", position, key, `committed event ${row.eventId} at position ${position} has no object at ${key}`);
    }
    try {
      return toKafkaMessage(row, key, body);
    } catch (e) {
      if (e instanceof UnreadableEventError) return e;
      throw e;
    }
  }
}

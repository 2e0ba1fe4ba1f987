/**
 * Writes below the gRPC API for relay tests: reserve a slot and write it in a segment of its own
 * exactly as the server does (allocate a number, conditional create, record its place), then commit it in a transaction the test controls — the same steps as the commit
 * path (core/event-log.ts commitSlots, SQL function commit_slots: lock the counter row first, give
 * the next position, mark committed, advance the counter, NOTIFY) — so it can be held open, or
 * committed without a notification.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { contentHash, encodeEnvelope, EventEnvelopeSchema, EventKind } from "../../core/envelope.js";
import { reserveSlots, type SlotRow } from "../../core/event-log.js";
import { encodeSegment, SEGMENT_CONTENT_TYPE, segmentKey, type SegmentEvent } from "../../core/segment.js";
import { allocateSegment } from "../../core/segment-log.js";
import { commitChannel } from "../../core/db/database.js";
import type { ServerHandle } from "../../server/app.js";

/** A reserved slot whose segment is in S3, not yet committed; `key` is the segment's, `body` the event's bytes. */
export interface WrittenSlot {
  readonly logId: number;
  readonly eventId: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly seq: number;
  readonly key: string;
  readonly body: string;
}

/** An append reserved alone, as the server's EventStore does it: reserves the next slot of the aggregate (`any`) for one `Noted` event and makes its envelope line. */
export async function reserveNoted(
  server: ServerHandle,
  aggregateType: string,
  aggregateId: string,
  eventId: string,
  data: Record<string, unknown> = {},
  actor = "relay-test",
): Promise<{ readonly slots: [SlotRow]; readonly events: [SegmentEvent] }> {
  const metadata = { kind: "domain" };
  const hash = contentHash({ eventType: "Noted", aggregateType, aggregateId, data: data as never, metadata, schemaVersion: 1, kind: EventKind.DOMAIN });
  const reservation = await reserveSlots(server.database.db, aggregateType, aggregateId, { type: "any" }, [{ eventId, eventType: "Noted", contentHash: hash, orderingKey: null }]);
  if (reservation.type !== "reserved") throw new Error(`${eventId} was not reserved`);
  const slot = reservation.slots[0]!;
  const envelope = create(EventEnvelopeSchema, {
    eventId,
    eventType: "Noted",
    aggregateType,
    aggregateId,
    sequenceNumber: BigInt(slot.seq),
    occurredAt: timestampFromDate(new Date()),
    actor,
    data: data as never,
    metadata,
    schemaVersion: 1,
    kind: EventKind.DOMAIN,
    contentHash: hash,
    previousHash: reservation.previousHash,
  });
  return { slots: [slot], events: [{ eventId, aggregateType, aggregateId, seq: slot.seq, json: encodeEnvelope(envelope) }] };
}

/** Steps 1 and 2 of an append (reserve, segment write), as the server's EventStore and SegmentWriter do them. */
export async function writeSlot(server: ServerHandle, aggregateType: string, aggregateId: string, eventId: string, data: Record<string, unknown> = {}): Promise<WrittenSlot> {
  const {
    slots: [slot],
    events: [{ json: body }],
  } = await reserveNoted(server, aggregateType, aggregateId, eventId, data);
  const allocation = await allocateSegment(server.database.db, [[slot.logId]]);
  if (allocation === undefined) throw new Error(`slot ${slot.logId} could not be put into a segment`);
  const key = segmentKey(allocation.segment);
  const encoded = encodeSegment(allocation.segment, new Date(), [{ eventId, aggregateType, aggregateId, seq: slot.seq, json: body }]);
  if ((await server.objects.createIfAbsent(key, encoded.body, SEGMENT_CONTENT_TYPE)) !== "created") throw new Error(`${key} exists`);
  const range = encoded.ranges[0]!;
  await server.database.db.updateTable("event_log").set({ segment_offset: range.start, segment_length: range.length }).where("log_id", "=", slot.logId).execute();
  return { logId: slot.logId, eventId, aggregateType, aggregateId, seq: slot.seq, key, body };
}

/** A commit transaction held open by the test. */
export interface OpenCommit {
  readonly position: number;
  commit(): Promise<void>;
  rollback(): Promise<void>;
}

/**
 * Step 3 in a transaction left open: takes the commit counter's row lock, gives `slot` the next
 * position and (unless `notify` is false) queues the NOTIFY, as commit_slots does.
 */
export async function beginCommit(server: ServerHandle, slot: WrittenSlot, { notify = true } = {}): Promise<OpenCommit> {
  const client = await server.database.pool.connect();
  let position: number;
  try {
    await client.query("begin");
    const counter = await client.query<{ position: string }>("update global_counter set position = position where id = 1 returning position");
    position = Number(counter.rows[0]!.position) + 1;
    const updated = await client.query(
      "update event_log set state = 'committed', global_position = $2, committed_at = now() where log_id = $1 and state = 'pending'",
      [slot.logId, position],
    );
    if (updated.rowCount !== 1) throw new Error(`slot ${slot.logId} is not pending`);
    await client.query("update global_counter set position = $1 where id = 1", [position]);
    if (notify) await client.query("select pg_notify($1, $2)", [commitChannel(server.database.schema), String(position)]);
  } catch (e) {
    await client.query("rollback").catch(() => {});
    client.release();
    throw e;
  }
  let done = false;
  const finish = async (statement: string) => {
    if (done) return;
    done = true;
    try {
      await client.query(statement);
    } finally {
      client.release();
    }
  };
  return { position, commit: () => finish("commit"), rollback: () => finish("rollback") };
}

/**
 * Settling what S3 holds with what the commit log believes, segment by segment (docs/STORAGE.md,
 * docs/CONTRACT.md W5 and W6). One procedure serves three callers:
 *
 * - the sweeper, for a segment number whose writer never finished (died between the allocation
 *   and the commit, or its PUT failed ambiguously);
 * - a retried append, whose original is still unresolved and whose writer seems gone;
 * - the segment writer, when a new number's key already exists (PostgreSQL is behind S3).
 *
 * Settling a number reads its key. Absent: a void segment is created with the same conditional
 * create a writer uses, so exactly one of the two wins, and the number's slots are closed. A void
 * segment: the same. Events: the log is made to hold exactly what the segment's header says —
 * each event at its (aggregate, seq), whatever the log had reserved there (S3 decides) — the slots
 * of the number that the segment does not hold are closed, and the events are committed.
 */
import type { Kysely } from "kysely";
import {
  advanceSegmentCounter,
  chainLink,
  adoptStoredEvent,
  type CommitRequest,
  decodeEnvelope,
  decodeSegment,
  encodeVoidSegment,
  lastSegment,
  type Logger,
  markSegment,
  type ObjectStore,
  raiseHead,
  SEGMENT_CONTENT_TYPE,
  SEGMENT_PREFIX,
  segmentKey,
  segmentOfKey,
  type SegmentEntry,
  type SlotRow,
  type StoredEvent,
  slotsById,
  isUnavailableError,
  sleep,
  UnavailableError,
  voidSegmentSlotsExcept,
  type WriteSideTables,
} from "../core/index.js";
import type { Committer } from "./committer.js";

/** What settling one segment number found and did. */
export interface Settled {
  readonly segment: number;
  /** `missing`: the key was empty and is now a void segment. */
  readonly found: "events" | "void" | "missing";
  /** Events the log now holds as the segment says, committed or waiting for a predecessor. */
  readonly adopted: number;
  /** Slots of the number closed: the segment does not hold their events. */
  readonly voided: number;
  /** Two events at one committed slot: the log and S3 disagree on history (reported, never overwritten). */
  readonly conflicts: number;
  /** The commit of the adopted events (resolves when they are committed; the sweeper does not wait). */
  readonly committed: Promise<Map<number, number>>;
}

/** What settling works with. */
export interface SegmentRecoveryDeps {
  readonly db: Kysely<WriteSideTables>;
  readonly objects: ObjectStore;
  readonly committer: Committer;
  readonly log: Logger;
  readonly now: () => Date;
}

/**
 * Makes the log hold exactly what a written segment's header says (W6): each event at its
 * `(aggregate, seq)` in place (or, with `fallback`, where `adoptStoredEvent` finds no place), the
 * streams' heads raised past them, the number's other slots closed, the number marked written.
 * Returns the adopted events as commit requests (with their places) and the slots closed; an event
 * at a slot the log committed to another is logged and counted, never overwritten.
 */
export async function adoptSegmentEvents(
  db: Kysely<WriteSideTables>,
  segment: number,
  bodyStart: number,
  events: ReadonlyArray<{ readonly entry: SegmentEntry; readonly json: string }>,
  log: Logger,
  fallback?: (db: Kysely<WriteSideTables>, event: StoredEvent) => Promise<{ logId: number } | { conflict: SlotRow } | undefined>,
): Promise<{ requests: CommitRequest[]; voided: number; conflicts: number }> {
  const requests: CommitRequest[] = [];
  const heads = new Map<string, { aggregateType: string; aggregateId: string; seq: number }>();
  let conflicts = 0;
  for (const { entry, json } of events) {
    const envelope = decodeEnvelope(json);
    const offset = bodyStart + entry.offset;
    const event: StoredEvent = {
      eventId: entry.eventId,
      eventType: envelope.eventType,
      aggregateType: entry.aggregateType,
      aggregateId: entry.aggregateId,
      seq: entry.seq,
      contentHash: envelope.contentHash,
      orderingKey: envelope.metadata["ordering_key"] ?? null,
      segment,
      offset,
      length: entry.length,
      chainHash: chainLink(envelope.previousHash, entry.eventId, entry.seq, envelope.contentHash),
    };
    const streamKey = `${entry.aggregateType}\u0000${entry.aggregateId}`;
    const head = heads.get(streamKey);
    if (head === undefined || head.seq < entry.seq) heads.set(streamKey, { aggregateType: entry.aggregateType, aggregateId: entry.aggregateId, seq: entry.seq });
    const adopted = (await adoptStoredEvent(db, event)) ?? (await fallback?.(db, event));
    if (adopted === undefined) continue;
    if ("conflict" in adopted) {
      conflicts += 1;
      log.error(
        { segment, aggregateType: entry.aggregateType, aggregateId: entry.aggregateId, seq: entry.seq, stored: entry.eventId, logged: adopted.conflict.eventId },
        "a segment in S3 holds another event at a slot the log has committed; left as the log has it",
      );
      continue;
    }
    requests.push({ logId: adopted.logId, written: { eventId: entry.eventId, offset, length: entry.length } });
  }
  // A segment found in S3 raises its streams' heads, so no later append reuses its slots.
  for (const h of heads.values()) await raiseHead(db, h.aggregateType, h.aggregateId, h.seq);
  const voided = await voidSegmentSlotsExcept(db, segment, requests.map((r) => r.logId));
  await markSegment(db, segment, "written");
  return { requests, voided, conflicts };
}

/** How often the start's LIST of the segments is tried before the start fails (about 7.5 s of waits). */
const START_LIST_ATTEMPTS = 5;

/** Settles segment numbers against S3; safe to run in every server at once. */
export class SegmentRecovery {
  constructor(private readonly deps: SegmentRecoveryDeps) {}

  /** Settles segment number `segment` (see the module comment); `reason` goes into a void segment. */
  async settle(segment: number, reason: string): Promise<Settled> {
    const { deps } = this;
    const key = segmentKey(segment);
    let body = await deps.objects.read(key);
    let found: Settled["found"] = "events";
    if (body === undefined) {
      const created = await deps.objects.createIfAbsent(key, encodeVoidSegment(segment, deps.now(), reason), SEGMENT_CONTENT_TYPE);
      if (created === "created") return this.closeNumber(segment, "missing");
      // A writer's PUT landed first.
      body = await deps.objects.read(key);
      if (body === undefined) throw new UnavailableError(`segment ${key} answered 412 but cannot be read`);
    }
    const { content, events } = decodeSegment(body);
    if (content.type === "void") return this.closeNumber(segment, "void");
    found = "events";
    const { requests, voided, conflicts } = await adoptSegmentEvents(deps.db, segment, content.bodyStart, events, deps.log);
    const committed = requests.length === 0 ? Promise.resolve(new Map<number, number>()) : deps.committer.commit(requests);
    // Whoever does not wait for it must not leave it unhandled.
    committed.catch(() => {});
    return { segment, found, adopted: requests.length, voided, conflicts, committed };
  }

  /**
   * Brings the log up to the segments S3 holds from `from` on (W6: PostgreSQL restored from an
   * older backup, so its counter is behind the bucket). Settles every one of them in order, moves
   * the counter past the last, and returns which of `ours` — slots a writer had put into one of
   * those numbers — S3 handed to other events.
   */
  async resyncFrom(from: number, ours: readonly SlotRow[]): Promise<ReadonlySet<number>> {
    const { deps } = this;
    const keys = await deps.objects.list(SEGMENT_PREFIX, from > 1 ? segmentKey(from - 1) : undefined);
    let last = 0;
    let events = 0;
    for (const key of keys) {
      const segment = segmentOfKey(key);
      if (segment === undefined || segment < from) continue;
      const settled = await this.settle(segment, "re-synchronised from the object store");
      events += settled.adopted;
      last = Math.max(last, segment);
    }
    if (last > 0) await advanceSegmentCounter(deps.db, last);
    const now = await slotsById(deps.db, ours.map((s) => s.logId));
    const handedOver = new Set(now.filter((row) => ours.find((s) => s.logId === row.logId)!.eventId !== row.eventId).map((r) => r.logId));
    deps.log.warn({ from, through: last, events, handedOver: handedOver.size }, "commit log re-synchronised from the segments in S3");
    return handedOver;
  }

  /**
   * At start: segments in S3 beyond the log's counter mean PostgreSQL is behind the bucket (W6);
   * they are brought in before anything new is written. One LIST when all is well.
   */
  async catchUp(): Promise<number> {
    const known = await lastSegment(this.deps.db);
    const beyond = await this.listAtStart(known > 0 ? segmentKey(known) : undefined);
    const numbers = beyond.map(segmentOfKey).filter((n): n is number => n !== undefined && n > known);
    if (numbers.length === 0) return 0;
    this.deps.log.warn({ known, inBucket: Math.max(...numbers), beyond: numbers.length }, "the object store holds segments the commit log does not know");
    await this.resyncFrom(Math.min(...numbers), []);
    return numbers.length;
  }

  /**
   * The start's LIST of the segments after `startAfter`, tried again on an outage: the bucket was
   * reachable a moment ago (the start checked it), so a LIST that times out or fails is more often
   * a slow or briefly unavailable S3 than a lasting fault, and failing the start for it costs a
   * whole restart. After {@link START_LIST_ATTEMPTS} attempts the start fails as before.
   */
  private async listAtStart(startAfter: string | undefined): Promise<string[]> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.deps.objects.list(SEGMENT_PREFIX, startAfter);
      } catch (e) {
        if (!isUnavailableError(e) || attempt >= START_LIST_ATTEMPTS) throw e;
        const waitMs = 500 * 2 ** (attempt - 1);
        this.deps.log.warn({ err: e, attempt, retryInMs: waitMs }, "listing the segments in S3 at start failed; trying again");
        await sleep(waitMs);
      }
    }
  }

  private async closeNumber(segment: number, found: "missing" | "void"): Promise<Settled> {
    await markSegment(this.deps.db, segment, "void");
    const voided = await voidSegmentSlotsExcept(this.deps.db, segment, []);
    return { segment, found, adopted: 0, voided, conflicts: 0, committed: Promise.resolve(new Map()) };
  }
}

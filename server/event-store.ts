/**
 * The write path and stream reads (docs/CONTRACT.md W1–W7): reserve slots in PostgreSQL, create the
 * event objects in S3 with a conditional create, then commit them through the group committer.
 */
import { create, type JsonObject } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Kysely } from "kysely";
import {
  adoptSlot,
  ConcurrencyError,
  readCommittedEvent,
  readSlot,
  encodeEnvelope,
  ENVELOPE_CONTENT_TYPE,
  type EventEnvelope,
  EventEnvelopeSchema,
  EventKind,
  type Expectation,
  adoptInPlace,
  type Logger,
  NotFoundError,
  type ObjectStore,
  raiseHead,
  reserveSlots,
  seqOfSlotKey,
  slotKey,
  type SlotRow,
  streamPrefix,
  streamSlots,
  streamState,
  type StreamState,
  UnavailableError,
  voidSlots,
  type WriteSideTables,
} from "../core/index.js";
import type { Committer } from "./committer.js";
import { EventCache } from "./event-cache.js";

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
}

/** A validated append. */
export interface AppendInput {
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly expectation: Expectation;
  readonly events: readonly ProposedEventInput[];
  readonly actor: string;
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
  readonly now?: () => Date;
  /** Decoded events kept in memory (default 10 000). */
  readonly cacheSize?: number;
  /** Called before each slot object is written (tests inject crashes and delays here). */
  readonly beforeWrite?: (slot: SlotRow) => Promise<void>;
  /** Called after each slot object is created and before it commits (tests inject crashes here). */
  readonly afterWrite?: (slot: SlotRow) => Promise<void>;
}

const READ_PARALLELISM = 16;

/** What a slot held when its conditional create answered 412 (or that it was created). */
type SlotFinding = { readonly kind: "ours" } | { readonly kind: "void" } | { readonly kind: "foreign"; readonly envelope: EventEnvelope };

/** Appends and reads event streams. */
export class EventStore {
  private readonly cache: EventCache;
  private readonly now: () => Date;

  constructor(private readonly deps: EventStoreDeps) {
    this.cache = new EventCache(deps.cacheSize ?? 10_000);
    this.now = deps.now ?? (() => new Date());
  }

  /** Appends events atomically; returns after every event is in S3 and committed (W1). */
  async append(input: AppendInput): Promise<AppendOutput> {
    const reservation = await reserveSlots(
      this.deps.db,
      input.aggregateType,
      input.aggregateId,
      input.expectation,
      input.events.map((e) => ({
        eventId: e.eventId,
        eventType: e.eventType,
        contentHash: e.contentHash,
        orderingKey: e.metadata["ordering_key"] ?? null,
      })),
    );
    const slots = reservation.slots;
    // A retry whose original is still pending completes it (the original writer may have died).
    const open = slots.map((slot, i) => ({ slot, event: input.events[i]! })).filter((p) => p.slot.state === "pending");
    let positions = new Map<number, number>();
    if (open.length > 0) {
      await this.writeSlots(input, open);
      positions = await this.deps.committer.commit(open.map((p) => p.slot.logId));
    }
    return {
      replayed: reservation.type === "existing",
      events: slots.map((slot) => ({
        eventId: slot.eventId,
        seq: slot.seq,
        position: slot.globalPosition ?? positions.get(slot.logId)!,
      })),
    };
  }

  /**
   * Step 2: conditional creates of every slot object, in parallel. A slot that already holds this
   * event counts as written; a void marker means the deadline passed (UNAVAILABLE); another event
   * means the allocation was lost (W6): re-synchronise from S3 and answer ABORTED.
   */
  private async writeSlots(
    input: AppendInput,
    pairs: ReadonlyArray<{ slot: SlotRow; event: ProposedEventInput }>,
  ): Promise<void> {
    const occurredAt = timestampFromDate(this.now());
    const outcomes = await Promise.allSettled(
      pairs.map(async ({ slot, event }): Promise<SlotFinding> => {
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
        });
        const key = slotKey(input.aggregateType, input.aggregateId, slot.seq);
        await this.deps.beforeWrite?.(slot);
        const created = await this.deps.objects.createIfAbsent(key, encodeEnvelope(envelope, event.dataJson), ENVELOPE_CONTENT_TYPE);
        if (created === "created") {
          this.cache.set(key, envelope);
          await this.deps.afterWrite?.(slot);
          return { kind: "ours" } as const;
        }
        const content = await readSlot(this.deps.objects, key);
        if (content === undefined) throw new UnavailableError(`slot ${key} answered 412 but cannot be read`);
        if (content.type === "void") return { kind: "void" } as const;
        return content.envelope.eventId === event.eventId ? ({ kind: "ours" } as const) : ({ kind: "foreign", envelope: content.envelope } as const);
      }),
    );
    const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === "rejected");
    if (failed !== undefined) throw failed.reason;
    const found = outcomes.map((o) => (o as PromiseFulfilledResult<SlotFinding>).value);
    if (found.every((f) => f.kind === "ours")) return;

    // The batch cannot commit as a whole (W7): close every slot of it that is ours or void, and
    // hand the slots that S3 says belong to other events over to those events (W6).
    const closed = pairs.filter((_, i) => found[i]!.kind !== "foreign").map((p) => p.slot.logId);
    await voidSlots(this.deps.db, closed);
    const foreign = pairs.flatMap((p, i) => {
      const f = found[i]!;
      return f.kind === "foreign" ? [{ slot: p.slot, envelope: f.envelope }] : [];
    });
    if (foreign.length === 0) {
      throw new UnavailableError("the write reached the store after its slot was closed; retry the append");
    }
    const first = pairs[0]!.slot.seq;
    const head = await this.takeOver(input.aggregateType, input.aggregateId, foreign);
    this.deps.log.warn(
      { aggregateType: input.aggregateType, aggregateId: input.aggregateId, reservedFrom: first, head },
      "sequence allocation was behind the object store; head re-synchronised",
    );
    throw new ConcurrencyError(input.aggregateType, input.aggregateId, first - 1, head);
  }

  /**
   * Hands reserved slots that S3 says hold other events over to those events, in place, then
   * re-synchronises the stream (W6). Adopting in place matters: were the reservations removed first
   * and the events adopted later, a successor appended meanwhile would commit before them and reach
   * Kafka ahead of them (R2) — the chaos harness found exactly that. Returns the new head.
   */
  async takeOver(aggregateType: string, aggregateId: string, foreign: ReadonlyArray<{ slot: SlotRow; envelope: EventEnvelope }>): Promise<number> {
    const adopted: number[] = [];
    for (const { slot, envelope } of foreign) {
      const orderingKey = envelope.metadata["ordering_key"] ?? null;
      if (await adoptInPlace(this.deps.db, slot.logId, { eventId: envelope.eventId, eventType: envelope.eventType, contentHash: envelope.contentHash, orderingKey })) {
        adopted.push(slot.logId);
      }
    }
    return this.resync(aggregateType, aggregateId, adopted);
  }

  /**
   * Re-synchronises a stream from S3 (W6): slots found in S3 that the log lacks are adopted (events
   * are committed and so published, void markers recorded) and the allocation head is raised;
   * `adopted` are slots a caller already adopted in place, committed with the others.
   */
  async resync(aggregateType: string, aggregateId: string, alsoCommit: readonly number[] = []): Promise<number> {
    const keys = await this.deps.objects.list(streamPrefix(aggregateType, aggregateId));
    const known = new Set((await streamSlots(this.deps.db, aggregateType, aggregateId, 0, 1_000_000)).map((s) => s.seq));
    let max = 0;
    const adopted: number[] = [...alsoCommit];
    for (const key of keys) {
      const seq = seqOfSlotKey(key);
      if (seq === undefined) continue;
      max = Math.max(max, seq);
      if (known.has(seq)) continue;
      const content = await readSlot(this.deps.objects, key);
      if (content === undefined) continue;
      const base = { aggregateType, aggregateId, seq, batchFirstSeq: seq, batchLastSeq: seq, orderingKey: null };
      try {
        if (content.type === "void") {
          await adoptSlot(this.deps.db, { ...base, eventId: content.marker.eventId, eventType: "", contentHash: "" }, "void");
        } else {
          const e = content.envelope;
          const logId = await adoptSlot(
            this.deps.db,
            { ...base, eventId: e.eventId, eventType: e.eventType, contentHash: e.contentHash, orderingKey: e.metadata["ordering_key"] ?? null },
            "pending",
          );
          if (logId !== undefined) adopted.push(logId);
        }
      } catch (e) {
        this.deps.log.error({ err: e, key }, "could not adopt a slot found in the object store");
      }
    }
    const head = await raiseHead(this.deps.db, aggregateType, aggregateId, max);
    if (adopted.length > 0) await this.deps.committer.commit(adopted);
    return head;
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
   * skipped. Reads only the stream's own keys (W5).
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
      for (let i = 0; i < ready.length && remaining > 0; i += READ_PARALLELISM) {
        const chunk = ready.slice(i, Math.min(i + READ_PARALLELISM, i + remaining));
        const envelopes = await Promise.all(chunk.map((row) => this.load(row)));
        for (const envelope of envelopes) {
          remaining -= 1;
          yield envelope;
        }
      }
      if (blocked || rows.length < pageSize || remaining <= 0) return;
      next = rows[rows.length - 1]!.seq + 1;
    }
  }

  /** One committed event, from the cache or S3, with its global position. */
  async load(row: SlotRow): Promise<EventEnvelope> {
    const key = slotKey(row.aggregateType, row.aggregateId, row.seq);
    let envelope = this.cache.get(key);
    if (envelope === undefined) {
      envelope = (await readCommittedEvent(this.deps.objects, row)).envelope;
      this.cache.set(key, envelope);
    }
    // A shallow copy: the cached envelope is shared and never changes, and protobuf-es's clone
    // would rebuild `data` by assignment (losing a `__proto__` key).
    return { ...envelope, globalPosition: BigInt(row.globalPosition ?? 0) };
  }
}

/**
 * Folds an instance stream from its latest usable snapshot (docs/STORAGE.md "Snapshots"): one query
 * for the head, the snapshot, the slots after it and a command's event id; the tail's events; the
 * pure fold. Commands, STRONG reads and `tidemark rebuild snapshots` share it.
 */
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { Kysely } from "kysely";
import {
  checkSnapshot,
  decodeInstanceState,
  DEFAULT_SNAPSHOT_EVERY,
  encodeInstanceState,
  type EventEnvelope,
  foldInstanceFrom,
  INSTANCE_AGGREGATE_TYPE,
  INSTANCE_FOLD_VERSION,
  type InstanceEvent,
  type InstanceSnapshot,
  type InstanceState,
  type Logger,
  readStreamStart,
  saveSnapshot,
  type SlotRow,
  type SnapshotRejection,
  type WriteSideTables,
  Upcasters,
} from "../../core/index.js";

/** How instance folds use snapshots. */
export interface SnapshotSettings {
  /**
   * A fold that applied at least this many events stores a snapshot of the state it reached
   * (TIDEMARK_SNAPSHOT_EVERY); 0 turns snapshots off (every fold starts at seq 1).
   */
  readonly every: number;
  /** Told when a stored snapshot is not used (the server counts them in a metric). */
  readonly onRejected?: (aggregateId: string, reason: SnapshotRejection) => void;
}

/** What an {@link InstanceFolder} needs. */
export interface InstanceFolderDeps {
  readonly db: Kysely<WriteSideTables>;
  /** The committed events of `rows`, in their order (the event store's cache, or a reader of S3). */
  readonly load: (rows: readonly SlotRow[]) => Promise<EventEnvelope[]>;
  readonly snapshots?: Partial<SnapshotSettings>;
  /**
   * The server's upcasters, applied to each event before the fold (E1). A change to them that
   * changes what the fold produces must come with a new INSTANCE_FOLD_VERSION (W9).
   */
  readonly upcasters?: Upcasters;
  readonly log?: Logger;
}

/** A folded instance stream. */
export interface FoldedInstance {
  readonly state: InstanceState;
  /** The resolved head: the version reads show and update and delete must name. */
  readonly version: number;
  /** The live slot already holding the event id asked for. */
  readonly existing: SlotRow | undefined;
  /** Events folded on top of the starting point (the whole stream when no snapshot was used). */
  readonly folded: number;
  /** The seq of the snapshot the fold started from (0: from the first event). */
  readonly from: number;
}

/** Folds instance streams, reading and storing their snapshots. */
export class InstanceFolder {
  private readonly every: number;

  constructor(private readonly deps: InstanceFolderDeps) {
    this.every = deps.snapshots?.every ?? DEFAULT_SNAPSHOT_EVERY;
  }

  /**
   * Folds a stream from its latest usable snapshot. A snapshot that is missing, of another fold
   * version, ahead of the head or corrupt (bad JSON, wrong checksum) means a fold from seq 1 — and a
   * fresh snapshot in its place — never another answer. `fromScratch` ignores any snapshot.
   */
  async fold(aggregateId: string, eventId?: string, fromScratch = false): Promise<FoldedInstance> {
    // Head, snapshot and slots in one statement: every slot up to the resolved head is committed
    // or void, so the events read include every event up to it and the version never runs ahead of
    // the state folded. (Read as two queries, head after events, a create committed in between gave
    // "no instance yet" at version 1, and a second create landed at seq 2: found by the chaos harness.)
    const useSnapshots = this.every > 0;
    const lookup = eventId === undefined ? {} : { eventId };
    let start = await readStreamStart(this.deps.db, INSTANCE_AGGREGATE_TYPE, aggregateId, useSnapshots && !fromScratch ? { ...lookup, foldVersion: INSTANCE_FOLD_VERSION } : lookup);
    let snapshot: InstanceSnapshot | undefined;
    let rejected: SnapshotRejection | undefined;
    if (start.snapshot !== undefined) {
      rejected = checkSnapshot(start.snapshot, INSTANCE_FOLD_VERSION, start.resolved);
      const state = rejected === undefined ? decodeInstanceState(start.snapshot.state) : undefined;
      if (state !== undefined) snapshot = { seq: start.snapshot.seq, state };
      else {
        rejected ??= "unreadable";
        this.deps.snapshots?.onRejected?.(aggregateId, rejected);
        // The slots read start after the unusable snapshot: read the stream from its first slot.
        start = await readStreamStart(this.deps.db, INSTANCE_AGGREGATE_TYPE, aggregateId, lookup);
      }
    }
    const upcasters = this.deps.upcasters ?? Upcasters.NONE;
    // Upcast before the fold, one event at a time: the fold sees every event in its latest shape (E1).
    const events: InstanceEvent[] = (await this.deps.load(start.committed)).map((stored) => upcasters.upcastEnvelope(stored)).map((envelope) => ({
      eventType: envelope.eventType,
      seq: Number(envelope.sequenceNumber),
      globalPosition: Number(envelope.globalPosition),
      occurredAt: toDate(envelope.occurredAt),
      data: envelope.data ?? {},
    }));
    const state = foldInstanceFrom(snapshot, events);
    const last = events.at(-1)?.seq ?? snapshot?.seq ?? 0;
    // An unusable snapshot is replaced by the state just folded, whatever its seq.
    if (useSnapshots && state.exists && (events.length >= this.every || rejected !== undefined)) {
      await this.store(aggregateId, last, state, rejected !== undefined || fromScratch);
    }
    return { state, version: Math.max(start.resolved, last), existing: start.existing, folded: events.length, from: snapshot?.seq ?? 0 };
  }

  /** Stores a snapshot; a failure only costs later folds their head start (snapshots are derived data). */
  private async store(aggregateId: string, seq: number, state: InstanceState, replace: boolean): Promise<void> {
    try {
      await saveSnapshot(this.deps.db, { aggregateType: INSTANCE_AGGREGATE_TYPE, aggregateId, foldVersion: INSTANCE_FOLD_VERSION, seq, state: encodeInstanceState(state) }, replace);
    } catch (e) {
      this.deps.log?.warn({ err: e, aggregateId, seq }, "storing a snapshot failed; folds go on from the previous one");
    }
  }
}

function toDate(ts: Timestamp | undefined): Date {
  return ts === undefined ? new Date(0) : timestampDate(ts);
}

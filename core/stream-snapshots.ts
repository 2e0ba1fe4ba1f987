/**
 * Repository of stream snapshots (`snapshots`, docs/STORAGE.md "Snapshots") and the one query a
 * fold starts with: the stream's head, its latest snapshot of the reader's fold version, the slots
 * after that snapshot and, for a command, the live slot already holding its event id. One
 * statement, so one round trip and one MVCC snapshot: the head and the slots read agree.
 */
import { createHash } from "node:crypto";
import { sql, type Kysely, type Transaction } from "kysely";
import type { WriteSideTables } from "./db/schema.js";
import { toSlotRow, type SlotRecord, type SlotRow } from "./event-log.js";

type Db = Kysely<WriteSideTables> | Transaction<WriteSideTables>;

/** Default of TIDEMARK_SNAPSHOT_EVERY: a fold that applied this many events stores a snapshot. */
export const DEFAULT_SNAPSHOT_EVERY = 100;

/** A snapshot row as stored: the state as JSON text and its checksum, not yet trusted. */
export interface StoredSnapshot {
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly foldVersion: number;
  readonly seq: number;
  readonly state: string;
  readonly checksum: string;
}

/**
 * The checksum a snapshot row carries: SHA-256 over the aggregate, the fold version, the seq and
 * the state text, so a row edited, truncated or copied to another stream does not verify.
 */
export function snapshotChecksum(s: Omit<StoredSnapshot, "checksum">): string {
  return createHash("sha256").update(`${s.aggregateType}\u0000${s.aggregateId}\u0000${s.foldVersion}\u0000${s.seq}\u0000${s.state}`).digest("hex");
}

/**
 * Why a stored snapshot is not used (the fold then starts from the first event): another fold
 * version, a seq beyond the resolved head, a checksum that does not match, or a state its fold
 * cannot read.
 */
export type SnapshotRejection = "fold-version" | "ahead-of-head" | "checksum" | "unreadable";

/**
 * Whether a stored snapshot may start a fold at a resolved head of `resolved`: of `foldVersion`,
 * not beyond the head (a database restored to an older state), and with a matching checksum. A
 * snapshot behind the head is fine: the events after it are folded on top.
 */
export function checkSnapshot(s: StoredSnapshot, foldVersion: number, resolved: number): SnapshotRejection | undefined {
  if (s.foldVersion !== foldVersion) return "fold-version";
  if (s.seq > resolved) return "ahead-of-head";
  if (snapshotChecksum(s) !== s.checksum) return "checksum";
  return undefined;
}

/** What a fold starts from: {@link readStreamStart}. */
export interface StreamStart {
  /** The allocation head; undefined when the stream was never reserved. */
  readonly allocated: number | undefined;
  /** The resolved head: every slot up to it is committed or void (0 without a stream). */
  readonly resolved: number;
  /** The latest snapshot of the fold version asked for, unchecked; undefined when there is none. */
  readonly snapshot: StoredSnapshot | undefined;
  /** The committed slots after the snapshot (after seq 0 without one) up to `resolved`, in seq order. */
  readonly committed: readonly SlotRow[];
  /** The live slot holding the event id asked for, if any. */
  readonly existing: SlotRow | undefined;
}

/** Options of {@link readStreamStart}. */
export interface StreamStartOptions {
  /** The fold's version: only a snapshot of this version is read (default: none is read). */
  readonly foldVersion?: number;
  /** Look this event id up among the live slots (a command's derived id). */
  readonly eventId?: string;
}

const SLOT_SELECT = sql.raw(
  "log_id, event_id, aggregate_type, aggregate_id, seq, event_type, content_hash, ordering_key, state, global_position, batch_first_seq, batch_last_seq, committed_at, segment, segment_offset, segment_length, chain_hash",
);

/**
 * One round trip: the head, the snapshot (when `foldVersion` is given), every slot after it, and the
 * slot of `eventId`. Slots after the first pending one are left out, as every stream read does.
 */
export async function readStreamStart(db: Db, aggregateType: string, aggregateId: string, options: StreamStartOptions = {}): Promise<StreamStart> {
  const version = options.foldVersion ?? null;
  const { rows } = await sql<{
    head: number | null;
    fold_version: number | null;
    snapshot_seq: number | null;
    state: string | null;
    checksum: string | null;
    tail: SlotJson[];
    existing: SlotJson | null;
  }>`
    select
      (select head from stream_heads where aggregate_type = ${aggregateType} and aggregate_id = ${aggregateId}) as head,
      s.fold_version, s.seq as snapshot_seq, s.state, s.checksum,
      (select coalesce(json_agg(e order by e.seq), '[]'::json) from (
         select ${SLOT_SELECT} from event_log
         where aggregate_type = ${aggregateType} and aggregate_id = ${aggregateId} and seq > coalesce(s.seq, 0)) e) as tail,
      (select row_to_json(p) from (
         select ${SLOT_SELECT} from event_log where event_id = ${options.eventId ?? null} and state <> 'void') p) as existing
    from (select 1) as one
    left join snapshots s on s.aggregate_type = ${aggregateType} and s.aggregate_id = ${aggregateId} and s.fold_version = ${version}::integer`.execute(db);
  const row = rows[0]!;
  const allocated = row.head ?? undefined;
  const tail = row.tail.map(fromJson);
  const firstPending = tail.find((s) => s.state === "pending");
  const resolved = allocated === undefined ? 0 : firstPending === undefined ? allocated : firstPending.seq - 1;
  const snapshot: StoredSnapshot | undefined =
    row.snapshot_seq === null
      ? undefined
      : { aggregateType, aggregateId, foldVersion: row.fold_version!, seq: Number(row.snapshot_seq), state: row.state!, checksum: row.checksum! };
  return {
    allocated,
    resolved,
    snapshot,
    committed: tail.filter((s) => s.state === "committed" && (firstPending === undefined || s.seq < firstPending.seq)),
    existing: row.existing === null ? undefined : fromJson(row.existing),
  };
}

/**
 * Stores a snapshot unless the stream already has one at least as recent of the same fold version
 * (two folds racing keep the later one). A snapshot of another fold version is replaced, and with
 * `replace` any stored one is (the caller found it unusable: corrupt, or ahead of the head).
 */
export async function saveSnapshot(db: Db, snapshot: Omit<StoredSnapshot, "checksum">, replace = false): Promise<void> {
  await db
    .insertInto("snapshots")
    .values({
      aggregate_type: snapshot.aggregateType,
      aggregate_id: snapshot.aggregateId,
      fold_version: snapshot.foldVersion,
      seq: snapshot.seq,
      state: snapshot.state,
      checksum: snapshotChecksum(snapshot),
    })
    .onConflict((oc) =>
      oc
        .columns(["aggregate_type", "aggregate_id"])
        .doUpdateSet({
          fold_version: (eb) => eb.ref("excluded.fold_version"),
          seq: (eb) => eb.ref("excluded.seq"),
          state: (eb) => eb.ref("excluded.state"),
          checksum: (eb) => eb.ref("excluded.checksum"),
          taken_at: sql`now()`,
        })
        .where(sql<boolean>`${replace} or snapshots.seq < excluded.seq or snapshots.fold_version <> excluded.fold_version`),
    )
    .execute();
}

/** Deletes every snapshot of one aggregate type; returns how many. */
export async function deleteSnapshots(db: Db, aggregateType: string): Promise<number> {
  const result = await db.deleteFrom("snapshots").where("aggregate_type", "=", aggregateType).executeTakeFirst();
  return Number(result.numDeletedRows);
}

/** A slot row as json_agg writes it: timestamps as strings. */
type SlotJson = Omit<SlotRecord, "committed_at"> & { committed_at: string | null };

function fromJson(r: SlotJson): SlotRow {
  return toSlotRow({ ...r, seq: Number(r.seq), committed_at: r.committed_at === null ? null : new Date(r.committed_at) });
}

/**
 * `tidemark rebuild snapshots` (docs/OPERATIONS.md): drops every instance snapshot — corrupt ones,
 * those of an older fold version — and takes a fresh one of each instance stream of at least
 * TIDEMARK_SNAPSHOT_EVERY events, folded from its first event. Safe beside a running server
 * (snapshots are derived data: a fold that finds none starts from seq 1) and safe to repeat, so a
 * stopped rebuild is simply run again.
 */
import type { Kysely } from "kysely";
import {
  CommittedEventReader,
  deleteSnapshots,
  INSTANCE_AGGREGATE_TYPE,
  listStreams,
  type Logger,
  type ObjectStore,
  UnreadableEventError,
  type WriteSideTables,
  type Upcasters,
} from "../../core/index.js";
import { InstanceFolder } from "./instance-folder.js";

/** Options of {@link rebuildSnapshots}. */
export interface SnapshotRebuildOptions {
  readonly db: Kysely<WriteSideTables>;
  readonly objects: ObjectStore;
  /** TIDEMARK_SNAPSHOT_EVERY: streams with fewer events get no snapshot; 0 only drops them all. */
  readonly every: number;
  /** Streams listed per query (default 500). */
  readonly batchSize?: number;
  /** Called after every batch of streams. */
  readonly onProgress?: (progress: SnapshotRebuildResult) => void;
  /** Aborting stops after the current stream. */
  readonly signal?: AbortSignal;
  /** The server's upcasters (TIDEMARK_UPCASTERS): the snapshots fold what the servers fold (E1, W9). */
  readonly upcasters?: Upcasters;
  readonly log?: Logger;
}

/** What a rebuild did. */
export interface SnapshotRebuildResult {
  /** Snapshots dropped before the rebuild. */
  readonly dropped: number;
  /** Instance streams looked at. */
  readonly streams: number;
  /** Snapshots taken. */
  readonly taken: number;
}

/** Drops every instance snapshot, then takes one of each stream long enough to deserve one. */
export async function rebuildSnapshots(options: SnapshotRebuildOptions): Promise<SnapshotRebuildResult> {
  const dropped = await deleteSnapshots(options.db, INSTANCE_AGGREGATE_TYPE);
  let streams = 0;
  let taken = 0;
  if (options.every === 0) return { dropped, streams, taken };
  const reader = new CommittedEventReader(options.objects);
  const folder = new InstanceFolder({
    db: options.db,
    load: async (rows) =>
      (await reader.read(rows)).map((result, i) => {
        if (result instanceof UnreadableEventError) throw result;
        // Stored envelopes carry position 0: the commit log assigns it (as every reader fills in).
        return { ...result.envelope, globalPosition: BigInt(rows[i]!.globalPosition ?? 0) };
      }),
    snapshots: { every: options.every },
    ...(options.upcasters === undefined ? {} : { upcasters: options.upcasters }),
    ...(options.log === undefined ? {} : { log: options.log }),
  });
  const batchSize = options.batchSize ?? 500;
  for (let after = ""; ; ) {
    const ids = await listStreams(options.db, INSTANCE_AGGREGATE_TYPE, "", after, batchSize);
    for (const id of ids) {
      options.signal?.throwIfAborted();
      const folded = await folder.fold(id, undefined, true);
      streams += 1;
      if (folded.state.exists && folded.folded >= options.every) taken += 1;
    }
    options.onProgress?.({ dropped, streams, taken });
    if (ids.length < batchSize) return { dropped, streams, taken };
    after = ids[ids.length - 1]!;
  }
}

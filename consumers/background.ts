/**
 * Background loops of a consumer process: housekeeping of the registry (docs/CONTRACT.md C7:
 * pruning, and folding its kept counts) and the projection's position tracker (read-your-writes).
 * Both survive outages by trying again later.
 */
import type { Kysely } from "kysely";
import { advancePosition, INSTANCES_PROJECTION, type ConsumerDatabase, type Logger } from "../core/index.js";
import type { ConsumerMetrics } from "./metrics.js";
import { foldRegistryCounts, pruneDone } from "./registry.js";

/** A running background loop. */
export interface BackgroundLoop {
  /** Runs the loop's work now (coalesced with a run in progress). */
  nudge(): void;
  stop(): Promise<void>;
}

/** Runs `work` every `intervalMs`, and soon after a nudge (at most one run at a time). */
function loop(work: (signal: AbortSignal) => Promise<void>, intervalMs: number, nudgeDelayMs: number, log: Logger, what: string): BackgroundLoop {
  const stop = new AbortController();
  let running: Promise<void> | undefined;
  let again = false;
  let timer: NodeJS.Timeout | undefined;
  let failures = 0;
  const schedule = (ms: number) => {
    if (stop.signal.aborted) return;
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(run, ms);
    timer.unref();
  };
  const run = () => {
    timer = undefined;
    if (running !== undefined) {
      again = true;
      return;
    }
    running = work(stop.signal)
      .then(
        () => {
          failures = 0;
        },
        (e: unknown) => {
          if (failures++ % 20 === 0) log.warn({ err: e }, `${what} failed; will retry`);
        },
      )
      .finally(() => {
        running = undefined;
        if (again) {
          again = false;
          schedule(nudgeDelayMs);
        } else schedule(intervalMs);
      });
  };
  schedule(0);
  return {
    nudge() {
      if (running !== undefined) again = true;
      else if (timer !== undefined) schedule(nudgeDelayMs);
    },
    async stop() {
      stop.abort();
      if (timer !== undefined) clearTimeout(timer);
      await running;
    },
  };
}

/** Options of {@link startHousekeeping}. */
export interface HousekeepingOptions {
  readonly db: Kysely<ConsumerDatabase>;
  readonly intervalMs: number;
  readonly retentionMs: number;
  readonly batchSize: number;
  readonly metrics: ConsumerMetrics;
  readonly log: Logger;
}

/** How often housekeeping folds the registry's count deltas into its counts (ListHandlers sums both). */
export const COUNT_FOLD_INTERVAL_MS = 10_000;

/**
 * Prunes old `done` rows now and every `intervalMs`, and folds the registry's count deltas now and
 * every {@link COUNT_FOLD_INTERVAL_MS} (consumers/registry.ts foldRegistryCounts).
 */
export function startHousekeeping(options: HousekeepingOptions): BackgroundLoop {
  const prune = loop(
    async (signal) => {
      const deleted = await pruneDone(options.db, { retentionMs: options.retentionMs, batchSize: options.batchSize, signal });
      if (deleted > 0) {
        options.metrics.pruned.inc(deleted);
        options.log.info({ deleted, retentionMs: options.retentionMs }, "pruned done registry rows");
      }
    },
    options.intervalMs,
    options.intervalMs,
    options.log,
    "registry housekeeping",
  );
  const fold = loop(
    async () => {
      await foldRegistryCounts(options.db);
    },
    COUNT_FOLD_INTERVAL_MS,
    COUNT_FOLD_INTERVAL_MS,
    options.log,
    "registry count fold",
  );
  return {
    nudge() {
      prune.nudge();
      fold.nudge();
    },
    async stop() {
      await Promise.all([prune.stop(), fold.stop()]);
    },
  };
}

/** Options of {@link startPositionTracker}. */
export interface PositionTrackerOptions {
  readonly db: Kysely<ConsumerDatabase>;
  readonly metrics: ConsumerMetrics;
  readonly log: Logger;
  /** Polling interval when nothing nudges (default 1 s). */
  readonly intervalMs?: number;
}

/** Keeps `projection_positions` current: after every nudge (an applied event) and every interval. */
export function startPositionTracker(options: PositionTrackerOptions): BackgroundLoop {
  return loop(
    async () => {
      const position = await advancePosition(options.db);
      options.metrics.projectionPosition.set({ projection: INSTANCES_PROJECTION }, position);
    },
    options.intervalMs ?? 1000,
    10,
    options.log,
    "projection position tracker",
  );
}

/**
 * Resolves writes that never finished (docs/CONTRACT.md W5, docs/STORAGE.md): after the write
 * deadline a segment number still pending is settled against S3 — found and committed, or closed
 * with a void segment written by the same conditional create, so a late writer fails instead of
 * landing; reservations no flush ever took are closed; written slots whose commit never ran are
 * committed. A call's slots share one segment, so a call resolves as a unit (W7).
 */
import type { Kysely } from "kysely";
import { expiredSegments, expiredWrittenSlots, type Logger, voidUnflushedSlots, type WriteSideTables } from "../core/index.js";
import type { Committer } from "./committer.js";
import type { EventStore } from "./event-store.js";

/** Settings and collaborators of the sweeper. */
export interface SweeperDeps {
  readonly db: Kysely<WriteSideTables>;
  readonly committer: Committer;
  readonly store: EventStore;
  readonly log: Logger;
  /** A reservation older than this (database clock) is resolved (default 25 000 ms). */
  readonly deadlineMs: number;
  /** Time between sweeps (default 2 000 ms). */
  readonly intervalMs: number;
}

/** What one sweep did. */
export interface SweepResult {
  /** Events found in S3 and committed (or handed to the committer). */
  committed: number;
  /** Slots closed: their segment number was voided, or no flush ever took them. */
  voided: number;
  /** Events a segment holds at a slot the log committed to another: reported, never overwritten. */
  conflicts: number;
}

/** Periodically resolves expired reservations; safe to run in every server at once. */
export class Sweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  private stopped = false;
  /** Totals since start, for metrics. */
  readonly totals: SweepResult = { committed: 0, voided: 0, conflicts: 0 };

  constructor(private readonly deps: SweeperDeps) {}

  start(): void {
    this.stopped = false;
    this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    await this.running;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.sweepOnce()
        .catch((e: unknown) => this.deps.log.warn({ err: e }, "sweep failed; will retry"))
        .finally(() => this.schedule());
    }, this.deps.intervalMs);
    this.timer.unref();
  }

  /** Resolves every currently expired write. */
  async sweepOnce(): Promise<SweepResult> {
    const { deps } = this;
    const result: SweepResult = { committed: 0, voided: 0, conflicts: 0 };
    for (const segment of await expiredSegments(deps.db, deps.deadlineMs, 100)) {
      const settled = await deps.store.recovery.settle(segment, "write deadline passed");
      // Not awaited: a commit may wait for a predecessor that another sweep resolves.
      settled.committed.catch((e: unknown) => deps.log.warn({ err: e, segment }, "sweeper commit deferred"));
      result.committed += settled.adopted;
      result.voided += settled.voided;
      result.conflicts += settled.conflicts;
      deps.log.warn({ segment, found: settled.found, adopted: settled.adopted, voided: settled.voided }, "abandoned segment write resolved");
    }
    const unflushed = await voidUnflushedSlots(deps.db, deps.deadlineMs);
    if (unflushed > 0) deps.log.warn({ slots: unflushed }, "reservations no segment took were closed");
    result.voided += unflushed;
    const written = await expiredWrittenSlots(deps.db, deps.deadlineMs, 500);
    if (written.length > 0) {
      deps.committer.commit(written.map((slot) => ({ logId: slot.logId }))).catch((e: unknown) => deps.log.warn({ err: e, slots: written.length }, "sweeper commit deferred"));
      result.committed += written.length;
    }
    this.totals.committed += result.committed;
    this.totals.voided += result.voided;
    this.totals.conflicts += result.conflicts;
    return result;
  }
}

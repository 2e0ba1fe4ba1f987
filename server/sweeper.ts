/**
 * Resolves reservations whose writer never finished (docs/CONTRACT.md W5): after the write deadline a
 * pending slot is either found in S3 and committed, or closed with a void marker written by the
 * same conditional create, so a late writer fails instead of landing. Batches resolve as a unit.
 */
import type { Kysely } from "kysely";
import {
  batchSlots,
  encodeVoidMarker,
  type EventEnvelope,
  expiredPendingSlots,
  type Logger,
  type ObjectStore,
  readSlot,
  slotKey,
  type SlotRow,
  VOID_CONTENT_TYPE,
  voidMarker,
  voidSlots,
  type WriteSideTables,
} from "../core/index.js";
import type { Committer } from "./committer.js";
import type { EventStore } from "./event-store.js";

/** Settings and collaborators of the sweeper. */
export interface SweeperDeps {
  readonly db: Kysely<WriteSideTables>;
  readonly objects: ObjectStore;
  readonly committer: Committer;
  readonly store: EventStore;
  readonly log: Logger;
  /** A reservation older than this (database clock) is resolved (default 25 000 ms). */
  readonly deadlineMs: number;
  /** Time between sweeps (default 2 000 ms). */
  readonly intervalMs: number;
  readonly now?: () => Date;
}

/** What one sweep did. */
export interface SweepResult {
  committed: number;
  voided: number;
  forgotten: number;
}

type SlotFinding = { readonly kind: "written" } | { readonly kind: "void" } | { readonly kind: "foreign"; readonly envelope: EventEnvelope };

/** Periodically resolves expired reservations; safe to run in every server at once. */
export class Sweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  private stopped = false;
  /** Totals since start, for metrics. */
  readonly totals: SweepResult = { committed: 0, voided: 0, forgotten: 0 };

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

  /** Resolves every currently expired reservation. */
  async sweepOnce(): Promise<SweepResult> {
    const result: SweepResult = { committed: 0, voided: 0, forgotten: 0 };
    const expired = await expiredPendingSlots(this.deps.db, this.deps.deadlineMs, 500);
    const seen = new Set<string>();
    for (const slot of expired) {
      const batchKey = `${slot.aggregateType}\u0000${slot.aggregateId}\u0000${slot.batchFirstSeq}`;
      if (seen.has(batchKey)) continue;
      seen.add(batchKey);
      const batch = (await batchSlots(this.deps.db, slot)).filter((s) => s.state === "pending");
      if (batch.length === 0) continue;
      const findings = await Promise.all(batch.map((s) => this.inspect(s)));
      if (findings.every((f) => f.kind === "written")) {
        // Fire and forget: the commit may wait for a predecessor that another sweep resolves.
        this.deps.committer.commit(batch.map((s) => s.logId)).catch((e: unknown) =>
          this.deps.log.warn({ err: e, aggregateId: slot.aggregateId }, "sweeper commit deferred"),
        );
        result.committed += batch.length;
        continue;
      }
      const foreign = batch.flatMap((s, i) => {
        const f = findings[i]!;
        return f.kind === "foreign" ? [{ slot: s, envelope: f.envelope }] : [];
      });
      const closed = batch.filter((_, i) => findings[i]!.kind !== "foreign");
      result.voided += (await voidSlots(this.deps.db, closed.map((s) => s.logId))).length;
      // Handed over in place to the events S3 holds there (W6): see EventStore.takeOver.
      result.forgotten += foreign.length;
      if (foreign.length > 0) await this.deps.store.takeOver(slot.aggregateType, slot.aggregateId, foreign);
      this.deps.log.warn(
        { aggregateType: slot.aggregateType, aggregateId: slot.aggregateId, seqs: batch.map((s) => s.seq), findings: findings.map((f) => f.kind) },
        "abandoned reservation resolved",
      );
    }
    this.totals.committed += result.committed;
    this.totals.voided += result.voided;
    this.totals.forgotten += result.forgotten;
    return result;
  }

  /** What the slot holds; an empty slot is closed with a void marker first. */
  private async inspect(slot: SlotRow): Promise<SlotFinding> {
    const key = slotKey(slot.aggregateType, slot.aggregateId, slot.seq);
    let content = await readSlot(this.deps.objects, key);
    if (content === undefined) {
      const marker = voidMarker({
        aggregateType: slot.aggregateType,
        aggregateId: slot.aggregateId,
        seq: slot.seq,
        eventId: slot.eventId,
        reason: "write deadline passed",
        now: (this.deps.now ?? (() => new Date()))(),
      });
      if ((await this.deps.objects.createIfAbsent(key, encodeVoidMarker(marker), VOID_CONTENT_TYPE)) === "created") {
        return { kind: "void" };
      }
      content = await readSlot(this.deps.objects, key);
      if (content === undefined) throw new Error(`slot ${key} answered 412 but cannot be read`);
    }
    if (content.type === "void") return { kind: "void" };
    return content.envelope.eventId === slot.eventId ? { kind: "written" } : { kind: "foreign", envelope: content.envelope };
  }
}

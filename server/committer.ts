/**
 * Group commit (the commit step of an append, docs/ARCHITECTURE.md): slots written to S3 queue here and commit together in one
 * PostgreSQL transaction, so the serialised commit counter costs one lock hold per batch, not per
 * event. Slots whose stream predecessor is still pending wait and are retried.
 */
import type { Kysely } from "kysely";
import { activeContext, type CommitRequest, commitSlots, inBatchSpan, type Logger, type TraceContext, UnavailableError, type WriteSideTables } from "../core/index.js";

interface Waiter {
  readonly requests: readonly CommitRequest[];
  readonly positions: Map<number, number>;
  readonly expiresAt: number;
  /** The caller's trace context (a segment flush's span, tracing on). */
  readonly trace: TraceContext | undefined;
  /** Set once a commit transaction deferred it behind a stream predecessor. */
  deferred: boolean;
  resolve(positions: Map<number, number>): void;
  reject(error: Error): void;
}

/** Settings of the committer. */
export interface CommitterOptions {
  /** Most slots in one commit transaction (default 500). */
  readonly maxBatch?: number;
  /** How often slots that wait for a predecessor are retried, in ms (default 25). */
  readonly retryIntervalMs?: number;
  /** How long a slot may wait for its predecessor before the caller gets UNAVAILABLE (default 70 000). */
  readonly maxWaitMs?: number;
}

/** Commits written slots in groups; one per process. */
export class Committer {
  private queue: Waiter[] = [];
  private waiting: Waiter[] = [];
  private running = false;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly maxBatch: number;
  private readonly retryIntervalMs: number;
  private readonly maxWaitMs: number;
  /** Commit transactions run so far, and slots they committed (for metrics and tests). */
  readonly stats = { transactions: 0, slots: 0 };

  /** Commit requests (a segment's slots each) waiting now for a stream predecessor to commit first (R2). */
  get deferred(): number {
    return this.waiting.length + this.queue.filter((w) => w.deferred).length;
  }

  constructor(
    private readonly db: Kysely<WriteSideTables>,
    private readonly schema: string,
    private readonly log: Logger,
    options: CommitterOptions = {},
  ) {
    this.maxBatch = options.maxBatch ?? 500;
    this.retryIntervalMs = options.retryIntervalMs ?? 25;
    this.maxWaitMs = options.maxWaitMs ?? 70_000;
  }

  /**
   * Commits the slots and resolves with their global positions. Rejects with UnavailableError when
   * a slot was voided (its write came too late) or could not commit in time; the slot then stays
   * for the sweeper, and nothing was acknowledged.
   */
  commit(requests: readonly CommitRequest[]): Promise<Map<number, number>> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new UnavailableError("server is shutting down"));
      this.queue.push({ requests, positions: new Map(), expiresAt: Date.now() + this.maxWaitMs, trace: activeContext(), deferred: false, resolve, reject });
      this.kick();
    });
  }

  /** Rejects everything still waiting (shutdown). */
  close(): void {
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    for (const w of [...this.queue, ...this.waiting]) w.reject(new UnavailableError("server is shutting down"));
    this.queue = [];
    this.waiting = [];
  }

  private kick(): void {
    if (this.running || this.closed) return;
    this.running = true;
    void this.run().finally(() => {
      this.running = false;
      if (this.queue.length > 0 && !this.closed) this.kick();
      else this.scheduleRetry();
    });
  }

  /**
   * Drains the queue on one pooled connection, kept for as long as commits keep arriving. Commits
   * must not queue for a connection behind the reservations of new appends: with the pool busy
   * they waited several reservations long, and every append waits for its commit
   * (bench/README.md). The connection goes back as soon as the queue is empty, so a small pool
   * (the embedded database has one session) is never held idle.
   */
  private async run(): Promise<void> {
    try {
      await this.db.connection().execute((connection) => this.drain(connection));
    } catch (e) {
      // No connection to commit on: nothing was acknowledged; the sweeper resolves the slots.
      this.log.warn({ err: e }, "commit connection failed");
      const failed = this.queue;
      this.queue = [];
      for (const w of failed) w.reject(new UnavailableError("could not commit to the database", { cause: e }));
    }
  }

  private scheduleRetry(): void {
    if (this.waiting.length === 0 || this.timer !== undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.queue.push(...this.waiting);
      this.waiting = [];
      this.kick();
    }, this.retryIntervalMs);
    this.timer.unref();
  }

  /** Commits everything queued, on `db` (one connection). */
  private async drain(db: Kysely<WriteSideTables>): Promise<void> {
    while (this.queue.length > 0) {
      const batch: Waiter[] = [];
      let slots = 0;
      while (this.queue.length > 0 && (batch.length === 0 || slots + this.queue[0]!.requests.length <= this.maxBatch)) {
        const w = this.queue.shift()!;
        batch.push(w);
        slots += w.requests.length;
      }
      const requests = batch.flatMap((w) => w.requests.filter((r) => !w.positions.has(r.logId)));
      let outcomes;
      try {
        // One transaction for many segments: a child of the first flush's span, linking the others.
        outcomes = await inBatchSpan("tidemark.commit", batch.map((w) => w.trace), () => commitSlots(db, this.schema, requests), { "tidemark.commit.slots": requests.length });
        this.stats.transactions += 1;
      } catch (e) {
        this.log.warn({ err: e, slots: requests.length }, "commit transaction failed");
        for (const w of batch) w.reject(new UnavailableError("could not commit to the database", { cause: e }));
        // The connection may be broken: hand it back, and let kick() start over on a fresh one.
        return;
      }
      const now = Date.now();
      const deferred: Waiter[] = [];
      for (const w of batch) {
        let voided = false;
        for (const { logId } of w.requests) {
          const outcome = outcomes.get(logId);
          if (outcome?.type === "committed") w.positions.set(logId, outcome.position);
          else if (outcome?.type === "void" || outcome?.type === "missing") voided = true;
        }
        if (voided) {
          w.reject(new UnavailableError("the write reached the store after its slot was closed; retry the append"));
        } else if (w.positions.size === w.requests.length) {
          this.stats.slots += w.requests.length;
          w.resolve(w.positions);
        } else if (now > w.expiresAt) {
          w.reject(new UnavailableError("an earlier event of this stream is still unresolved; retry later"));
        } else {
          w.deferred = true;
          deferred.push(w);
        }
      }
      // Slots deferred behind a stream predecessor can commit once that predecessor has. When this
      // transaction committed anything, give the earlier-deferred ones another try right away
      // rather than after retryIntervalMs: appends to one hot stream otherwise pay the interval
      // nearly every time (bench/README.md). At most one extra try per commit transaction.
      if (this.waiting.length > 0 && [...outcomes.values()].some((o) => o.type === "committed")) {
        this.queue.push(...this.waiting);
        this.waiting = [];
      }
      this.waiting.push(...deferred);
    }
  }
}

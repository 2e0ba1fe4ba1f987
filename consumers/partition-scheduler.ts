/**
 * Decides when each message of each partition runs (docs/CONTRACT.md C2, C3, C5). Per partition,
 * messages of one aggregate run one after another (a task chain per aggregate) and different
 * aggregates in parallel, up to `concurrency` at once, so one slow aggregate never stalls the rest
 * of its partition (weakness 13). A message is attempted until its outcome is recorded; an outage
 * pauses the partition and backs off without counting an attempt (weakness 12). More than
 * `maxInFlight` messages between fetch and commit pause the partition (back-pressure). Offsets are
 * committed over the contiguous prefix of recorded outcomes only (C5).
 */
import { type Logger, type MessageSource, sleep, type SourceBatch, type SourceMessage, type Upcasters } from "../core/index.js";
import { backoffDelay, type BackoffPolicy } from "./backoff.js";
import { Coalescer } from "./coalescer.js";
import type { CrashHook } from "./crash-point.js";
import { decode, type IncomingMessage, poisonEventId } from "./decode.js";
import { InfrastructureError } from "./failures.js";
import type { ConsumedEvent } from "./handler.js";
import type { ConsumerMetrics } from "./metrics.js";
import { OffsetWindow } from "./offset-window.js";
import { aggregateKey } from "./registry.js";

/**
 * What one attempt came to: the outcome is recorded, or the scheduler asks again after `ms`
 * (`leaseLost`: the attempt lost its lease, so the next claim counts an attempt).
 */
export type AttemptResult = { readonly type: "recorded" } | { readonly type: "again"; readonly ms: number; readonly leaseLost?: boolean };

/** The port the scheduler runs messages through (implemented by the event processor). */
export interface MessageProcessor {
  /** The handler's name, for metric labels. */
  readonly name: string;
  /** True when the handler's filters leave the message out (its outcome needs no record). */
  ignores(message: IncomingMessage): boolean;
  /** One attempt; throws InfrastructureError on an outage (nothing was recorded). */
  attempt(message: IncomingMessage, afterLeaseLost: boolean): Promise<AttemptResult>;
}

/** What the scheduler needs besides its processor. */
export interface PartitionSchedulerOptions {
  /** Where the messages come from (this runtime's own source: one per handler). */
  readonly source: MessageSource;
  /** Handler calls at once per partition. */
  readonly concurrency: number;
  /** Messages of a partition between fetch and commit; above it the partition pauses. */
  readonly maxInFlight: number;
  readonly metrics: ConsumerMetrics;
  /** Bound to the handler. */
  readonly log: Logger;
  /** Test hook: runs at each crash point (a test child blocks here and is killed). */
  readonly crashPoint?: CrashHook;
  /** Called after an event's outcome is recorded (the projection nudges its position tracker). */
  readonly onRecorded?: (event: ConsumedEvent | undefined) => void;
  /** The handler's upcasters, applied as each message is decoded (docs/CONTRACT.md E3; default none). */
  readonly upcasters?: Upcasters;
}

const OUTAGE_BACKOFF: BackoffPolicy = Object.freeze({ baseMs: 100, maxMs: 5000, jitter: 0.2 });
/** Pause before a failed offset commit is tried again. */
const COMMIT_RETRY_MS = 1000;

/** One partition of one source generation: its window of offsets, chains, slots and pause state. */
class Partition {
  readonly window = new OffsetWindow();
  /** Tail of the task chain of each aggregate: events of one aggregate run in order. */
  readonly chains = new Map<string, Promise<void>>();
  readonly slots: Semaphore;
  /** Aborted when the partition is revoked (a new generation) or the scheduler stops. */
  readonly abort = new AbortController();
  committed: bigint | undefined;
  /** Offset commits of this partition, one at a time, later requests coalesced. */
  readonly commits: Coalescer;
  /** The scheduler is stopping: commit the finished prefix even though the partition is aborted. */
  finalCommit = false;
  paused = false;
  outage = false;

  constructor(
    readonly topic: string,
    readonly partition: number,
    concurrency: number,
    commitOnce: (partition: Partition) => Promise<boolean>,
  ) {
    this.slots = new Semaphore(concurrency);
    this.commits = new Coalescer(() => commitOnce(this));
  }
}

/** Schedules one handler's messages over the partitions a source delivers. */
export class PartitionScheduler {
  private partitions = new Map<string, Partition>();
  /** Tasks by event id, so a redelivery in a new generation waits for the old task instead of its lease. */
  private readonly inFlightEvents = new Map<string, Promise<void>>();
  private readonly tasks = new Set<Promise<void>>();
  private stopping = false;
  private commitRetryTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly options: PartitionSchedulerOptions,
    private readonly processor: MessageProcessor,
  ) {}

  /** Takes a batch of one partition (the source's `onBatch`): dispatches what the window has room for. */
  async onBatch(batch: SourceBatch): Promise<void> {
    const { resolveOffset, isRunning, isStale } = batch;
    const partition = this.partition(batch.topic, batch.partition);
    for (const message of batch.messages) {
      if (!isRunning() || isStale() || this.stopping || partition.abort.signal.aborted) return;
      if (partition.window.size >= this.options.maxInFlight) {
        // Back-pressure: the rest of the batch is fetched again after the partition resumes.
        this.pause(partition);
        return;
      }
      if (partition.window.dispatch(BigInt(message.offset))) this.dispatch(partition, message);
      // Resolving moves the fetch position only; commits follow the registry (C5).
      resolveOffset(message.offset);
    }
  }

  /**
   * Partitions were reassigned (the source's `onAssignment`): the old generation's work finishes
   * through the registry (fenced), but only the new generation commits offsets.
   */
  onAssignment(): void {
    const old = this.partitions;
    this.partitions = new Map();
    for (const partition of old.values()) {
      partition.abort.abort();
      if (partition.paused) this.resume(partition, true);
    }
  }

  /**
   * Stops: no new attempts start, running ones finish (up to `graceMs`), then the finished prefix
   * of every partition is committed. Unfinished messages are redelivered later.
   */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    if (this.commitRetryTimer !== undefined) clearTimeout(this.commitRetryTimer);
    for (const partition of this.partitions.values()) partition.abort.abort();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.tasks]),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs))),
    ]);
    clearTimeout(timer);
    await Promise.allSettled([...this.partitions.values()].map((partition) => this.commit(partition, true)));
  }

  private partition(topic: string, number: number): Partition {
    const key = `${topic}\u0000${number}`;
    let partition = this.partitions.get(key);
    if (partition === undefined) {
      partition = new Partition(topic, number, this.options.concurrency, (p) => this.commitOnce(p));
      this.partitions.set(key, partition);
    }
    return partition;
  }

  /** Chains the message behind its aggregate's previous one; when its outcome is recorded, commits. */
  private dispatch(partition: Partition, message: SourceMessage): void {
    const incoming = decode({ topic: partition.topic, partition: partition.partition, offset: message.offset, value: message.value, headers: message.headers }, this.options.upcasters);
    const { raw, event } = incoming;
    const chainKey = event === undefined ? `\u0001${raw.offset}` : aggregateKey(event.aggregateType, event.aggregateId);
    const eventKey = event?.eventId ?? poisonEventId(raw);
    const previous = partition.chains.get(chainKey) ?? Promise.resolve();
    const task: Promise<void> = previous.then(async () => {
      // The same event may still be running from an earlier generation (a rebalance redelivered it).
      const earlier = this.inFlightEvents.get(eventKey);
      if (earlier !== undefined) await earlier;
      const run = this.untilRecorded(partition, incoming);
      const running = run.then(() => undefined, () => undefined);
      this.inFlightEvents.set(eventKey, running);
      try {
        if (await run) {
          partition.window.finish(BigInt(raw.offset));
          this.options.onRecorded?.(event);
          void this.commit(partition);
        }
      } finally {
        if (this.inFlightEvents.get(eventKey) === running) this.inFlightEvents.delete(eventKey);
      }
    });
    const tracked = task.catch((e: unknown) => this.options.log.error({ err: e, offset: raw.offset }, "message task failed unexpectedly"));
    partition.chains.set(chainKey, tracked);
    this.tasks.add(tracked);
    void tracked.finally(() => {
      this.tasks.delete(tracked);
      if (partition.chains.get(chainKey) === tracked) partition.chains.delete(chainKey);
      if (partition.paused && !partition.outage && partition.window.size < Math.max(1, this.options.maxInFlight / 2)) this.resume(partition);
    });
  }

  /**
   * Attempts a message until its outcome is recorded (true) or the partition is given up (false:
   * stop or rebalance; the message will be redelivered). Outages loop here with backoff, the
   * partition paused, without counting attempts.
   */
  private async untilRecorded(partition: Partition, message: IncomingMessage): Promise<boolean> {
    const { metrics, log } = this.options;
    const handler = this.processor.name;
    if (this.processor.ignores(message)) return true;
    let outages = 0;
    let leaseLost = false;
    for (;;) {
      if (this.stopping || partition.abort.signal.aborted) return false;
      let result: AttemptResult;
      try {
        result = await partition.slots.run(() => this.processor.attempt(message, leaseLost));
        leaseLost = result.type === "again" && result.leaseLost === true;
        if (partition.outage) this.outageOver(partition);
        outages = 0;
      } catch (e) {
        if (e instanceof InfrastructureError) {
          outages += 1;
          metrics.infrastructureFailures.inc({ handler, stage: e.message });
          if (outages === 1 || outages % 20 === 0) log.warn({ err: e.cause ?? e, stage: e.message, offset: message.raw.offset }, "infrastructure unavailable; partition paused, retrying");
          this.outageBegan(partition);
          await sleep(backoffDelay(outages, OUTAGE_BACKOFF), partition.abort.signal);
          continue;
        }
        log.error({ err: e, offset: message.raw.offset }, "unexpected failure while processing; retrying");
        await sleep(backoffDelay(++outages, OUTAGE_BACKOFF), partition.abort.signal);
        continue;
      }
      if (result.type === "recorded") return true;
      await sleep(result.ms, partition.abort.signal);
    }
  }

  /** Commits the partition's finished prefix; one commit at a time, coalescing later requests. */
  private commit(partition: Partition, final = false): Promise<void> {
    if (final) partition.finalCommit = true;
    return partition.commits.request();
  }

  /** One commit of the finished prefix; false when it failed (a retry is scheduled). */
  private async commitOnce(partition: Partition): Promise<boolean> {
    // A revoked partition commits nothing (its successor owns the offsets) — unless the scheduler
    // is stopping and asked for the final commit, which may come while this run is under way.
    if (partition.abort.signal.aborted && !partition.finalCommit) return true;
    const next = partition.window.commitCandidate(partition.committed);
    if (next === undefined) return true;
    const { topic } = partition;
    try {
      await this.options.crashPoint?.("before-offset-commit", { topic, partition: partition.partition, offset: String(next) });
      await this.options.source.commit(topic, partition.partition, String(next));
      partition.committed = next;
      this.options.metrics.committedOffset.set({ handler: this.processor.name, topic, partition: String(partition.partition) }, Number(next));
      return true;
    } catch (e) {
      this.options.metrics.infrastructureFailures.inc({ handler: this.processor.name, stage: "offset commit" });
      this.options.log.warn({ err: e, topic, partition: partition.partition }, "offset commit failed; will retry");
      this.scheduleCommitRetry();
      return false;
    }
  }

  private scheduleCommitRetry(): void {
    if (this.commitRetryTimer !== undefined || this.stopping) return;
    this.commitRetryTimer = setTimeout(() => {
      this.commitRetryTimer = undefined;
      for (const partition of this.partitions.values()) void this.commit(partition);
    }, COMMIT_RETRY_MS);
    this.commitRetryTimer.unref();
  }

  private outageBegan(partition: Partition): void {
    partition.outage = true;
    this.pause(partition);
  }

  private outageOver(partition: Partition): void {
    partition.outage = false;
    if (partition.paused && partition.window.size < this.options.maxInFlight) this.resume(partition);
  }

  private pause(partition: Partition): void {
    // A revoked generation must not pause the partition its successor consumes.
    if (partition.paused || partition.abort.signal.aborted) return;
    try {
      this.options.source.pause(partition.topic, partition.partition);
    } catch (e) {
      // The source is restarting (Kafka unreachable): nothing is fetched anyway, and the next
      // generation starts with fresh partition state.
      this.options.log.debug({ err: e }, "could not pause the partition");
      return;
    }
    partition.paused = true;
    this.options.metrics.pausedPartitions.inc({ handler: this.processor.name });
  }

  private resume(partition: Partition, force = false): void {
    if (!partition.paused || (!force && this.stopping)) return;
    partition.paused = false;
    this.options.metrics.pausedPartitions.dec({ handler: this.processor.name });
    try {
      this.options.source.resume(partition.topic, partition.partition);
    } catch (e) {
      this.options.log.debug({ err: e }, "could not resume the partition");
    }
  }
}

/** A counting semaphore: at most `permits` calls of {@link run} at once, first come first served. */
class Semaphore {
  private readonly waiting: Array<() => void> = [];
  constructor(private permits: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.permits > 0) this.permits -= 1;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next !== undefined) next();
      else this.permits += 1;
    }
  }
}

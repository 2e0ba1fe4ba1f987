/**
 * Runs one handler on a message source — a Kafka consumer group, or the commit log in process in
 * the embedded mode (docs/CONTRACT.md C1–C5). Per message: claim in the registry → heartbeat → side
 * effect and "done" in one transaction → commit the offset once the contiguous prefix of the
 * partition has a recorded outcome. Per partition, events of one aggregate run one after another
 * and different aggregates run in parallel (bounded), so one slow aggregate never stalls the rest
 * of its partition (weakness 13). When the registry or the source is unreachable the partition
 * pauses and its offset stays put (weakness 12).
 */
import type { Kysely } from "kysely";
import type { Logger } from "../core/log.js";
import { sleep } from "../core/sleep.js";
import { backoffDelay, type BackoffPolicy } from "./backoff.js";
import type { DeadLetterReason, DeadLetterSink } from "./dead-letter.js";
import { decodeMessage, headerText, poisonEventId, traceIdOf, type RawMessage } from "./decode.js";
import {
  classifyFailure,
  describeFailure,
  InfrastructureError,
  isLeaseLostError,
  LeaseLostError,
  PoisonError,
} from "./failures.js";
import { wants, type ConsumedEvent, type Handler, type HandlerContext } from "./handler.js";
import type { MessageSource, SourceBatch, SourceMessage } from "./message-source.js";
import type { ConsumerMetrics } from "./metrics.js";
import { Coalescer } from "./coalescer.js";
import { GroupQueue } from "./group-queue.js";
import { OffsetWindow } from "./offset-window.js";
import {
  claimEvent,
  claimEvents,
  finishClaim,
  finishClaims,
  lockWatermark,
  lockWatermarks,
  markDeadLettered,
  renewLeases,
  scheduleRetry,
  type Claim,
  type ClaimRequest,
} from "./registry.js";
import type { ConsumerDatabase } from "./schema.js";

/** Named points in the processing of one message where tests inject crashes. */
export type CrashPoint = "after-claim" | "before-side-effect" | "after-side-effect" | "before-done" | "before-offset-commit";

/** Where a crash point was reached. */
export interface CrashPointInfo {
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
  readonly eventId?: string;
  /** On the group path: how many events the group holds. */
  readonly groupSize?: number;
}

/** Everything a runtime needs; `startConsumer` (app.ts) builds it from the configuration. */
export interface ConsumerRuntimeOptions {
  readonly handler: Handler;
  readonly db: Kysely<ConsumerDatabase>;
  /** Where the messages come from (this runtime's own source: one per handler). */
  readonly source: MessageSource;
  /** Where dead letters go (may be shared by runtimes). */
  readonly deadLetters: DeadLetterSink;
  readonly leaseMs: number;
  readonly heartbeatMs: number;
  readonly maxAttempts: number;
  readonly backoff: BackoffPolicy;
  readonly concurrency: number;
  readonly maxInFlight: number;
  readonly metrics: ConsumerMetrics;
  readonly log: Logger;
  /** Identifies this worker in registry rows. */
  readonly owner: string;
  /** Test hook: runs at each crash point (a test child blocks here and is killed). */
  readonly crashPoint?: (point: CrashPoint, info: CrashPointInfo) => Promise<void>;
  /** Called after an event's outcome is recorded (the projection nudges its position tracker). */
  readonly onRecorded?: (event: ConsumedEvent | undefined) => void;
  /** Called when the source starts or stops delivering (joined or lost its group): health only. */
  readonly onRunning?: (running: boolean) => void;
  /** Most events in one group of a handler with `handleBatch` (default 64; 1: no groups). */
  readonly maxGroupSize?: number;
  /**
   * A group still running after this long (ms, default 2000) is rolled back and its events go
   * one by one, so one slow event holds the others of its group no longer than this.
   */
  readonly groupTimeoutMs?: number;
}

/** An event waiting to join a group (handlers with `handleBatch`). */
interface GroupItem {
  readonly request: ClaimRequest;
  readonly event: ConsumedEvent;
  readonly raw: RawMessage;
}

/**
 * What became of an event in its group: applied or skipped with the group (`finished`); claimed
 * but left to the per-event path (`claimed`: the group rolled back, or the claim is a takeover, a
 * retry or exhausted); or not claimed (`refused`: the per-event claim tells why).
 */
type GroupOutcome =
  | { readonly type: "finished" }
  | { readonly type: "claimed"; readonly claim: Claim; readonly claimSentAt: number }
  | { readonly type: "refused" };

const REFUSED: GroupOutcome = Object.freeze({ type: "refused" });
const GROUP_FINISHED: GroupOutcome = Object.freeze({ type: "finished" });
/** Groups running at once: one claims while another applies. */
const PARALLEL_GROUPS = 2;

/** What one processing step asks the message loop to do next. */
type Step = { readonly type: "finished" } | { readonly type: "wait"; readonly ms: number; readonly leaseLost?: boolean };

const FINISHED: Step = Object.freeze({ type: "finished" });
/** Longest single sleep while waiting for another holder, so a finished holder is noticed quickly. */
const MAX_POLL_MS = 1000;
const OUTAGE_BACKOFF: BackoffPolicy = Object.freeze({ baseMs: 100, maxMs: 5000, jitter: 0.2 });

/** Per-partition state of one consumer group generation. */
class PartitionState {
  readonly window = new OffsetWindow();
  /** Tail of the task chain of each aggregate: events of one aggregate run in order. */
  readonly chains = new Map<string, Promise<void>>();
  readonly slots: Semaphore;
  /** Aborted when the partition is revoked (a new generation) or the runtime stops. */
  readonly abort = new AbortController();
  committed: bigint | undefined;
  /** Offset commits of this partition, one at a time, later requests coalesced. */
  readonly commits: Coalescer;
  /** The runtime is stopping: commit the finished prefix even though the partition is aborted. */
  finalCommit = false;
  paused = false;
  outage = false;

  constructor(
    readonly topic: string,
    readonly partition: number,
    concurrency: number,
    commitOnce: (state: PartitionState) => Promise<boolean>,
  ) {
    this.slots = new Semaphore(concurrency);
    this.commits = new Coalescer(() => commitOnce(this));
  }
}

/** A running consumer of one handler. */
export class ConsumerRuntime {
  private readonly source: MessageSource;
  private readonly log: Logger;
  private partitions = new Map<string, PartitionState>();
  /** Tasks by event id, so a redelivery in a new generation waits for the old task instead of its lease. */
  private readonly inFlightEvents = new Map<string, Promise<void>>();
  private readonly tasks = new Set<Promise<void>>();
  private stopping = false;
  private commitRetryTimer: NodeJS.Timeout | undefined;
  /** Present when the handler applies groups (`handleBatch`). */
  private readonly groups: GroupQueue<GroupItem, GroupOutcome> | undefined;

  constructor(private readonly options: ConsumerRuntimeOptions) {
    this.log = options.log.child({ handler: options.handler.name });
    this.source = options.source;
    if (options.handler.handleBatch !== undefined && (options.maxGroupSize ?? 64) > 1) {
      this.groups = new GroupQueue((items) => this.applyGroup(items), options.maxGroupSize ?? 64, PARALLEL_GROUPS);
    }
  }

  /** Where this runtime's messages come from, for logs. */
  get sourceDescription(): string {
    return this.source.description;
  }

  /** The handler's name. */
  get name(): string {
    return this.options.handler.name;
  }

  /** Starts consuming from the source; resolves once the source is running. */
  async start(): Promise<void> {
    await this.source.start({
      onBatch: (batch) => this.onBatch(batch),
      // A new generation may reassign partitions; in-flight work of the old one finishes through
      // the registry (fenced), but only the new generation commits offsets.
      onAssignment: () => this.abandonAll(),
      onRunning: (running) => this.options.onRunning?.(running),
    });
    // A start given up (the process stopping) also ends here, and consumes nothing.
    if (!this.stopping) this.log.info({ source: this.source.description }, "consuming");
  }

  /**
   * Stops: no new attempts start, running attempts finish (up to `graceMs`), finished offsets are
   * committed, then the consumer leaves the group. Unfinished messages are redelivered later.
   */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.commitRetryTimer !== undefined) clearTimeout(this.commitRetryTimer);
    for (const state of this.partitions.values()) state.abort.abort();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.tasks]),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs))),
    ]);
    clearTimeout(timer);
    await Promise.allSettled([...this.partitions.values()].map((state) => this.commit(state, true)));
    await this.source.stop().catch((e: unknown) => this.log.warn({ err: e }, "stopping the message source failed"));
  }

  private async onBatch(batch: SourceBatch): Promise<void> {
    const { resolveOffset, isRunning, isStale } = batch;
    const state = this.partitionState(batch.topic, batch.partition);
    for (const message of batch.messages) {
      if (!isRunning() || isStale() || this.stopping || state.abort.signal.aborted) return;
      if (state.window.size >= this.options.maxInFlight) {
        // Back-pressure: the rest of the batch is fetched again after the partition resumes.
        this.pause(state);
        return;
      }
      const offset = BigInt(message.offset);
      if (state.window.dispatch(offset)) this.dispatch(state, message);
      // Resolving moves the fetch position only; commits follow the registry (C5).
      resolveOffset(message.offset);
    }
  }

  private partitionState(topic: string, partition: number): PartitionState {
    const key = `${topic}\u0000${partition}`;
    let state = this.partitions.get(key);
    if (state === undefined) {
      state = new PartitionState(topic, partition, this.options.concurrency, (s) => this.commitOnce(s));
      this.partitions.set(key, state);
    }
    return state;
  }

  private abandonAll(): void {
    const old = this.partitions;
    this.partitions = new Map();
    for (const state of old.values()) {
      state.abort.abort();
      if (state.paused) this.resume(state, true);
    }
  }

  private dispatch(state: PartitionState, message: SourceMessage): void {
    const raw: RawMessage = {
      topic: state.topic,
      partition: state.partition,
      offset: message.offset,
      value: message.value,
      headers: message.headers,
    };
    let event: ConsumedEvent | undefined;
    let poison: PoisonError | undefined;
    try {
      event = decodeMessage(raw);
    } catch (e) {
      poison = e instanceof PoisonError ? e : new PoisonError("message could not be decoded", { cause: e });
    }
    const chainKey = event === undefined ? `\u0001${message.offset}` : `${event.aggregateType}\u0000${event.aggregateId}`;
    const eventKey = event?.eventId ?? poisonEventId(raw);
    const previous = state.chains.get(chainKey) ?? Promise.resolve();
    const task: Promise<void> = previous.then(async () => {
      // The same event may still be running from an earlier generation (a rebalance redelivered it).
      const earlier = this.inFlightEvents.get(eventKey);
      if (earlier !== undefined) await earlier;
      const run = this.process(state, raw, event, poison);
      const running = run.then(() => undefined, () => undefined);
      this.inFlightEvents.set(eventKey, running);
      try {
        if (await run) {
          state.window.finish(BigInt(raw.offset));
          this.options.onRecorded?.(event);
          void this.commit(state);
        }
      } finally {
        if (this.inFlightEvents.get(eventKey) === running) this.inFlightEvents.delete(eventKey);
      }
    });
    const tracked = task.catch((e: unknown) => this.log.error({ err: e, offset: raw.offset }, "message task failed unexpectedly"));
    state.chains.set(chainKey, tracked);
    this.tasks.add(tracked);
    void tracked.finally(() => {
      this.tasks.delete(tracked);
      if (state.chains.get(chainKey) === tracked) state.chains.delete(chainKey);
      if (state.paused && !state.outage && state.window.size < Math.max(1, this.options.maxInFlight / 2)) this.resume(state);
    });
  }

  /**
   * Processes one message until its outcome is recorded (true) or the partition is given up
   * (false: stop or rebalance; the message will be redelivered). Infrastructure failures loop
   * here with backoff, the partition paused, without counting attempts.
   */
  private async process(state: PartitionState, raw: RawMessage, event: ConsumedEvent | undefined, poison: PoisonError | undefined): Promise<boolean> {
    if (event !== undefined && !wants(this.options.handler, event.aggregateType, event.eventType)) {
      this.options.metrics.processed.inc({ handler: this.name, outcome: "filtered" });
      return true;
    }
    let outages = 0;
    let leaseLost = false;
    for (;;) {
      if (this.stopping || state.abort.signal.aborted) return false;
      let step: Step;
      try {
        step = await state.slots.run(() => this.attempt(raw, event, poison, leaseLost));
        leaseLost = step.type === "wait" && step.leaseLost === true;
        if (state.outage) this.outageOver(state);
        outages = 0;
      } catch (e) {
        if (e instanceof InfrastructureError) {
          outages += 1;
          this.options.metrics.infrastructureFailures.inc({ handler: this.name, stage: e.message });
          if (outages === 1 || outages % 20 === 0) this.log.warn({ err: e.cause ?? e, stage: e.message, offset: raw.offset }, "infrastructure unavailable; partition paused, retrying");
          this.outageBegan(state);
          await sleep(backoffDelay(outages, OUTAGE_BACKOFF), state.abort.signal);
          continue;
        }
        this.log.error({ err: e, offset: raw.offset }, "unexpected failure while processing; retrying");
        await sleep(backoffDelay(++outages, OUTAGE_BACKOFF), state.abort.signal);
        continue;
      }
      if (step.type === "finished") return true;
      await sleep(step.ms, state.abort.signal);
    }
  }

  /** One attempt: claim, then dead-letter, skip or apply. Throws InfrastructureError on an outage. */
  private async attempt(raw: RawMessage, event: ConsumedEvent | undefined, poison: PoisonError | undefined, afterLeaseLost: boolean): Promise<Step> {
    const { options } = this;
    const request: ClaimRequest = event === undefined
      ? {
          handler: this.name,
          eventId: poisonEventId(raw),
          aggregateType: headerText(raw, "aggregate_type") ?? "",
          aggregateId: headerText(raw, "aggregate_id") ?? "",
          seq: 0,
          globalPosition: null,
          eventType: headerText(raw, "event_type") ?? "",
          commandId: null,
          owner: options.owner,
          leaseMs: options.leaseMs,
          countResume: afterLeaseLost,
        }
      : {
          handler: this.name,
          eventId: event.eventId,
          aggregateType: event.aggregateType,
          aggregateId: event.aggregateId,
          seq: event.seq,
          globalPosition: event.globalPosition > 0 ? event.globalPosition : null,
          eventType: event.eventType,
          commandId: event.metadata["command_id"] ?? null,
          owner: options.owner,
          leaseMs: options.leaseMs,
          countResume: afterLeaseLost,
        };
    if (this.groups !== undefined && event !== undefined && !afterLeaseLost) {
      const grouped = await infra("claim", () => this.groups!.submit({ request, event, raw }));
      if (grouped.type === "finished") return FINISHED;
      if (grouped.type === "claimed") return this.afterClaim(grouped.claim, raw, event, poison, grouped.claimSentAt);
      // Refused in the group: the single claim below finds out why (held, ordering, finished).
    }
    const claimSentAt = performance.now();
    const outcome = await infra("claim", () => claimEvent(options.db, request));
    if (outcome.type === "finished") {
      options.metrics.processed.inc({ handler: this.name, outcome: "duplicate" });
      return FINISHED;
    }
    if (outcome.type === "wait") return { type: "wait", ms: Math.min(outcome.ms, MAX_POLL_MS) };
    return this.afterClaim(outcome.claim, raw, event, poison, claimSentAt);
  }

  /** What follows a granted claim: dead-letter (poison, exhausted) or apply. */
  private async afterClaim(claim: Claim, raw: RawMessage, event: ConsumedEvent | undefined, poison: PoisonError | undefined, claimSentAt: number): Promise<Step> {
    const { options } = this;
    if (claim.claimedFrom === "processing") {
      options.metrics.leaseTakeovers.inc({ handler: this.name });
      this.log.info({ eventId: claim.eventId, attempts: claim.attempts }, "took over an expired lease");
    }
    const info: CrashPointInfo = { topic: raw.topic, partition: raw.partition, offset: raw.offset, eventId: claim.eventId };
    await options.crashPoint?.("after-claim", info);

    if (event === undefined) return this.deadLetter(claim, raw, "poison", describeFailure(poison));
    if (claim.attempts > options.maxAttempts) {
      // Takeovers count: an event that kills its worker every time ends here instead of forever.
      const last = claim.lastError ?? "the holder's lease expired (it crashed or stalled)";
      return this.deadLetter(claim, raw, "exhausted", `gave up after ${claim.attempts - 1} attempts; last error: ${last}`);
    }
    return this.apply(claim, raw, event, info, claimSentAt);
  }

  /**
   * Claims a group of events in one statement and applies the fresh ones in one transaction with
   * their "done" and watermarks (C1, C2 as per event: the same rows, the same fencing). Anything
   * unusual leaves the event to the per-event path: a refused claim, a takeover, a retry, an
   * exhausted event, or a group that rolled back for any reason (a failing handler, a lost lease,
   * an outage) — its members keep their claims and go through `handle` one by one. Rejects only
   * when the claim statement fails (an outage: nothing was claimed).
   */
  private async applyGroup(items: readonly GroupItem[]): Promise<GroupOutcome[]> {
    const { options } = this;
    const claimSentAt = performance.now();
    const claims = await claimEvents(options.db, this.name, options.owner, options.leaseMs, items.map((i) => i.request));
    const indexOf = new Map(items.map((item, i) => [item.event.eventId, i]));
    const outcomes: GroupOutcome[] = items.map((item) => {
      const claim = claims.get(item.event.eventId);
      return claim === undefined ? REFUSED : { type: "claimed", claim, claimSentAt };
    });
    const members = items
      .map((item) => ({ item, claim: claims.get(item.event.eventId) }))
      .filter((m): m is { item: GroupItem; claim: Claim } => m.claim !== undefined && (m.claim.claimedFrom === null || m.claim.claimedFrom === "self") && m.claim.attempts <= options.maxAttempts)
      // Each aggregate's events in seq order (one runtime runs one event per aggregate at a time;
      // an old generation's redelivery may add another).
      .sort((a, b) => compareKeys(a.item.event, b.item.event) || a.item.event.seq - b.item.event.seq);
    if (members.length === 0) return outcomes;
    const infos = members.map(({ item, claim }) => ({ topic: item.raw.topic, partition: item.raw.partition, offset: item.raw.offset, eventId: claim.eventId, groupSize: members.length }));
    const crashAt = async (point: CrashPoint, which: ReadonlyArray<CrashPointInfo>) => {
      if (options.crashPoint !== undefined) for (const info of which) await options.crashPoint(point, info);
    };
    await crashAt("after-claim", infos);

    const held = members.map((m) => m.claim);
    const groupTimeoutMs = options.groupTimeoutMs ?? 2000;
    const lease = this.keepLeases(held, claimSentAt, `the group of ${held.length}`);
    const budget = setTimeout(
      () => lease.abort(new Error(`${this.name}: the group of ${held.length} took longer than ${groupTimeoutMs} ms`)),
      groupTimeoutMs,
    );
    const started = performance.now();
    try {
      const results = await options.db.transaction().execute(async (tx) => {
        const applied = await lockWatermarks(tx, this.name, members.map((m) => m.item.event));
        const fresh: ConsumedEvent[] = [];
        const freshInfos: CrashPointInfo[] = [];
        const finish: Array<{ claim: Claim; state: "done" | "skipped_stale" }> = [];
        members.forEach(({ item, claim }, i) => {
          const stale = item.event.seq <= (applied.get(`${item.event.aggregateType}\u0000${item.event.aggregateId}`) ?? 0);
          if (!stale) {
            fresh.push(item.event);
            freshInfos.push(infos[i]!);
          }
          finish.push({ claim, state: stale ? "skipped_stale" : "done" });
        });
        await crashAt("before-side-effect", freshInfos);
        if (fresh.length > 0) {
          await untilAborted(options.handler.handleBatch!(fresh, tx, { signal: lease.signal, log: this.log }), lease.signal);
        }
        await crashAt("after-side-effect", freshInfos);
        if (lease.signal.aborted) throw lease.signal.reason;
        await crashAt("before-done", freshInfos);
        await finishClaims(tx, finish);
        return finish;
      });
      options.metrics.handlerSeconds.observe({ handler: this.name }, (performance.now() - started) / 1000);
      options.metrics.groupSize.observe({ handler: this.name }, members.length);
      for (const { claim, state } of results) {
        options.metrics.processed.inc({ handler: this.name, outcome: state });
        if (state === "skipped_stale") {
          options.metrics.skippedStale.inc({ handler: this.name });
          this.log.info({ eventId: claim.eventId, seq: claim.seq }, "skipped a stale event (a higher seq of its aggregate was applied)");
        }
        outcomes[indexOf.get(claim.eventId)!] = GROUP_FINISHED;
      }
    } catch (e) {
      // Rolled back as a whole: the per-event path retries each member with the claim it holds,
      // and counts, retries or dead-letters exactly as it would have without the group.
      options.metrics.groupFallbacks.inc({ handler: this.name });
      this.log.info({ err: e, events: members.length }, "group rolled back; applying its events one by one");
    } finally {
      lease.stop();
      clearTimeout(budget);
    }
    return outcomes;
  }

  /**
   * Runs the side effect and "done" in one transaction while heartbeats keep the lease. The lease
   * also ends locally: at the claim's (or the latest renewal's) send time plus the lease, the
   * handler is abandoned and the transaction rolled back — "done" would be refused anyway, and a
   * transaction that outlives its lease must not keep holding a database connection (in the
   * embedded mode it holds the only one, and the heartbeat cannot run until it ends).
   */
  private async apply(claim: Claim, raw: RawMessage, event: ConsumedEvent, info: CrashPointInfo, claimSentAt: number): Promise<Step> {
    const { options } = this;
    const lease = this.keepLeases([claim], claimSentAt, claim.eventId);
    const log = this.log;
    let eventLog: Logger | undefined;
    const context: HandlerContext = {
      attempt: claim.attempts,
      signal: lease.signal,
      // A child logger per event costs more than most handlers: made on first use only.
      get log() {
        return (eventLog ??= log.child(eventFields(event)));
      },
      traceparent: event.traceparent,
    };
    try {
      const result = await options.db.transaction().execute(async (tx) => {
        const applied = await lockWatermark(tx, this.name, event.aggregateType, event.aggregateId);
        if (event.seq <= applied) {
          await finishClaim(tx, claim, "skipped_stale");
          return "skipped_stale" as const;
        }
        await options.crashPoint?.("before-side-effect", info);
        const started = performance.now();
        try {
          await untilAborted(options.handler.handle(event, tx, context), lease.signal);
        } finally {
          options.metrics.handlerSeconds.observe({ handler: this.name }, (performance.now() - started) / 1000);
        }
        await options.crashPoint?.("after-side-effect", info);
        if (lease.signal.aborted) throw lease.signal.reason;
        await options.crashPoint?.("before-done", info);
        await finishClaim(tx, claim, "done");
        return "done" as const;
      });
      options.metrics.processed.inc({ handler: this.name, outcome: result });
      if (result === "skipped_stale") {
        options.metrics.skippedStale.inc({ handler: this.name });
        this.log.info({ ...eventFields(event), seq: event.seq }, "skipped a stale event (a higher seq of its aggregate was applied)");
      }
      return FINISHED;
    } catch (e) {
      if (isLeaseLostError(e)) {
        options.metrics.leaseLost.inc({ handler: this.name });
        this.log.warn({ ...eventFields(event), fence: claim.fence }, "lease lost; the side effect was rolled back");
        return { type: "wait", ms: 0, leaseLost: true };
      }
      const failure = classifyFailure(e);
      if (failure === "infrastructure") throw new InfrastructureError("handler transaction", { cause: e });
      const cause = describeFailure(e);
      if (failure === "poison") return this.deadLetter(claim, raw, "poison", cause);
      if (claim.attempts >= options.maxAttempts) return this.deadLetter(claim, raw, "exhausted", `gave up after ${claim.attempts} attempts; last error: ${cause}`);
      const delay = backoffDelay(claim.attempts, options.backoff);
      const scheduled = await infra("schedule retry", () => scheduleRetry(options.db, claim, delay, cause));
      if (!scheduled) return { type: "wait", ms: 0 };
      options.metrics.retries.inc({ handler: this.name });
      this.log.info({ ...eventFields(event), attempt: claim.attempts, delayMs: delay, err: e }, "attempt failed; retry scheduled");
      return { type: "wait", ms: delay };
    } finally {
      lease.stop();
    }
  }

  /**
   * Keeps the leases of held claims (one event's, or a group's) while their transaction runs:
   * renews them every heartbeat, and aborts `signal` when one is lost or when the lease runs out
   * locally — at the claim's (or the latest renewal's) send time plus the lease. `stop()` ends it.
   */
  private keepLeases(claims: readonly Claim[], sentAt: number, what: string): { signal: AbortSignal; abort(reason: unknown): void; stop(): void } {
    const { options } = this;
    const lease = new AbortController();
    let expiry: NodeJS.Timeout | undefined;
    const expireAt = (deadline: number) => {
      clearTimeout(expiry);
      expiry = setTimeout(() => lease.abort(new LeaseLostError(`${this.name}: lease of ${what} ran out before the handler finished`)), Math.max(0, deadline - performance.now()));
    };
    expireAt(sentAt + options.leaseMs);
    const heartbeat = setInterval(() => {
      const renewedAt = performance.now();
      renewLeases(options.db, claims, options.leaseMs).then(
        (count) => {
          if (count < claims.length) lease.abort(new LeaseLostError(`${this.name}: lease of ${what} lost`));
          else if (!lease.signal.aborted) expireAt(renewedAt + options.leaseMs);
        },
        // An outage: the next heartbeat tries again; if the lease runs out, "done" is refused.
        (e: unknown) => this.log.warn({ err: e, lease: what }, "heartbeat failed"),
      );
    }, options.heartbeatMs);
    return {
      signal: lease.signal,
      abort: (reason) => lease.abort(reason),
      stop: () => {
        clearInterval(heartbeat);
        clearTimeout(expiry);
      },
    };
  }

  /** Produces the dead letter, then records dead_lettered (a crash between repeats the letter, never loses it). */
  private async deadLetter(claim: Claim, raw: RawMessage, reason: DeadLetterReason, cause: string): Promise<Step> {
    const { options } = this;
    await infra(
      "dead-letter produce",
      () => options.deadLetters.publish({ handler: this.name, eventId: claim.eventId, reason, cause, attempts: claim.attempts, message: raw }),
    );
    const marked = await infra("mark dead-lettered", () => markDeadLettered(options.db, claim, cause));
    if (!marked) return { type: "wait", ms: 0 };
    options.metrics.deadLetters.inc({ handler: this.name, reason });
    options.metrics.processed.inc({ handler: this.name, outcome: "dead_lettered" });
    const traceId = traceIdOf(headerText(raw, "traceparent"));
    this.log.warn({ eventId: claim.eventId, ...(traceId === undefined ? {} : { traceId }), reason, cause, offset: raw.offset, to: options.deadLetters.where }, "event dead-lettered");
    return FINISHED;
  }

  /** Commits the partition's finished prefix; one commit at a time, coalescing later requests. */
  private commit(state: PartitionState, final = false): Promise<void> {
    if (final) state.finalCommit = true;
    return state.commits.request();
  }

  /** One commit of the finished prefix; false when it failed (a retry is scheduled). */
  private async commitOnce(state: PartitionState): Promise<boolean> {
    // A revoked partition commits nothing (its successor owns the offsets) — unless the runtime is
    // stopping and asked for the final commit, which may come while this run is under way.
    if (state.abort.signal.aborted && !state.finalCommit) return true;
    const next = state.window.commitCandidate(state.committed);
    if (next === undefined) return true;
    try {
      await this.options.crashPoint?.("before-offset-commit", { topic: state.topic, partition: state.partition, offset: String(next) });
      await this.source.commit(state.topic, state.partition, String(next));
      state.committed = next;
      this.options.metrics.committedOffset.set({ handler: this.name, topic: state.topic, partition: String(state.partition) }, Number(next));
      return true;
    } catch (e) {
      this.options.metrics.infrastructureFailures.inc({ handler: this.name, stage: "offset commit" });
      this.log.warn({ err: e, topic: state.topic, partition: state.partition }, "offset commit failed; will retry");
      this.scheduleCommitRetry();
      return false;
    }
  }

  private scheduleCommitRetry(): void {
    if (this.commitRetryTimer !== undefined || this.stopping) return;
    this.commitRetryTimer = setTimeout(() => {
      this.commitRetryTimer = undefined;
      for (const state of this.partitions.values()) void this.commit(state);
    }, 1000);
    this.commitRetryTimer.unref();
  }

  private outageBegan(state: PartitionState): void {
    state.outage = true;
    this.pause(state);
  }

  private outageOver(state: PartitionState): void {
    state.outage = false;
    if (state.paused && state.window.size < this.options.maxInFlight) this.resume(state);
  }

  private pause(state: PartitionState): void {
    // A revoked generation must not pause the partition its successor consumes.
    if (state.paused || state.abort.signal.aborted) return;
    try {
      this.source.pause(state.topic, state.partition);
    } catch (e) {
      // The source is restarting (Kafka unreachable): nothing is fetched anyway, and the next
      // generation starts with fresh partition state.
      this.log.debug({ err: e }, "could not pause the partition");
      return;
    }
    state.paused = true;
    this.options.metrics.pausedPartitions.inc({ handler: this.name });
  }

  private resume(state: PartitionState, force = false): void {
    if (!state.paused || (!force && this.stopping)) return;
    state.paused = false;
    this.options.metrics.pausedPartitions.dec({ handler: this.name });
    try {
      this.source.resume(state.topic, state.partition);
    } catch (e) {
      this.log.debug({ err: e }, "could not resume the partition");
    }
  }
}

/** Orders events by aggregate (type, then id). */
function compareKeys(a: ConsumedEvent, b: ConsumedEvent): number {
  if (a.aggregateType !== b.aggregateType) return a.aggregateType < b.aggregateType ? -1 : 1;
  if (a.aggregateId !== b.aggregateId) return a.aggregateId < b.aggregateId ? -1 : 1;
  return 0;
}

/** Log fields of an event: its id and, when the producer traced it, the W3C trace context. */
function eventFields(event: ConsumedEvent): Record<string, string> {
  const traceId = traceIdOf(event.traceparent);
  return traceId === undefined ? { eventId: event.eventId } : { eventId: event.eventId, traceId, traceparent: event.traceparent! };
}

/** Runs a registry or Kafka call; any failure becomes an InfrastructureError (an outage). */
async function infra<T>(stage: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (e) {
    throw new InfrastructureError(stage, { cause: e });
  }
}

/**
 * Settles like `work`, or rejects with the signal's reason as soon as `signal` aborts (the work
 * goes on unobserved; its transaction is rolled back, so its later queries fail).
 */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    work.catch(() => {});
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    work.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
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

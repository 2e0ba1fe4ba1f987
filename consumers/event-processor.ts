/**
 * Gets the outcome of one message recorded in the registry (docs/CONTRACT.md C1–C4): claim it,
 * ask `nextStep` what follows, and do that — apply, retry at a time, dead-letter, wait. Applying
 * is one transaction body for one event and for a group of a handler with `handleBatch` (a single
 * event is a group of one): lock the watermarks, skip the stale, run the side effect while the
 * lease keeper holds the leases, record "done" — all or nothing. Any failure of a group leaves
 * its events to the per-event path, so retries and dead letters are exactly those of `handle`.
 */
import type { Kysely, Transaction } from "kysely";
import { activeContext, type ConsumerDatabase, inBatchSpan, inSpan, inSpanOf, type Logger, SpanKind, type TraceContext, tracingEnabled } from "../core/index.js";
import type { BackoffPolicy } from "./backoff.js";
import type { CrashHook, CrashPoint, CrashPointInfo } from "./crash-point.js";
import type { DeadLetterReason, DeadLetterSink } from "./dead-letter.js";
import { fencedTransaction } from "./fenced-transaction.js";
import { headerText, type IncomingMessage, poisonEventId, storedMessage, traceIdOf, type RawMessage } from "./decode.js";
import { classifyFailure, describeFailure, InfrastructureError, isLeaseLostError } from "./failures.js";
import { GroupQueue } from "./group-queue.js";
import { wants, type ConsumedEvent, type Handler, type HandlerContext } from "./handler.js";
import type { KeptLease, LeaseKeeper } from "./lease-keeper.js";
import type { ConsumerMetrics } from "./metrics.js";
import { nextStep, type AttemptPolicy } from "./next-step.js";
import type { AttemptResult, MessageProcessor } from "./partition-scheduler.js";
import {
  aggregateKey,
  claimEvent,
  claimEvents,
  finishClaims,
  lockWatermarks,
  markDeadLettered,
  scheduleRetry,
  unresolvedBefore,
  type Claim,
  type ClaimFinish,
  type ClaimOutcome,
  type ClaimRequest,
} from "./registry.js";

/** What the event processor needs besides its lease keeper. */
export interface EventProcessorOptions {
  readonly handler: Handler;
  readonly db: Kysely<ConsumerDatabase>;
  /** Where dead letters go (may be shared by runtimes). */
  readonly deadLetters: DeadLetterSink;
  /** Length of a claim's lease. */
  readonly leaseMs: number;
  readonly maxAttempts: number;
  readonly backoff: BackoffPolicy;
  readonly metrics: ConsumerMetrics;
  /** Bound to the handler. */
  readonly log: Logger;
  /** Identifies this worker in registry rows. */
  readonly owner: string;
  /**
   * Makes a claimed event what the handler sees (consumers/decode.ts `eventOpener`: sealed data
   * opened with its subject's key). Runs before the application's transaction, under the lease, so
   * no registry connection or watermark lock is held while a key is fetched — and an embedded
   * process, whose one PGlite session the transaction holds, can fetch it at all. It throws as a
   * handler would (PoisonError, InfrastructureError), with the same outcomes.
   */
  readonly open?: (event: ConsumedEvent) => Promise<ConsumedEvent>;
  /** Test hook: runs at each crash point (a test child blocks here and is killed). */
  readonly crashPoint?: CrashHook;
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
  /** The attempt's trace context (tracing on). */
  readonly trace: TraceContext | undefined;
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

/** A claimed event in one application (a group of one on the per-event path). */
interface Member {
  readonly claim: Claim;
  readonly event: ConsumedEvent;
  /** The message as received: kept in the registry when the event is parked. */
  readonly raw: RawMessage;
  /** Where its crash points report it. */
  readonly info: CrashPointInfo;
  /** The event as the handler sees it (`open`), settled before the transaction began. */
  readonly opened?: Promise<ConsumedEvent>;
}

/** What one application recorded for a member. */
interface Recorded {
  readonly member: Member;
  readonly state: ClaimFinish["state"];
  readonly parkedBehind?: ClaimFinish["parkedBehind"];
}

const REFUSED: GroupOutcome = Object.freeze({ type: "refused" });
const GROUP_FINISHED: GroupOutcome = Object.freeze({ type: "finished" });
const RECORDED: AttemptResult = Object.freeze({ type: "recorded" });
/** Groups running at once: one claims while another applies. */
const PARALLEL_GROUPS = 2;

/** Processes one handler's messages, one attempt at a time (the scheduler decides when). */
export class EventProcessor implements MessageProcessor {
  readonly name: string;
  private readonly policy: AttemptPolicy;
  /** Present when the handler applies groups (`handleBatch`). */
  private readonly groups: GroupQueue<GroupItem, GroupOutcome> | undefined;
  /** The handler parks an aggregate's later events behind a dead letter (C8); false for `skip`. */
  private readonly parks: boolean;

  constructor(
    private readonly options: EventProcessorOptions,
    private readonly leases: LeaseKeeper,
  ) {
    this.name = options.handler.name;
    this.policy = { maxAttempts: options.maxAttempts, backoff: options.backoff };
    this.parks = (options.handler.onDeadLetter ?? "park") === "park";
    if (options.handler.handleBatch !== undefined && (options.maxGroupSize ?? 64) > 1) {
      this.groups = new GroupQueue((items) => this.applyGroup(items), options.maxGroupSize ?? 64, PARALLEL_GROUPS);
    }
  }

  /** True when the handler's filters leave the event out; counted as `filtered`, never claimed. */
  ignores({ event }: IncomingMessage): boolean {
    if (event === undefined || wants(this.options.handler, event.aggregateType, event.eventType)) return false;
    this.options.metrics.processed.inc({ handler: this.name, outcome: "filtered" });
    return true;
  }

  /**
   * One attempt: claim (in a group when the handler has one), then do what `nextStep` says. A
   * traced event's attempt is a `tidemark.consume` span in its command's trace (the Kafka header
   * names the relay's produce span), with `tidemark.claim`, `tidemark.handle` and `tidemark.done`
   * inside. With tracing off, none of the span's inputs (headers, attributes) is built.
   */
  attempt(message: IncomingMessage, afterLeaseLost: boolean): Promise<AttemptResult> {
    if (!tracingEnabled()) return this.attemptOnce(message, afterLeaseLost);
    const { event, raw } = message;
    return inSpanOf(headerText(raw, "traceparent") ?? event?.traceparent, headerText(raw, "tracestate") ?? event?.tracestate, "tidemark.consume", () => this.attemptOnce(message, afterLeaseLost), {
      kind: SpanKind.CONSUMER,
      attributes: {
        "tidemark.handler": this.name,
        "tidemark.event_id": event?.eventId ?? "",
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": raw.topic,
        "messaging.kafka.offset": raw.offset,
      },
    });
  }

  private async attemptOnce(message: IncomingMessage, afterLeaseLost: boolean): Promise<AttemptResult> {
    const request = this.claimRequest(message, afterLeaseLost, false);
    const { event } = message;
    if (this.groups !== undefined && event !== undefined && !afterLeaseLost) {
      const grouped = await infra("claim", () => this.groups!.submit({ request, event, raw: message.raw, trace: activeContext() }));
      if (grouped.type === "finished") return RECORDED;
      if (grouped.type === "claimed") return this.afterClaim({ type: "claimed", claim: grouped.claim }, message, grouped.claimSentAt);
      // Refused in the group: the single claim below finds out why (held, ordering, finished).
    }
    const claimSentAt = performance.now();
    const answer = await infra("claim", () => inSpan("tidemark.claim", () => claimEvent(this.options.db, request)));
    return this.afterClaim(answer, message, claimSentAt);
  }

  /**
   * One attempt of a replay an operator asked for (consumers/replayer.ts): the same claim — which
   * may also take the `replay_requested` row, attempts counting from 1 — lease, fence, ordering
   * guard and parking check as a delivery, always on the per-event path.
   */
  async replay(message: IncomingMessage, afterLeaseLost: boolean): Promise<AttemptResult> {
    const request = this.claimRequest(message, afterLeaseLost, true);
    const claimSentAt = performance.now();
    const answer = await infra("claim", () => claimEvent(this.options.db, request));
    return this.afterClaim(answer, message, claimSentAt);
  }

  private claimRequest({ raw, event, poison }: IncomingMessage, countResume: boolean, replay: boolean): ClaimRequest {
    const holder = { handler: this.name, owner: this.options.owner, leaseMs: this.options.leaseMs, countResume, replay };
    // A decoded event that cannot be read (E3) is registered as the event it is, so its aggregate
    // parks behind it (C8) as behind any other dead letter.
    const named = event ?? poison?.event;
    if (named === undefined) {
      // Undecodable: registered under what its headers say, to be dead-lettered once.
      return {
        ...holder,
        eventId: poisonEventId(raw),
        aggregateType: headerText(raw, "aggregate_type") ?? "",
        aggregateId: headerText(raw, "aggregate_id") ?? "",
        seq: 0,
        globalPosition: null,
        eventType: headerText(raw, "event_type") ?? "",
        commandId: null,
      };
    }
    return {
      ...holder,
      eventId: named.eventId,
      aggregateType: named.aggregateType,
      aggregateId: named.aggregateId,
      seq: named.seq,
      globalPosition: named.globalPosition > 0 ? named.globalPosition : null,
      eventType: named.eventType,
      commandId: named.metadata["command_id"] ?? null,
    };
  }

  private async afterClaim(answer: ClaimOutcome, message: IncomingMessage, claimSentAt: number): Promise<AttemptResult> {
    const { options } = this;
    const undecodable = message.event === undefined ? describeFailure(message.poison) : undefined;
    const step = nextStep({ type: "claim-answered", answer, undecodable }, this.policy);
    if (step.type === "acknowledge") {
      options.metrics.processed.inc({ handler: this.name, outcome: "duplicate" });
      return RECORDED;
    }
    if (step.type === "wait") return { type: "again", ms: step.ms };
    const { claim } = step;
    if (claim.claimedFrom === "processing") {
      options.metrics.leaseTakeovers.inc({ handler: this.name });
      options.log.info({ eventId: claim.eventId, attempts: claim.attempts }, "took over an expired lease");
    }
    const { raw } = message;
    const info: CrashPointInfo = { topic: raw.topic, partition: raw.partition, offset: raw.offset, eventId: claim.eventId };
    await options.crashPoint?.("after-claim", info);
    if (step.type === "dead-letter") return this.deadLetter(claim, raw, step.reason, step.cause);
    // Only a decoded message is applied: an undecodable one was dead-lettered above.
    return this.applyOne({ claim, event: message.event!, raw, info }, raw, claimSentAt);
  }

  /** Applies one claimed event; a failure is classified and `nextStep` says what follows. */
  private async applyOne(member: Member, raw: RawMessage, claimSentAt: number): Promise<AttemptResult> {
    const { options } = this;
    const { claim, event } = member;
    const lease = this.leases.keep([claim], claimSentAt, claim.eventId);
    const context = handlerContext(claim, event, lease.signal, options.log);
    try {
      const opened = await this.opened([member], lease);
      const recorded = await this.applyTogether(opened, [activeContext()], lease, async ([fresh], tx) => {
        const started = performance.now();
        try {
          await lease.race(options.handler.handle(fresh!, tx, context));
        } finally {
          options.metrics.handlerSeconds.observe({ handler: this.name }, (performance.now() - started) / 1000);
        }
      });
      this.count(recorded);
      return RECORDED;
    } catch (e) {
      return this.afterFailure(member, raw, e);
    } finally {
      lease.stop();
    }
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
    const traces = items.map((i) => i.trace);
    const claims = await inBatchSpan("tidemark.claim", traces, () => claimEvents(options.db, this.name, options.owner, options.leaseMs, items.map((i) => i.request)), { "tidemark.group.size": items.length });
    const indexOf = new Map(items.map((item, i) => [item.event.eventId, i]));
    const outcomes: GroupOutcome[] = items.map((item) => {
      const claim = claims.get(item.event.eventId);
      return claim === undefined ? REFUSED : { type: "claimed", claim, claimSentAt };
    });
    const joining = items
      .map((item) => ({ item, claim: claims.get(item.event.eventId) }))
      .filter((m): m is { item: GroupItem; claim: Claim } => m.claim !== undefined && this.joinsGroup(m.claim))
      // Each aggregate's events in seq order (one runtime runs one event per aggregate at a time;
      // an old generation's redelivery may add another).
      .sort((a, b) => compareKeys(a.item.event, b.item.event) || a.item.event.seq - b.item.event.seq);
    if (joining.length === 0) return outcomes;
    const members: Member[] = joining.map(({ item, claim }) => ({
      claim,
      event: item.event,
      raw: item.raw,
      info: { topic: item.raw.topic, partition: item.raw.partition, offset: item.raw.offset, eventId: claim.eventId, groupSize: joining.length },
    }));
    await this.crashAt("after-claim", members);

    const held = members.map((m) => m.claim);
    const groupTimeoutMs = options.groupTimeoutMs ?? 2000;
    const lease = this.leases.keep(held, claimSentAt, `the group of ${held.length}`);
    const budget = setTimeout(
      () => lease.abort(new Error(`${this.name}: the group of ${held.length} took longer than ${groupTimeoutMs} ms`)),
      groupTimeoutMs,
    );
    const started = performance.now();
    try {
      const memberTraces = joining.map(({ item }) => item.trace);
      const opened = await this.opened(members, lease);
      const recorded = await this.applyTogether(opened, memberTraces, lease, (fresh, tx) => lease.race(options.handler.handleBatch!(fresh, tx, { signal: lease.signal, log: options.log })));
      options.metrics.handlerSeconds.observe({ handler: this.name }, (performance.now() - started) / 1000);
      options.metrics.groupSize.observe({ handler: this.name }, members.length);
      this.count(recorded);
      for (const { member } of recorded) outcomes[indexOf.get(member.claim.eventId)!] = GROUP_FINISHED;
    } catch (e) {
      // Rolled back as a whole: the per-event path retries each member with the claim it holds,
      // and counts, retries or dead-letters exactly as it would have without the group.
      options.metrics.groupFallbacks.inc({ handler: this.name });
      options.log.info({ err: e, events: members.length }, "group rolled back; applying its events one by one");
    } finally {
      lease.stop();
      clearTimeout(budget);
    }
    return outcomes;
  }

  /**
   * The members with their events being opened (`open`), once every opening has settled, under the
   * lease: the transaction that follows takes a fresh member's result without waiting on anything.
   */
  private async opened(members: readonly Member[], lease: KeptLease): Promise<readonly Member[]> {
    const open = this.options.open;
    if (open === undefined) return members;
    const opening = members.map((m) => ({ ...m, opened: open(m.event) }));
    await lease.race(Promise.allSettled(opening.map((m) => m.opened)));
    return opening;
  }

  /** A claim applies with its group when it is plain: not a takeover or a due retry (logged and counted one by one), not exhausted. */
  private joinsGroup(claim: Claim): boolean {
    if (claim.claimedFrom !== null && claim.claimedFrom !== "self") return false;
    return nextStep({ type: "claim-answered", answer: { type: "claimed", claim } }, this.policy).type === "apply";
  }

  /**
   * The one transaction of every application (C1, C2): locks the members' watermarks in key order,
   * marks those at or below theirs skipped_stale, runs `sideEffect` on the fresh ones (each
   * aggregate's in seq order), and records every outcome — refused, side effect included, unless
   * every lease is still held. The crash points are reached for the fresh members.
   */
  private async applyTogether(
    members: readonly Member[],
    traces: ReadonlyArray<TraceContext | undefined>,
    lease: KeptLease,
    sideEffect: (fresh: ConsumedEvent[], tx: Transaction<ConsumerDatabase>) => Promise<void>,
  ): Promise<Recorded[]> {
    return this.options.db.transaction().execute(async (tx) => {
      const applied = await lockWatermarks(tx, this.name, members.map((m) => m.event));
      // Under the watermark locks, so a replay request (which takes them too) and this check
      // cannot cross: a parked event is either in the replay or queued behind it (C8).
      const before = this.parks ? await unresolvedBefore(tx, this.name, members.map((m) => m.event)) : undefined;
      const recorded = members.map((member): Recorded => {
        const appliedSeq = applied.get(aggregateKey(member.event.aggregateType, member.event.aggregateId)) ?? 0;
        const found = before?.get(member.event.eventId);
        const step = nextStep(
          { type: "watermark-read", seq: member.event.seq, appliedSeq, blockedBy: found?.blocker?.eventId, replayingBefore: found?.replaying?.eventId },
          this.policy,
        );
        switch (step.type) {
          case "apply":
            return { member, state: "done" };
          case "skip-stale":
            return { member, state: "skipped_stale" };
          case "park":
            return { member, state: "parked", parkedBehind: found!.blocker };
          case "queue-replay":
            return { member, state: "replay_requested", parkedBehind: found!.replaying };
        }
      });
      const fresh = recorded.filter((r) => r.state === "done").map((r) => r.member);
      await this.crashAt("before-side-effect", fresh);
      // The handler writes through a fenced transaction: a statement after the lease is lost fails
      // instead of running on its own once the rollback released the connection (C1).
      // A fresh member's opened event is taken here, where a handler's failure would be: it fails the
      // application as the handler would; a stale or parked member's is never looked at.
      if (fresh.length > 0) await inBatchSpan("tidemark.handle", traces, async () => sideEffect(await Promise.all(fresh.map((m) => m.opened ?? m.event)), fencedTransaction(tx, lease.signal)), { "tidemark.handler": this.name });
      await this.crashAt("after-side-effect", fresh);
      if (lease.signal.aborted) throw lease.signal.reason;
      await this.crashAt("before-done", fresh);
      await inBatchSpan("tidemark.done", traces, () =>
        finishClaims(
          tx,
          recorded.map((r): ClaimFinish => (r.state === "parked" || r.state === "replay_requested" ? { claim: r.member.claim, state: r.state, message: storedMessage(r.member.raw), parkedBehind: r.parkedBehind } : { claim: r.member.claim, state: r.state })),
        ),
      );
      return recorded;
    });
  }

  /** After a failed application: claim again, pause, dead-letter or schedule the retry. */
  private async afterFailure({ claim, event }: Member, raw: RawMessage, e: unknown): Promise<AttemptResult> {
    const { options } = this;
    const at = new Date();
    const cause = describeFailure(e);
    const failure = isLeaseLostError(e) ? "lease-lost" : classifyFailure(e);
    const step = nextStep({ type: "attempt-failed", attempts: claim.attempts, failure, cause, at }, this.policy);
    switch (step.type) {
      case "claim-again":
        options.metrics.leaseLost.inc({ handler: this.name });
        options.log.warn({ ...eventFields(event), fence: claim.fence }, "lease lost; the side effect was rolled back");
        return { type: "again", ms: 0, leaseLost: true };
      case "pause":
        throw new InfrastructureError("handler transaction", { cause: e });
      case "dead-letter":
        return this.deadLetter(claim, raw, step.reason, step.cause);
      case "retry": {
        // The registry adds the delay to its own clock (weakness 10): the worker's clock sets no due time.
        const delayMs = step.retryAt.getTime() - at.getTime();
        const scheduled = await infra("schedule retry", () => scheduleRetry(options.db, claim, delayMs, cause));
        if (!scheduled) return { type: "again", ms: 0 };
        options.metrics.retries.inc({ handler: this.name });
        options.log.info({ ...eventFields(event), attempt: claim.attempts, delayMs, err: e }, "attempt failed; retry scheduled");
        return { type: "again", ms: delayMs };
      }
    }
  }

  /** Produces the dead letter, then records dead_lettered (a crash between repeats the letter, never loses it). */
  private async deadLetter(claim: Claim, raw: RawMessage, reason: DeadLetterReason, cause: string): Promise<AttemptResult> {
    const { options } = this;
    await infra(
      "dead-letter produce",
      () => options.deadLetters.publish({ handler: this.name, eventId: claim.eventId, reason, cause, attempts: claim.attempts, message: raw }),
    );
    const marked = await infra("mark dead-lettered", () => markDeadLettered(options.db, claim, cause, storedMessage(raw)));
    if (!marked) return { type: "again", ms: 0 };
    options.metrics.deadLetters.inc({ handler: this.name, reason });
    options.metrics.processed.inc({ handler: this.name, outcome: "dead_lettered" });
    const traceId = traceIdOf(headerText(raw, "traceparent"));
    options.log.warn({ eventId: claim.eventId, ...(traceId === undefined ? {} : { traceId }), reason, cause, offset: raw.offset, to: options.deadLetters.where }, "event dead-lettered");
    return RECORDED;
  }

  /** Counts the recorded outcomes of an application. */
  private count(recorded: readonly Recorded[]): void {
    const { metrics, log } = this.options;
    for (const { member, state, parkedBehind } of recorded) {
      metrics.processed.inc({ handler: this.name, outcome: state });
      if (state === "skipped_stale") {
        metrics.skippedStale.inc({ handler: this.name });
        log.info({ ...eventFields(member.event), seq: member.event.seq }, "skipped a stale event (a higher seq of its aggregate was applied)");
      } else if (state === "parked" || state === "replay_requested") {
        metrics.parked.inc({ handler: this.name, state });
        log.info({ ...eventFields(member.event), seq: member.event.seq, behind: parkedBehind?.eventId }, state === "parked" ? "parked behind an unresolved earlier event of its aggregate" : "queued behind the replay of an earlier event of its aggregate");
      }
    }
  }

  private async crashAt(point: CrashPoint, members: readonly Member[]): Promise<void> {
    const hook = this.options.crashPoint;
    if (hook !== undefined) for (const member of members) await hook(point, member.info);
  }
}

/** What `handle` knows about its attempt; a child logger per event costs more than most handlers, so it is made on first use. */
function handlerContext(claim: Claim, event: ConsumedEvent, signal: AbortSignal, log: Logger): HandlerContext {
  let eventLog: Logger | undefined;
  return {
    attempt: claim.attempts,
    signal,
    get log() {
      return (eventLog ??= log.child(eventFields(event)));
    },
    traceparent: event.traceparent,
  };
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

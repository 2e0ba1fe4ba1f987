/**
 * One lease term of the active relay: read committed events in global order (a bounded number of
 * batches ahead), produce each batch to Kafka until it is acknowledged, then move the durable
 * checkpoint over the acknowledged prefix under the lease's fencing token (docs/CONTRACT.md R1, R4, R5).
 * Nothing is ever skipped: a batch is retried until Kafka takes it, an unreadable event blocks.
 */
import { performance } from "node:perf_hooks";
import type { Kysely } from "kysely";
import { type Logger, type RelayTables, sleep, sleepUntilWoken, SpanKind, startMessageSpans } from "../core/index.js";
import { AckTracker } from "./ack-tracker.js";
import { PatientReader, type EventReader, type ReadBatch } from "./event-reader.js";
import type { Publisher, RoutedMessage } from "./kafka-publisher.js";
import type { RelayLease } from "./relay-lease.js";
import type { RelayMetrics } from "./relay-metrics.js";
import { advanceCheckpoint, readCheckpoint } from "./relay-repository.js";
import type { TopicRouter } from "./topic-router.js";

export type { ReadBatch };

/** Test hooks at the named steps of a batch; a hook that throws or never returns simulates a crash. */
export interface RelayHooks {
  /** After a batch was read from the log and S3, before it is produced. */
  readonly afterRead?: (batch: ReadBatch) => Promise<void> | void;
  /** After Kafka acknowledged a batch, before the checkpoint moves over it. */
  readonly afterProduce?: (batch: ReadBatch) => Promise<void> | void;
  /** After the checkpoint moved over a batch. */
  readonly afterCheckpoint?: (batch: ReadBatch, checkpoint: number) => Promise<void> | void;
}

/** Why a term ended ("stalled": a step hung, see {@link RelayPump.oldestPending}, and the term was given up). */
export type TermOutcome = "stopped" | "fenced" | "lease-lost" | "stalled";

/** A step of a term that has not settled yet. */
export interface PendingStep {
  readonly what: string;
  readonly since: number;
}

/** One term's read-ahead queue: a term left behind by a hung step keeps its own. */
interface TermQueue {
  batches: ReadBatch[];
  sending: boolean;
  readonly listeners: Set<() => void>;
}


/** What a term needs. */
export interface PumpDeps {
  readonly db: Kysely<RelayTables>;
  readonly name: string;
  readonly reader: EventReader;
  readonly publisher: Publisher;
  readonly router: TopicRouter;
  readonly lease: RelayLease;
  readonly metrics: RelayMetrics;
  readonly log: Logger;
  readonly hooks: RelayHooks;
  /** Batches read ahead of the one being produced. */
  readonly readAhead: number;
  /** Creates the topics (retried until it succeeds or the term ends). */
  readonly ensureTopics: () => Promise<void>;
}

/** Progress counters, for status and periodic logs. */
export interface PumpProgress {
  published: number;
  checkpoint: number;
  blockedAt: number | undefined;
}

const MAX_BACKOFF_MS = 5000;
/** A queue wait ends when the queue changes or the term does; this only bounds the timer. */
const QUEUE_WAIT_MS = 60_000;

/** Runs lease terms; one instance per relay process. */
export class RelayPump {
  readonly progress: PumpProgress = { published: 0, checkpoint: 0, blockedAt: undefined };
  private readonly pending = new Set<PendingStep>();

  constructor(private readonly deps: PumpDeps) {}

  /**
   * The oldest step (a Kafka call, a checkpoint write, topic creation, a test hook) still waiting
   * for an answer, if any. Reading events is not a step here: the reader retries and reports an
   * unreadable event itself, and S3 requests have their own timeout.
   */
  oldestPending(): PendingStep | undefined {
    let oldest: PendingStep | undefined;
    for (const step of this.pending) if (oldest === undefined || step.since < oldest.since) oldest = step;
    return oldest;
  }

  /**
   * Publishes until `stop` (graceful: the batch in flight is finished and checkpointed) or `term`
   * (the lease is gone: stop at once, the checkpoint would be refused anyway) aborts, or until a
   * checkpoint write is refused because another relay holds the lease.
   */
  async run(stop: AbortSignal, term: AbortSignal): Promise<TermOutcome> {
    const { deps } = this;
    const halt = AbortSignal.any([stop, term]);
    const ended = (): TermOutcome => (term.aborted ? "lease-lost" : "stopped");
    // Steps a term left behind (it stalled) are not this term's.
    this.pending.clear();

    const checkpoint = await this.retrying("reading the checkpoint", () => this.step("reading the checkpoint", () => readCheckpoint(deps.db, deps.name)), halt);
    if (checkpoint === undefined) return ended();
    const start = checkpoint.value;
    if ((await this.retrying("creating topics", () => this.step("creating topics", deps.ensureTopics), halt)) === undefined) return ended();

    this.progress.checkpoint = start.position;
    deps.metrics.checkpoint.set(start.position);
    deps.log.info({ relay: deps.name, token: deps.lease.token, checkpoint: start.position }, "relay publishing from the checkpoint");

    const queue: TermQueue = { batches: [], sending: false, listeners: new Set() };
    const readerStop = new AbortController();
    const readerSignal = AbortSignal.any([halt, readerStop.signal]);
    const reading = this.readLoop(queue, start.position, readerSignal);
    try {
      return await this.sendLoop(queue, new AckTracker(start.position), stop, term);
    } finally {
      readerStop.abort();
      await reading;
    }
  }

  private async readLoop(queue: TermQueue, from: number, signal: AbortSignal): Promise<void> {
    const { deps } = this;
    let cursor = from;
    const reader = new PatientReader({
      reader: deps.reader,
      log: deps.log,
      label: "relay",
      onUnreadable: (e) => {
        deps.metrics.readErrors.inc({ reason: e.reason });
        deps.metrics.blocked.set(1);
        deps.metrics.blockedPosition.set(e.position);
        this.progress.blockedAt = e.position;
      },
      onUnblocked: () => {
        this.progress.blockedAt = undefined;
        deps.metrics.blocked.set(0);
        deps.metrics.blockedPosition.set(0);
      },
    });
    // A block outlives a lease term: the next term clears it once the event reads again.
    reader.blockedAt = this.progress.blockedAt;
    while (!signal.aborted) {
      // Bounded in-flight work: at most readAhead batches wait behind the one being produced.
      if (queue.batches.length + (queue.sending ? 1 : 0) > deps.readAhead) {
        await waitQueue(queue, signal);
        continue;
      }
      const readStarted = Date.now();
      const batch = await reader.step(cursor, signal);
      if (batch === undefined) continue;
      // The batch was read at once; each traced event gets a read span in its own command's trace.
      startMessageSpans("tidemark.relay.read", SpanKind.INTERNAL, batch.messages, eventAttributes, readStarted).end();
      await this.step("the afterRead hook", async () => deps.hooks.afterRead?.(batch));
      if (signal.aborted) return;
      queue.batches.push(batch);
      cursor = batch.last;
      notifyQueue(queue);
    }
  }

  private async sendLoop(queue: TermQueue, tracker: AckTracker, stop: AbortSignal, term: AbortSignal): Promise<TermOutcome> {
    const { deps } = this;
    const halt = AbortSignal.any([stop, term]);
    for (;;) {
      if (term.aborted) return "lease-lost";
      if (stop.aborted) return "stopped";
      const batch = queue.batches.shift();
      if (batch === undefined) {
        await waitQueue(queue, halt);
        continue;
      }
      queue.sending = true;
      tracker.register({ after: batch.after, last: batch.last });
      const topics = batch.messages.map((m) => deps.router.topicFor(m.aggregateType, m.kind));
      // Each traced event's produce span; its Kafka header names that span, so the consumer continues the trace.
      const spans = startMessageSpans(
        "tidemark.relay.produce",
        SpanKind.PRODUCER,
        batch.messages,
        (m, i) => ({ ...eventAttributes(m), "messaging.system": "kafka", "messaging.operation.type": "send", "messaging.destination.name": topics[i]! }),
      );
      const messages: RoutedMessage[] = batch.messages.map((m, i) => ({
        topic: topics[i]!,
        key: m.key,
        value: m.value,
        headers: spans.headers[i]!,
      }));
      const acked = await this.publishUntilAcked(batch, messages, stop, term);
      spans.end(acked ? undefined : new Error("the relay's term ended before Kafka acknowledged the batch"));
      if (!acked) return term.aborted ? "lease-lost" : "stopped";
      this.recordPublished(batch, messages);
      await this.step("the afterProduce hook", async () => deps.hooks.afterProduce?.(batch));
      if (term.aborted) return "lease-lost";

      const prefix = tracker.ack({ after: batch.after, last: batch.last });
      const moved = await this.checkpointUntilDone(prefix, term);
      if (moved === "fenced") {
        deps.log.warn({ relay: deps.name, position: prefix }, "checkpoint refused: another relay holds the lease; stepping down");
        return "fenced";
      }
      if (moved === "lease-lost") return "lease-lost";
      this.progress.checkpoint = prefix;
      deps.metrics.checkpoint.set(prefix);
      await this.step("the afterCheckpoint hook", async () => deps.hooks.afterCheckpoint?.(batch, prefix));
      // The batch is done only now: with readAhead 0, reading, producing and checkpointing alternate.
      queue.sending = false;
      notifyQueue(queue);
    }
  }

  /** Sends one batch until Kafka acknowledges it; false when the term ends first. */
  private async publishUntilAcked(batch: ReadBatch, messages: RoutedMessage[], stop: AbortSignal, term: AbortSignal): Promise<boolean> {
    const { deps } = this;
    const halt = AbortSignal.any([stop, term]);
    const id = `${batch.after}-${batch.last}`;
    let backoff = 100;
    let failures = 0;
    for (;;) {
      // R5: only send while the lease certainly outlives the request, so a relay that lost its
      // lease has no request in flight by the time a standby can take over.
      while (deps.lease.remainingMs() < deps.publisher.maxSendMs) {
        if (halt.aborted || deps.lease.token === undefined) return false;
        await deps.lease.waitChange(100, halt);
      }
      if (halt.aborted) return false;
      try {
        await this.step("a produce call", () => deps.publisher.publish({ id, messages }));
        if (failures > 0) deps.log.info({ batch: id, failures }, "Kafka acknowledged the batch after failures");
        return true;
      } catch (e) {
        failures += 1;
        deps.metrics.produceErrors.inc();
        if (failures === 1 || failures % 10 === 0) {
          deps.log.warn({ err: e, batch: id, events: messages.length, failures }, "producing to Kafka failed; retrying the same batch");
        }
        await sleep(backoff, halt);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      }
    }
  }

  private async checkpointUntilDone(position: number, term: AbortSignal): Promise<"moved" | "fenced" | "lease-lost"> {
    const { deps } = this;
    let backoff = 100;
    for (;;) {
      const token = deps.lease.token;
      if (token === undefined || term.aborted) return "lease-lost";
      try {
        return (await this.step("writing the checkpoint", () => advanceCheckpoint(deps.db, deps.name, token, position))) ? "moved" : "fenced";
      } catch (e) {
        deps.log.warn({ err: e, position }, "writing the checkpoint failed; retrying");
        await sleep(backoff, term);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      }
    }
  }

  private recordPublished(batch: ReadBatch, messages: readonly RoutedMessage[]): void {
    const { metrics, lease } = this.deps;
    const ackedAt = Date.now() + lease.clockOffsetMs;
    const perTopic = new Map<string, number>();
    for (const m of messages) perTopic.set(m.topic, (perTopic.get(m.topic) ?? 0) + 1);
    for (const [topic, n] of perTopic) metrics.published.inc({ topic }, n);
    metrics.batchSize.observe(messages.length);
    for (const m of batch.messages) metrics.publishLatency.observe(Math.max(0, ackedAt - m.committedAt.getTime()) / 1000);
    this.progress.published += messages.length;
  }

  /** Runs `action` until it succeeds ({ value }) or `signal` aborts (undefined). */
  private async retrying<T>(what: string, action: () => Promise<T>, signal: AbortSignal): Promise<{ value: T } | undefined> {
    let backoff = 100;
    while (!signal.aborted) {
      try {
        return { value: await action() };
      } catch (e) {
        this.deps.log.warn({ err: e }, `${what} failed; retrying`);
        await sleep(backoff, signal);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      }
    }
    return undefined;
  }

  /** Runs `work` as a pending step (see {@link oldestPending}). */
  private async step<T>(what: string, work: () => Promise<T>): Promise<T> {
    const step: PendingStep = { what, since: performance.now() };
    this.pending.add(step);
    try {
      return await work();
    } finally {
      this.pending.delete(step);
    }
  }
}

/** Waits until the queue changes or `signal` aborts. */
function waitQueue(queue: TermQueue, signal: AbortSignal): Promise<void> {
  return sleepUntilWoken(queue.listeners, QUEUE_WAIT_MS, signal);
}

function notifyQueue(queue: TermQueue): void {
  for (const listener of [...queue.listeners]) listener();
}

/** Span attributes of a published event. */
function eventAttributes(m: ReadBatch["messages"][number]): Record<string, string | number> {
  return { "tidemark.event_id": m.eventId, "tidemark.aggregate_type": m.aggregateType, "tidemark.global_position": m.position };
}

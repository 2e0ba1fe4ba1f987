/**
 * Replays what an operator asked for (docs/CONSUMERS.md "Dead letters, parking and redrive",
 * docs/CONTRACT.md C9): the server's ReplayDeadLetters marks registry rows `replay_requested`; the
 * runtime that owns the handler polls for them and runs each through the event processor's replay
 * attempt — the same claim, lease, fence, ordering guard and parking check as a delivery — one
 * aggregate's events in seq order, several aggregates at once. A replay that fails again retries
 * and dead-letters like any event; one left unfinished by a crash (a retry due, an expired lease)
 * is picked up again by the next poll of any runtime of the handler.
 */
import { sql, type Kysely } from "kysely";
import { sleep, type ConsumerDatabase, type Logger, type StoredMessage, type Upcasters, waitingCounts } from "../core/index.js";
import { backoffDelay, type BackoffPolicy } from "./backoff.js";
import { decode, fromStoredMessage, type IncomingMessage } from "./decode.js";
import { InfrastructureError } from "./failures.js";
import type { ConsumerMetrics } from "./metrics.js";
import type { AttemptResult } from "./partition-scheduler.js";
import { aggregateKey } from "./registry.js";

/** The port the replayer runs events through (the event processor implements it). */
export interface ReplayProcessor {
  replay(message: IncomingMessage, afterLeaseLost: boolean): Promise<AttemptResult>;
}

/** What a replayer needs. */
export interface ReplayerOptions {
  readonly handler: string;
  readonly db: Kysely<ConsumerDatabase>;
  /** How often the registry is asked for requested replays (and the waiting counts refreshed). */
  readonly pollMs: number;
  /** Aggregates replayed at once. */
  readonly concurrency: number;
  readonly metrics: ConsumerMetrics;
  /** The handler's upcasters: a replayed event is decoded as a delivered one is (E3). */
  readonly upcasters?: Upcasters;
  readonly log: Logger;
}

const OUTAGE_BACKOFF: BackoffPolicy = Object.freeze({ baseMs: 100, maxMs: 5000, jitter: 0.2 });
/** Rows read per poll. */
const POLL_LIMIT = 500;

interface ReplayRow {
  event_id: string;
  aggregate_type: string;
  aggregate_id: string;
  seq: number;
  message: StoredMessage | null;
}

/** Polls one handler's registry rows for requested replays and runs them until stopped. */
export class Replayer {
  private readonly stop$ = new AbortController();
  private readonly running = new Map<string, Promise<void>>();
  private loop: Promise<void> | undefined;

  constructor(
    private readonly options: ReplayerOptions,
    private readonly processor: ReplayProcessor,
  ) {}

  /** Starts polling. */
  start(): void {
    this.loop ??= this.run();
  }

  /** Stops polling; running replays finish their current attempt (an unfinished one is picked up later). */
  async stop(): Promise<void> {
    this.stop$.abort();
    await this.loop;
    await Promise.all(this.running.values());
  }

  private async run(): Promise<void> {
    const { options } = this;
    const signal = this.stop$.signal;
    let failures = 0;
    while (!signal.aborted) {
      try {
        await this.poll();
        failures = 0;
        await sleep(options.pollMs, signal);
      } catch (e) {
        failures += 1;
        if (failures === 1 || failures % 20 === 0) options.log.warn({ err: e }, "could not read the requested replays; retrying");
        await sleep(backoffDelay(failures, OUTAGE_BACKOFF), signal);
      }
    }
  }

  /** One poll: refresh the waiting counts, then start the aggregates with requested replays that are not running. */
  private async poll(): Promise<void> {
    const { options } = this;
    const [counts] = await waitingCounts(options.db, [options.handler]);
    const waiting = { dead_lettered: counts!.deadLettered, parked: counts!.parked, replay_requested: counts!.replayRequested };
    for (const [state, n] of Object.entries(waiting)) options.metrics.waiting.set({ handler: options.handler, state }, n);
    if (this.running.size >= options.concurrency) return;
    // Requested replays, and replays a crash or a failure left unfinished: a due retry, an expired lease.
    const { rows } = await sql<ReplayRow>`
      select event_id, aggregate_type, aggregate_id, seq, message from processed_events
      where handler = ${options.handler} and (state = 'replay_requested'
        or (replay_requested_at is not null and ((state = 'retry_scheduled' and next_attempt_at <= clock_timestamp())
          or (state = 'processing' and lease_expires_at <= clock_timestamp()))))
      order by aggregate_type, aggregate_id, seq
      limit ${POLL_LIMIT}::integer`.execute(options.db);
    const byAggregate = new Map<string, ReplayRow[]>();
    for (const row of rows) {
      const key = aggregateKey(row.aggregate_type, row.aggregate_id);
      if (this.running.has(key)) continue;
      const list = byAggregate.get(key);
      if (list === undefined) byAggregate.set(key, [row]);
      else list.push(row);
    }
    for (const [key, list] of byAggregate) {
      if (this.running.size >= options.concurrency || this.stop$.signal.aborted) break;
      const task = this.replayAggregate(list).finally(() => this.running.delete(key));
      this.running.set(key, task);
    }
  }

  /** One aggregate's replays, in seq order, each until its outcome is recorded. */
  private async replayAggregate(rows: readonly ReplayRow[]): Promise<void> {
    for (const row of rows) {
      if (this.stop$.signal.aborted) return;
      if (row.message === null) {
        this.options.log.warn({ eventId: row.event_id }, "a replay was requested for an event whose message the registry did not keep; skipped");
        continue;
      }
      if (!(await this.untilRecorded(decode(fromStoredMessage(row.message), this.options.upcasters)))) return;
      this.options.metrics.replayed.inc({ handler: this.options.handler });
    }
  }

  /** Attempts one replay until its outcome is recorded (true) or the replayer stops (false). */
  private async untilRecorded(message: IncomingMessage): Promise<boolean> {
    const { options } = this;
    const signal = this.stop$.signal;
    let outages = 0;
    let leaseLost = false;
    for (;;) {
      if (signal.aborted) return false;
      let result: AttemptResult;
      try {
        result = await this.processor.replay(message, leaseLost);
        leaseLost = result.type === "again" && result.leaseLost === true;
        outages = 0;
      } catch (e) {
        outages += 1;
        if (e instanceof InfrastructureError) options.metrics.infrastructureFailures.inc({ handler: options.handler, stage: `replay ${e.message}` });
        if (outages === 1 || outages % 20 === 0) options.log.warn({ err: e, offset: message.raw.offset }, "a replay attempt failed for want of infrastructure; retrying");
        await sleep(backoffDelay(outages, OUTAGE_BACKOFF), signal);
        continue;
      }
      if (result.type === "recorded") return true;
      await sleep(result.ms, signal);
    }
  }
}

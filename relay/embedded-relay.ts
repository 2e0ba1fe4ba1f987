/**
 * The relay's role in the embedded mode (one process, PGlite and local files, no Kafka): instead
 * of publishing the commit log to Kafka it serves it to the consumers of its own process, through
 * the consumers' message-source port, as one ordered partition per consumer group whose offsets
 * are global positions. Events are read exactly as the Kafka relay reads them (EventReader):
 * committed rows in position order, so nothing is skipped (R1) and each aggregate's events come in
 * seq order (R2); bytes from the object store, turned into the same value and headers (R3); woken
 * by commits, polling only as the fallback (R6); an unreadable event blocks with an alarm, never
 * skipped. Each group's committed offset is durable in `relay_checkpoints` as `embedded:{group}`
 * and moves only over outcomes the registry recorded (R4, C5), so a restart resumes there.
 */
import type { Kysely } from "kysely";
import {
  type CommitWake,
  CommitLogTailer,
  commitLogOf,
  Counter,
  Gauge,
  lastPosition,
  type Logger,
  type MessageSource,
  type ObjectStore,
  type Registry,
  type RelayTables,
  sleep,
  type SourceEvents,
  type SourceRequest,
  writeSideView,
} from "../core/index.js";
import { EventReader, PatientReader } from "./event-reader.js";
import { advanceGroupCheckpoint, relayLag } from "./relay-repository.js";

/** What the embedded relay needs; the database and object store are the process's one instance. */
export interface EmbeddedRelayOptions {
  readonly db: Kysely<RelayTables>;
  readonly objects: ObjectStore;
  /** Wakes readers on commits (a CommitListener on the same database). */
  readonly wake: CommitWake;
  readonly log: Logger;
  /** Where the relay's metrics go (the process's one registry). */
  readonly registry: Registry;
  /** Events per batch handed to a consumer (default 500). */
  readonly batchSize?: number;
  /** Parallel object reads per batch (default 16). */
  readonly readConcurrency?: number;
  /** Longest wait for a commit notification before looking anyway (default 1000 ms). */
  readonly pollMs?: number;
}

/** Prefix of the embedded relay's checkpoint names in `relay_checkpoints`. */
export const EMBEDDED_CHECKPOINT_PREFIX = "embedded:";

/** Pause before a batch the consumer failed on is delivered again. */
const RETRY_BATCH_MS = 100;

/** The embedded relay's metrics, registered in the process's registry (exported for the dashboard test). */
export class EmbeddedRelayMetrics {
  readonly delivered: Counter<"group">;
  readonly checkpoint: Gauge<"group">;
  readonly blocked: Gauge<"group">;
  readonly readErrors: Counter<"group" | "reason">;

  constructor(registry: Registry, sources: () => Iterable<LogSource>, db: Kysely<RelayTables>, log: Logger) {
    const registers = [registry];
    this.delivered = new Counter({ name: "tidemark_relay_embedded_delivered_total", help: "Events the embedded relay handed to a consumer group and the group took.", labelNames: ["group"], registers });
    this.checkpoint = new Gauge({ name: "tidemark_relay_embedded_checkpoint_position", help: "Committed offset (global position) of each consumer group of the embedded relay.", labelNames: ["group"], registers });
    this.blocked = new Gauge({ name: "tidemark_relay_embedded_blocked", help: "1 while a group's delivery is blocked at an unreadable event (the alarm).", labelNames: ["group"], registers });
    this.readErrors = new Counter({ name: "tidemark_relay_embedded_read_errors_total", help: "Failed event reads, by reason.", labelNames: ["group", "reason"], registers });
    // The lag is computed when scraped: no background queries on the one embedded session.
    let lags: Array<{ group: string; positions: number; seconds: number }> = [];
    let head = 0;
    // prom-client collects the gauges of one scrape concurrently: they share one refresh.
    let refreshing: Promise<void> | undefined;
    const refresh = () => (refreshing ??= load().finally(() => (refreshing = undefined)));
    const load = async () => {
      try {
        const next: typeof lags = [];
        for (const source of sources()) {
          const lag = await relayLag(db, source.committed);
          head = lag.head;
          next.push({ group: source.groupId, positions: lag.positions, seconds: lag.oldestAgeMs / 1000 });
        }
        lags = next;
      } catch (e) {
        log.debug({ err: e }, "embedded relay lag refresh failed");
      }
    };
    new Gauge({
      name: "tidemark_relay_embedded_lag_positions",
      help: "Committed positions a consumer group of the embedded relay has not committed yet.",
      labelNames: ["group"],
      registers,
      async collect() {
        await refresh();
        this.reset();
        for (const lag of lags) this.set({ group: lag.group }, lag.positions);
      },
    });
    new Gauge({
      name: "tidemark_relay_embedded_lag_seconds",
      help: "Age of the oldest committed event a consumer group of the embedded relay has not committed (0 when caught up).",
      labelNames: ["group"],
      registers,
      async collect() {
        await refresh();
        this.reset();
        for (const lag of lags) this.set({ group: lag.group }, lag.seconds);
      },
    });
    new Gauge({
      name: "tidemark_relay_embedded_head_position",
      help: "Highest committed global position.",
      registers,
      async collect() {
        await refresh();
        this.set(head);
      },
    });
  }
}

/**
 * The embedded relay: hands out one {@link MessageSource} per consumer group (pass `relay.source`
 * as the consumers' `source` override) and exports their lag. Stop the consumers before `stop`.
 */
export class EmbeddedRelay {
  private readonly sources = new Set<LogSource>();
  private readonly metrics: EmbeddedRelayMetrics;
  private readonly reader: EventReader;

  constructor(private readonly options: EmbeddedRelayOptions) {
    this.metrics = new EmbeddedRelayMetrics(options.registry, () => this.sources, options.db, options.log);
    const tailer = new CommitLogTailer(commitLogOf(writeSideView(options.db)), options.wake, options.pollMs ?? 1000);
    this.reader = new EventReader(tailer, options.objects, options.batchSize ?? 500, options.readConcurrency ?? 16);
  }

  /** The source of one consumer group, reading from its durable checkpoint. */
  readonly source = (request: SourceRequest): MessageSource => {
    const source = new LogSource(request, {
      db: this.options.db,
      reader: this.reader,
      log: this.options.log.child({ relay: "embedded", group: request.groupId }),
      metrics: this.metrics,
      onStop: () => this.sources.delete(source),
    });
    this.sources.add(source);
    return source;
  };

  /** Consumer groups served, with their committed positions. */
  groups(): Array<{ group: string; committed: number }> {
    return [...this.sources].map((s) => ({ group: s.groupId, committed: s.committed }));
  }

  /** Stops every source still running (normally the consumers stopped them already). */
  async stop(): Promise<void> {
    await Promise.all([...this.sources].map((s) => s.stop()));
  }
}

interface LogSourceDeps {
  readonly db: Kysely<RelayTables>;
  readonly reader: EventReader;
  readonly log: Logger;
  readonly metrics: EmbeddedRelayMetrics;
  readonly onStop: () => void;
}

/** One consumer group's view of the commit log: partition 0 of the group's first topic. */
class LogSource implements MessageSource {
  readonly description: string;
  readonly groupId: string;
  /** The durable checkpoint: every position up to here has its outcome recorded. */
  committed = 0;
  private readonly name: string;
  private readonly topic: string;
  private readonly halt = new AbortController();
  private paused = false;
  private wakeResume: (() => void) | undefined;
  private loop: Promise<void> | undefined;

  constructor(
    private readonly request: SourceRequest,
    private readonly deps: LogSourceDeps,
  ) {
    this.groupId = request.groupId;
    this.name = `${EMBEDDED_CHECKPOINT_PREFIX}${request.groupId}`;
    // The embedded relay has no routing: every group reads the whole log, under one topic label.
    this.topic = request.topics[0] ?? "tidemark.events";
    this.description = `embedded relay (commit log, checkpoint ${this.name})`;
  }

  async start(events: SourceEvents): Promise<void> {
    const from = await this.initialPosition();
    this.committed = from;
    this.deps.metrics.checkpoint.set({ group: this.groupId }, from);
    this.deps.log.info({ checkpoint: from }, "embedded relay serving the commit log");
    this.loop = this.run(events, from);
    events.onRunning(true);
  }

  /** The stored checkpoint; a new group starts at 0 or at the current head, and stores that choice. */
  private async initialPosition(): Promise<number> {
    const { db } = this.deps;
    const row = await db.selectFrom("relay_checkpoints").select("position").where("name", "=", this.name).executeTakeFirst();
    if (row !== undefined) return row.position;
    const start = this.request.fromBeginning ? 0 : await lastPosition(writeSideView(db));
    await advanceGroupCheckpoint(db, this.name, start);
    return start;
  }

  private async run(events: SourceEvents, from: number): Promise<void> {
    const { deps } = this;
    const signal = this.halt.signal;
    let cursor = from;
    const reader = new PatientReader({
      reader: deps.reader,
      log: deps.log,
      label: "embedded relay",
      onUnreadable: (e) => {
        deps.metrics.readErrors.inc({ group: this.groupId, reason: e.reason });
        deps.metrics.blocked.set({ group: this.groupId }, 1);
      },
      onUnblocked: () => deps.metrics.blocked.set({ group: this.groupId }, 0),
    });
    while (!signal.aborted) {
      if (this.paused) {
        await this.waitResume();
        continue;
      }
      const batch = await reader.step(cursor, signal);
      if (batch === undefined) continue;
      let resolved = cursor;
      try {
        await events.onBatch({
          topic: this.topic,
          partition: 0,
          messages: batch.messages.map((m) => ({ offset: String(m.position), value: Buffer.from(m.value, "utf8"), headers: m.headers })),
          resolveOffset: (offset) => {
            resolved = Math.max(resolved, Number(offset));
          },
          isRunning: () => !signal.aborted,
          isStale: () => false,
        });
      } catch (e) {
        deps.log.error({ err: e, after: cursor }, "consumer failed on a batch; delivering it again");
        await sleep(RETRY_BATCH_MS, signal);
      }
      let taken = 0;
      for (const m of batch.messages) if (m.position > cursor && m.position <= resolved) taken++;
      if (taken > 0) deps.metrics.delivered.inc({ group: this.groupId }, taken);
      // Messages not taken (the consumer paused mid-batch) are read again after resume.
      cursor = resolved;
    }
  }

  private waitResume(): Promise<void> {
    return new Promise((resolve) => {
      const signal = this.halt.signal;
      if (!this.paused || signal.aborted) return resolve();
      const done = () => {
        signal.removeEventListener("abort", done);
        this.wakeResume = undefined;
        resolve();
      };
      this.wakeResume = done;
      signal.addEventListener("abort", done, { once: true });
    });
  }

  async commit(_topic: string, _partition: number, offset: string): Promise<void> {
    // The runtime commits Kafka's "next offset to read"; the checkpoint is the last position done.
    const position = Number(offset) - 1;
    await advanceGroupCheckpoint(this.deps.db, this.name, position);
    if (position > this.committed) this.committed = position;
    this.deps.metrics.checkpoint.set({ group: this.groupId }, this.committed);
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    this.wakeResume?.();
  }

  async stop(): Promise<void> {
    this.halt.abort();
    await this.loop;
    this.deps.onStop();
  }
}

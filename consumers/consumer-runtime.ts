/**
 * Runs one handler on a message source — a Kafka consumer group, or the commit log in process in
 * the embedded mode (docs/CONTRACT.md C1–C5). Wires three parts: the partition scheduler decides
 * when each message runs (per-aggregate chains, concurrency, back-pressure, offset commits over
 * recorded outcomes), the event processor gets each message's outcome recorded (claim, then apply,
 * retry, dead-letter or wait as `nextStep` decides), and the lease keeper holds the claims' leases
 * while their transaction runs; the replayer runs the replays an operator requested through the same
 * processor. docs/CONSUMERS.md describes each part.
 */
import { type Logger, Upcasters } from "../core/index.js";
import { EventProcessor, type EventProcessorOptions } from "./event-processor.js";
import { LeaseKeeper, type LeaseKeeperOptions } from "./lease-keeper.js";
import { PartitionScheduler, type PartitionSchedulerOptions } from "./partition-scheduler.js";
import { Replayer } from "./replayer.js";

export type { CrashPoint, CrashPointInfo } from "./crash-point.js";

/** Everything a runtime needs; `startConsumer` (app.ts) builds it from the configuration. */
export interface ConsumerRuntimeOptions extends EventProcessorOptions, PartitionSchedulerOptions, Pick<LeaseKeeperOptions, "heartbeatMs"> {
  /** Called when the source starts or stops delivering (joined or lost its group): health only. */
  readonly onRunning?: (running: boolean) => void;
  /** How often the registry is asked for replays an operator requested (ms, default 500). */
  readonly replayPollMs?: number;
}

/** A running consumer of one handler. */
export class ConsumerRuntime {
  private readonly scheduler: PartitionScheduler;
  private readonly replayer: Replayer;
  private readonly log: Logger;
  private stopping = false;

  constructor(private readonly options: ConsumerRuntimeOptions) {
    const { name } = options.handler;
    const log = (this.log = options.log.child({ handler: name }));
    const leases = new LeaseKeeper({ name, db: options.db, leaseMs: options.leaseMs, heartbeatMs: options.heartbeatMs, log });
    const processor = new EventProcessor({ ...options, log }, leases);
    const upcasters = options.upcasters ?? new Upcasters(options.handler.upcasters ?? []);
    this.scheduler = new PartitionScheduler({ ...options, log, upcasters }, processor);
    this.replayer = new Replayer({ handler: name, db: options.db, pollMs: options.replayPollMs ?? 500, concurrency: options.concurrency, metrics: options.metrics, upcasters, log }, processor);
  }

  /** Where this runtime's messages come from, for logs. */
  get sourceDescription(): string {
    return this.options.source.description;
  }

  /** The handler's name. */
  get name(): string {
    return this.options.handler.name;
  }

  /** Starts consuming from the source; resolves once the source is running. */
  async start(): Promise<void> {
    await this.options.source.start({
      onBatch: (batch) => this.scheduler.onBatch(batch),
      onAssignment: () => this.scheduler.onAssignment(),
      onRunning: (running) => this.options.onRunning?.(running),
    });
    // A start given up (the process stopping) also ends here, and consumes nothing.
    if (this.stopping) return;
    this.replayer.start();
    this.log.info({ source: this.options.source.description }, "consuming");
  }

  /**
   * Stops: no new attempts start, running attempts finish (up to `graceMs`), finished offsets are
   * committed, then the consumer leaves the group. Unfinished messages are redelivered later.
   */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    await Promise.all([this.scheduler.stop(graceMs), this.replayer.stop()]);
    await this.options.source.stop().catch((e: unknown) => this.log.warn({ err: e }, "stopping the message source failed"));
  }
}

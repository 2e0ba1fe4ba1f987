/**
 * Prometheus metrics of a consumer process, in its own registry (core/metrics.ts), labelled by
 * handler. Names are listed in docs/CONSUMERS.md.
 */
import { Counter, Gauge, Histogram, LATENCY_BUCKETS, type Registry } from "../core/index.js";

/** The consumer metrics, registered in one registry. */
export class ConsumerMetrics {
  /** Events with a final outcome, by outcome: done, skipped_stale, dead_lettered, duplicate, filtered. */
  readonly processed: Counter<"handler" | "outcome">;
  /** Attempts that failed and were scheduled again. */
  readonly retries: Counter<"handler">;
  /** Events sent to the dead-letter topic, by reason: poison or exhausted. */
  readonly deadLetters: Counter<"handler" | "reason">;
  /** Claims that took over an expired lease (a crashed or stalled holder). */
  readonly leaseTakeovers: Counter<"handler">;
  /** Completions refused because the lease was lost (the side effect rolled back). */
  readonly leaseLost: Counter<"handler">;
  /** Events skipped by the ordering guard. */
  readonly skippedStale: Counter<"handler">;
  /** Time inside `handle`, successful or not. */
  readonly handlerSeconds: Histogram<"handler">;
  /** Registry or Kafka calls that failed for infrastructure reasons (the partition pauses). */
  readonly infrastructureFailures: Counter<"handler" | "stage">;
  /** Partitions currently paused (back-pressure or outage). */
  readonly pausedPartitions: Gauge<"handler">;
  /** Highest offset committed per partition. */
  readonly committedOffset: Gauge<"handler" | "topic" | "partition">;
  /** The projection's applied global position (read-your-writes). */
  readonly projectionPosition: Gauge<"projection">;
  /** Rows deleted by housekeeping. */
  readonly pruned: Counter;
  /** Events applied together by one `handleBatch` transaction. */
  readonly groupSize: Histogram<"handler">;
  /** Groups rolled back and handed to the per-event path. */
  readonly groupFallbacks: Counter<"handler">;
  /** Events parked behind an unresolved earlier event of their aggregate, or queued behind its replay (C8). */
  readonly parked: Counter<"handler" | "state">;
  /** Events waiting for an operator, by state (dead_lettered, parked, replay_requested), read from the registry. */
  readonly waiting: Gauge<"handler" | "state">;
  /** Replayed events with an outcome recorded (the replayer's attempts). */
  readonly replayed: Counter<"handler">;

  constructor(readonly registry: Registry) {
    const registers = [registry];
    this.processed = new Counter({ name: "tidemark_consumer_events_processed_total", help: "Events with a final outcome, by outcome.", labelNames: ["handler", "outcome"], registers });
    this.retries = new Counter({ name: "tidemark_consumer_retries_total", help: "Failed attempts scheduled for retry with backoff.", labelNames: ["handler"], registers });
    this.deadLetters = new Counter({ name: "tidemark_consumer_dead_letters_total", help: "Events sent to the dead-letter topic, by reason.", labelNames: ["handler", "reason"], registers });
    this.leaseTakeovers = new Counter({ name: "tidemark_consumer_lease_takeovers_total", help: "Claims that took over an expired lease.", labelNames: ["handler"], registers });
    this.leaseLost = new Counter({ name: "tidemark_consumer_lease_lost_total", help: "Completions refused because the lease was lost.", labelNames: ["handler"], registers });
    this.skippedStale = new Counter({ name: "tidemark_consumer_skipped_stale_total", help: "Events skipped by the ordering guard.", labelNames: ["handler"], registers });
    this.handlerSeconds = new Histogram({ name: "tidemark_consumer_handler_seconds", help: "Time spent in a handler.", labelNames: ["handler"], buckets: LATENCY_BUCKETS, registers });
    this.infrastructureFailures = new Counter({ name: "tidemark_consumer_infrastructure_failures_total", help: "Registry or Kafka calls that failed; the partition pauses.", labelNames: ["handler", "stage"], registers });
    this.pausedPartitions = new Gauge({ name: "tidemark_consumer_paused_partitions", help: "Partitions currently paused.", labelNames: ["handler"], registers });
    this.committedOffset = new Gauge({ name: "tidemark_consumer_committed_offset", help: "Highest offset committed, per partition.", labelNames: ["handler", "topic", "partition"], registers });
    this.projectionPosition = new Gauge({ name: "tidemark_projection_applied_position", help: "Global position up to which the projection reflects every event.", labelNames: ["projection"], registers });
    this.groupSize = new Histogram({ name: "tidemark_consumer_group_size", help: "Events applied together in one transaction (handlers with handleBatch).", labelNames: ["handler"], buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256], registers });
    this.groupFallbacks = new Counter({ name: "tidemark_consumer_group_fallbacks_total", help: "Groups rolled back and applied one event at a time.", labelNames: ["handler"], registers });
    this.parked = new Counter({ name: "tidemark_consumer_parked_total", help: "Events parked behind an unresolved earlier event of their aggregate, or queued behind its replay.", labelNames: ["handler", "state"], registers });
    this.waiting = new Gauge({ name: "tidemark_consumer_waiting_events", help: "Events waiting for an operator (dead-lettered, parked, replay requested), from the registry.", labelNames: ["handler", "state"], registers });
    this.replayed = new Counter({ name: "tidemark_consumer_replayed_total", help: "Replayed events whose outcome was recorded.", labelNames: ["handler"], registers });
    this.pruned = new Counter({ name: "tidemark_consumer_registry_pruned_total", help: "Done rows deleted by housekeeping.", registers });
  }
}

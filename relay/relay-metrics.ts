/**
 * The relay's Prometheus metrics, in one registry per relay instance (so tests can run two relays
 * in one process). Names start with `tidemark_relay_`; docs/RELAY.md lists them.
 */
import { Counter, createRegistry, Gauge, Histogram, LATENCY_BUCKETS, type Registry } from "../core/index.js";

/** Buckets of events per produce request. */
const BATCH_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];

/** Metrics of one relay instance. */
export class RelayMetrics {
  readonly registry: Registry;
  /** Events acknowledged by Kafka, per topic. */
  readonly published: Counter<"topic">;
  /** Events per produce request. */
  readonly batchSize: Histogram;
  /** From commit (event_log.committed_at, database clock) to Kafka's acknowledgement. */
  readonly publishLatency: Histogram;
  /** Age of the oldest committed event not yet covered by the checkpoint (0 when caught up). */
  readonly lagSeconds: Gauge;
  /** Committed positions not yet covered by the checkpoint. */
  readonly lagPositions: Gauge;
  /** The durable checkpoint. */
  readonly checkpoint: Gauge;
  /** Highest committed global position. */
  readonly headPosition: Gauge;
  /** 1 while this instance holds the lease and publishes, 0 while it stands by. */
  readonly active: Gauge;
  /** Lease acquisitions by this instance, and terms that ended because the lease was lost. */
  readonly leaseAcquired: Counter;
  readonly leaseLost: Counter;
  readonly stalls: Counter;
  /** Produce requests that failed (the batch is retried, never skipped). */
  readonly produceErrors: Counter;
  /** Reads that failed, by reason (missing, unavailable, void, corrupt, mismatch). */
  readonly readErrors: Counter<"reason">;
  /** The alarm: 1 while publication is blocked at an event whose object cannot be read. */
  readonly blocked: Gauge;
  /** Position the relay is blocked at (0 when not blocked). */
  readonly blockedPosition: Gauge;

  /** Registers in `registry` when given (a process that serves one endpoint for all its parts), else in a fresh one. */
  constructor(withDefaults = false, registry: Registry = createRegistry(withDefaults)) {
    this.registry = registry;
    const registers = [registry];
    this.published = new Counter({ name: "tidemark_relay_published_total", help: "Events acknowledged by Kafka.", labelNames: ["topic"], registers });
    this.batchSize = new Histogram({ name: "tidemark_relay_batch_size", help: "Events per produce request.", buckets: BATCH_BUCKETS, registers });
    this.publishLatency = new Histogram({
      name: "tidemark_relay_publish_latency_seconds",
      help: "Time from commit (database clock) to Kafka acknowledgement.",
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.lagSeconds = new Gauge({ name: "tidemark_relay_lag_seconds", help: "Age of the oldest committed event not yet checkpointed (0 when caught up).", registers });
    this.lagPositions = new Gauge({ name: "tidemark_relay_lag_positions", help: "Committed positions not yet checkpointed.", registers });
    this.checkpoint = new Gauge({ name: "tidemark_relay_checkpoint_position", help: "The durable checkpoint.", registers });
    this.headPosition = new Gauge({ name: "tidemark_relay_head_position", help: "Highest committed global position.", registers });
    this.active = new Gauge({ name: "tidemark_relay_active", help: "1 while this instance holds the lease.", registers });
    this.leaseAcquired = new Counter({ name: "tidemark_relay_lease_acquired_total", help: "Lease acquisitions by this instance.", registers });
    this.leaseLost = new Counter({ name: "tidemark_relay_lease_lost_total", help: "Terms that ended because the lease was lost or fenced.", registers });
    this.stalls = new Counter({ name: "tidemark_relay_stalls_total", help: "Terms given up because one step (a produce call, a checkpoint write, topic creation) did not settle within TIDEMARK_RELAY_STALL_MS.", registers });
    this.produceErrors = new Counter({ name: "tidemark_relay_produce_errors_total", help: "Failed produce requests (retried).", registers });
    this.readErrors = new Counter({ name: "tidemark_relay_read_errors_total", help: "Failed event reads, by reason.", labelNames: ["reason"], registers });
    this.blocked = new Gauge({ name: "tidemark_relay_blocked", help: "1 while publication is blocked at an unreadable event.", registers });
    this.blockedPosition = new Gauge({ name: "tidemark_relay_blocked_position", help: "Global position publication is blocked at (0 when not blocked).", registers });
  }
}

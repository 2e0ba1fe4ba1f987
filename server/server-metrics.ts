import * as grpcStatus from "./grpc/status-codes.js";
import { Counter, Gauge, Histogram, LATENCY_BUCKETS, type LogTail, type Registry, type SnapshotRejection } from "../core/index.js";
import type { CallObserver } from "./grpc/bridge.js";
import type { Committer } from "./committer.js";
import type { SegmentWriterStats } from "./segment-writer.js";
import type { Sweeper } from "./sweeper.js";

/** The server's metrics: gRPC calls by method and code with latency, commits, sweeps and Subscribe's fan-out. */
export interface ServerMetrics {
  readonly observe: CallObserver;
  /** Counts a stored snapshot a fold did not use (docs/STORAGE.md, Snapshots). */
  readonly snapshotRejected: (reason: SnapshotRejection) => void;
  /** Starts reading committer, sweeper and log-tail totals at scrape time. */
  track(committer: Committer, sweeper: Sweeper, tail?: LogTail, segments?: SegmentWriterStats): void;
  /** Reports the young-table analyses of `statistics` (server/planner-statistics.ts). */
  trackPlannerStatistics(statistics: { readonly analysed: number }): void;
}

/** Registers the server's metrics in `registry`. */
export function serverMetrics(registry: Registry): ServerMetrics {
  const calls = new Counter({ name: "tidemark_grpc_calls_total", help: "gRPC calls by method and status code", labelNames: ["method", "code"], registers: [registry] });
  const latency = new Histogram({ name: "tidemark_grpc_call_seconds", help: "gRPC call latency by method", labelNames: ["method"], buckets: LATENCY_BUCKETS, registers: [registry] });
  const conflicts = new Counter({ name: "tidemark_append_conflicts_total", help: "Appends refused with ABORTED (expected_seq mismatch)", registers: [registry] });
  const internal = new Counter({
    name: "tidemark_grpc_internal_errors_total",
    help: "Calls answered INTERNAL, by method: always a Tidemark bug (a client's mistake is INVALID_ARGUMENT or another code); each is logged with its cause",
    labelNames: ["method"],
    registers: [registry],
  });
  const snapshotsRejected = new Counter({
    name: "tidemark_snapshots_rejected_total",
    help: "Stored instance snapshots a fold did not use, by reason (fold-version, ahead-of-head, checksum, unreadable): each costs a fold from the first event",
    labelNames: ["reason"],
    registers: [registry],
  });
  let committer: Committer | undefined;
  let sweeper: Sweeper | undefined;
  let tail: LogTail | undefined;
  let segments: SegmentWriterStats | undefined;
  new Gauge({
    name: "tidemark_commit_transactions_total",
    help: "Group-commit transactions run",
    registers: [registry],
    collect() {
      this.set(committer?.stats.transactions ?? 0);
    },
  });
  new Gauge({
    name: "tidemark_committed_events_total",
    help: "Events committed by this server's committer",
    registers: [registry],
    collect() {
      this.set(committer?.stats.slots ?? 0);
    },
  });
  new Gauge({
    name: "tidemark_sweeper_resolved_total",
    help: "Unfinished writes resolved by the sweeper, by outcome (committed, voided, conflicts)",
    labelNames: ["outcome"],
    registers: [registry],
    collect() {
      for (const outcome of ["committed", "voided", "conflicts"] as const) this.set({ outcome }, sweeper?.totals[outcome] ?? 0);
    },
  });
  const segmentGauge = (name: string, help: string, value: (s: SegmentWriterStats) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(segments === undefined ? 0 : value(segments));
      },
    });
  segmentGauge("tidemark_segments_written_total", "Segments this server wrote to S3 (one conditional PUT each)", (s) => s.segments);
  segmentGauge("tidemark_segment_events_total", "Events in the segments this server wrote (÷ segments = events per PUT)", (s) => s.events);
  segmentGauge("tidemark_segment_bytes_total", "Bytes of the segments this server wrote", (s) => s.bytes);
  segmentGauge("tidemark_segment_write_failures_total", "Segment flushes that failed (every append in them answered UNAVAILABLE)", (s) => s.failed);
  segmentGauge("tidemark_segment_conflicts_total", "Segment numbers S3 already held (the commit log was behind the bucket: re-synchronised)", (s) => s.conflicts);
  segmentGauge("tidemark_segment_reserved_appends_total", "Appends a segment flush reserved together with the others of its segment (one round trip for all)", (s) => s.reserved);
  segmentGauge("tidemark_segment_alone_appends_total", "Appends a flush sent back to be reserved alone (a stream head behind the log, or the flush's reservation failed)", (s) => s.alone);
  segmentGauge("tidemark_segment_queued_appends", "Appends waiting now for a segment flush (they go into the next one together)", (s) => s.queued);
  segmentGauge("tidemark_segment_puts_in_flight", "Segment PUTs out now (at most TIDEMARK_SEGMENT_MAX_IN_FLIGHT)", (s) => s.inFlight);
  new Gauge({
    name: "tidemark_commit_deferred",
    help: "Written segments whose commit waits now for a stream predecessor to commit first (R2); stuck above 0 means an earlier event of a stream is unresolved",
    registers: [registry],
    collect() {
      this.set(committer?.deferred ?? 0);
    },
  });
  new Gauge({
    name: "tidemark_subscribers",
    help: "Open Subscribe streams: live (fed by the shared log tail) or catching_up (reading the log on their own)",
    labelNames: ["state"],
    registers: [registry],
    collect() {
      this.set({ state: "live" }, tail?.live ?? 0);
      this.set({ state: "catching_up" }, tail?.catchingUp ?? 0);
    },
  });
  new Gauge({
    name: "tidemark_subscribe_log_reads_total",
    help: "Reads of the commit log for Subscribe: by the shared tail, or by subscribers catching up on their own",
    labelNames: ["reader"],
    registers: [registry],
    collect() {
      this.set({ reader: "tail" }, tail?.stats.tailReads ?? 0);
      this.set({ reader: "own" }, tail?.stats.ownReads ?? 0);
    },
  });
  new Gauge({
    name: "tidemark_subscribe_slow_detached_total",
    help: "Subscribers detached from the shared tail because they did not keep up (they catch up on their own)",
    registers: [registry],
    collect() {
      this.set(tail?.stats.detached ?? 0);
    },
  });
  return {
    observe(path, code, seconds) {
      const method = path.slice(path.lastIndexOf("/") + 1);
      calls.inc({ method, code: grpcStatus.name(code) });
      latency.observe({ method }, seconds);
      if (code === grpcStatus.ABORTED) conflicts.inc();
      if (code === grpcStatus.INTERNAL) internal.inc({ method });
    },
    snapshotRejected(reason) {
      snapshotsRejected.inc({ reason });
    },
    track(c, s, t, w) {
      committer = c;
      sweeper = s;
      tail = t;
      segments = w;
    },
    trackPlannerStatistics(statistics) {
      new Gauge({
        name: "tidemark_pg_young_table_analyses_total",
        help: "ANALYZEs this server ran on the write path's tables while they were young (docs/OPERATIONS.md, PostgreSQL planner statistics)",
        registers: [registry],
        collect() {
          this.set(statistics.analysed);
        },
      });
    },
  };
}

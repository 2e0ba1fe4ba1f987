import * as grpcStatus from "./grpc/status-codes.js";
import { Counter, Gauge, Histogram, LATENCY_BUCKETS, type Registry } from "../core/metrics.js";
import type { CallObserver } from "./grpc/bridge.js";
import type { Committer } from "./committer.js";
import type { Sweeper } from "./sweeper.js";

/** The server's metrics: gRPC calls by method and code with latency, commits and sweeps. */
export interface ServerMetrics {
  readonly observe: CallObserver;
  /** Starts reading committer and sweeper totals at scrape time. */
  track(committer: Committer, sweeper: Sweeper): void;
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
  let committer: Committer | undefined;
  let sweeper: Sweeper | undefined;
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
    help: "Abandoned reservations resolved by the sweeper, by outcome",
    labelNames: ["outcome"],
    registers: [registry],
    collect() {
      for (const outcome of ["committed", "voided", "forgotten"] as const) this.set({ outcome }, sweeper?.totals[outcome] ?? 0);
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
    track(c, s) {
      committer = c;
      sweeper = s;
    },
  };
}

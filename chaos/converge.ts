/**
 * Waits, after the heal, until the pipeline has caught up: every stream resolved (head equals
 * allocated, W5), the active relay's checkpoint at the store's last position (R1, R4: its metrics
 * endpoint), and every consumer group's committed offsets at the topic's end (C5: an offset moves
 * only over recorded outcomes). Bounded by progress: a pipeline that stops making progress, or
 * does not finish within a generous cap, is itself reported (`notConverged`).
 */
import http from "node:http";
import type { Kafka } from "kafkajs";
import { EventStoreService } from "../gen/tidemark/v1/event_store_pb.js";
import { delay } from "./child.js";
import type { GrpcClient } from "./grpc-client.js";
import { mapLimit } from "./map-limit.js";

/** What convergence waits on. */
export interface ConvergeTargets {
  readonly client: GrpcClient;
  readonly aggregates: readonly { type: string; id: string }[];
  /** Metrics addresses (host:port) of the relays. */
  readonly relayMetrics: readonly string[];
  readonly kafka: Kafka;
  readonly topic: string;
  readonly groups: readonly string[];
}

/** The outcome: converged or not, how long it took, and what was still missing. */
export interface Convergence {
  readonly converged: boolean;
  readonly ms: number;
  readonly waitingFor: string;
  /** When not converged: true when nothing moved for the stall bound, false when the cap ended the wait. */
  readonly stalled?: boolean;
}

/**
 * How long convergence waits: as long as the pipeline makes progress (a stream resolved, the
 * relay checkpoint or a group's committed offsets moved, the topic grew), up to `capMs`; a
 * pipeline that made no progress for `stallMs` has nothing left to make and did not converge. On a
 * loaded two-core machine catching up takes minutes; a stuck process never does.
 */
export interface ConvergeBound {
  readonly stallMs: number;
  readonly capMs: number;
}

/** Polls until converged, stalled for `bound.stallMs`, or `bound.capMs` has passed. */
export async function converge(t: ConvergeTargets, bound: ConvergeBound, signal?: AbortSignal): Promise<Convergence> {
  const started = Date.now();
  let waitingFor = "nothing yet";
  let lastProgress = started;
  let seen: string | undefined;
  while (signal?.aborted !== true) {
    try {
      const state = await pipelineState(t);
      if (state.missing === undefined) return { converged: true, ms: Date.now() - started, waitingFor: "" };
      waitingFor = state.missing;
      if (state.progress !== seen) {
        seen = state.progress;
        lastProgress = Date.now();
      }
    } catch (e) {
      waitingFor = `an answer (${(e as Error).message})`;
    }
    const now = Date.now();
    if (now - lastProgress >= bound.stallMs) return { converged: false, ms: now - started, waitingFor: `${waitingFor}; no progress for ${Math.round((now - lastProgress) / 1000)} s`, stalled: true };
    if (now - started >= bound.capMs) return { converged: false, ms: now - started, waitingFor: `${waitingFor}; still progressing at the cap of ${Math.round(bound.capMs / 1000)} s`, stalled: false };
    await delay(500, signal);
  }
  return { converged: false, ms: Date.now() - started, waitingFor: `${waitingFor} (interrupted)` };
}

/**
 * What is still missing (undefined: nothing), and a signature of everything that moves while the
 * pipeline catches up: a change in it is progress.
 */
async function pipelineState(t: ConvergeTargets): Promise<{ missing: string | undefined; progress: string }> {
  const heads = await mapLimit(t.aggregates, 8, (a) =>
    t.client.unary(EventStoreService.method.getStreamHead, { aggregateType: a.type, aggregateId: a.id }, 5000).catch((e: unknown) => {
      // A stream never written is NOT_FOUND: nothing to wait for.
      if ((e as { code?: number }).code === 5) return { head: 0n, allocated: 0n, globalPosition: 0n };
      throw e;
    }),
  );
  const unresolved = heads.filter((h) => h.head !== h.allocated).length;
  const headSum = heads.reduce((n, h) => n + Number(h.head), 0);
  const last = heads.reduce((m, h) => Math.max(m, Number(h.globalPosition)), 0);

  const relays = await Promise.all(t.relayMetrics.map((addr) => scrape(addr).catch(() => "")));
  const active = relays.filter((m) => metric(m, "tidemark_relay_active") === 1);
  const checkpoint = active.length === 1 ? (metric(active[0]!, "tidemark_relay_checkpoint_position") ?? 0) : -1;

  const admin = t.kafka.admin();
  await admin.connect();
  const behind: { groupId: string; messages: number; committed: number }[] = [];
  let end = 0;
  try {
    const ends = new Map((await admin.fetchTopicOffsets(t.topic)).map((p) => [p.partition, Number(p.high)]));
    end = [...ends.values()].reduce((a, b) => a + b, 0);
    for (const groupId of t.groups) {
      const [committed] = await admin.fetchOffsets({ groupId, topics: [t.topic] });
      let messages = 0;
      let at = 0;
      for (const p of committed?.partitions ?? []) {
        const offset = Math.max(0, Number(p.offset));
        messages += Math.max(0, (ends.get(p.partition) ?? 0) - offset);
        at += offset;
      }
      behind.push({ groupId, messages, committed: at });
    }
  } finally {
    await admin.disconnect();
  }

  const progress = [unresolved, headSum, checkpoint, end, ...behind.map((b) => b.committed)].join(",");
  const late = behind.find((b) => b.messages > 0);
  const missing =
    unresolved > 0
      ? `${unresolved} streams with reservations in flight (head below allocated)`
      : active.length !== 1
        ? `one active relay (${active.length} active)`
        : checkpoint < last
          ? `the relay checkpoint (${checkpoint}) to reach the last position (${last})`
          : late !== undefined
            ? `consumer group ${late.groupId} (${late.messages} messages behind)`
            : undefined;
  return { missing, progress };
}

function scrape(addr: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get(`http://${addr}/metrics`, { timeout: 3000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve(body));
    });
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("timeout")));
  });
}

/** The value of an unlabelled (or first labelled) sample of `name` in a Prometheus text page. */
export function metric(page: string, name: string): number | undefined {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([^\\s]+)`, "m").exec(page);
  return m === null ? undefined : Number(m[1]);
}

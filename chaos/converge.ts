/**
 * Waits, after the heal, until the pipeline has caught up: every stream resolved (head equals
 * allocated, W5), the active relay's checkpoint at the store's last position (R1, R4: its metrics
 * endpoint), and every consumer group's committed offsets at the topic's end (C5: an offset moves
 * only over recorded outcomes). Bounded: a pipeline that does not converge is itself reported.
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
}

/** Polls until converged or `timeoutMs` has passed. */
export async function converge(t: ConvergeTargets, timeoutMs: number, signal?: AbortSignal): Promise<Convergence> {
  const started = Date.now();
  let waitingFor = "nothing yet";
  while (Date.now() - started < timeoutMs && signal?.aborted !== true) {
    try {
      const missing = await stillMissing(t);
      if (missing === undefined) return { converged: true, ms: Date.now() - started, waitingFor: "" };
      waitingFor = missing;
    } catch (e) {
      waitingFor = `an answer (${(e as Error).message})`;
    }
    await delay(500, signal);
  }
  return { converged: false, ms: Date.now() - started, waitingFor };
}

async function stillMissing(t: ConvergeTargets): Promise<string | undefined> {
  const heads = await mapLimit(t.aggregates, 8, (a) =>
    t.client.unary(EventStoreService.method.getStreamHead, { aggregateType: a.type, aggregateId: a.id }, 5000).catch((e: unknown) => {
      // A stream never written is NOT_FOUND: nothing to wait for.
      if ((e as { code?: number }).code === 5) return { head: 0n, allocated: 0n, globalPosition: 0n };
      throw e;
    }),
  );
  const unresolved = heads.filter((h) => h.head !== h.allocated).length;
  if (unresolved > 0) return `${unresolved} streams with reservations in flight (head below allocated)`;
  const last = heads.reduce((m, h) => Math.max(m, Number(h.globalPosition)), 0);

  const relays = await Promise.all(t.relayMetrics.map((addr) => scrape(addr).catch(() => "")));
  const active = relays.filter((m) => metric(m, "tidemark_relay_active") === 1);
  if (active.length !== 1) return `one active relay (${active.length} active)`;
  const checkpoint = metric(active[0]!, "tidemark_relay_checkpoint_position") ?? 0;
  if (checkpoint < last) return `the relay checkpoint (${checkpoint}) to reach the last position (${last})`;

  const admin = t.kafka.admin();
  await admin.connect();
  try {
    const ends = new Map((await admin.fetchTopicOffsets(t.topic)).map((p) => [p.partition, Number(p.high)]));
    for (const groupId of t.groups) {
      const [committed] = await admin.fetchOffsets({ groupId, topics: [t.topic] });
      let behind = 0;
      for (const p of committed?.partitions ?? []) {
        const end = ends.get(p.partition) ?? 0;
        const at = Number(p.offset);
        behind += Math.max(0, end - (at < 0 ? 0 : at));
      }
      if (behind > 0) return `consumer group ${groupId} (${behind} messages behind)`;
    }
  } finally {
    await admin.disconnect();
  }
  return undefined;
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

/**
 * Restart: the all-in-one `tidemark start` child (the CLI users run) in the services mode, with the
 * default relay lease and Kafka session timeout, killed with SIGKILL while running and started
 * again. Measured from each spawn to the first OK AppendEvents of a client that retries every
 * ~50 ms on UNAVAILABLE (connection refused included), and, beside it, to the relay publishing and
 * the projection's group join — the parts a killed process leaves a stale lease and a stale group
 * member behind for.
 */
import { performance } from "node:perf_hooks";
import { EventStoreService } from "../gen/tidemark/v1/event_store_pb.js";
import { createClient } from "../server/index.js";
import { freePort } from "../test/helpers/index.js";
import { spawnNode, type NodeChild } from "./child-process.js";
import { Histogram } from "./histogram.js";
import { sleep } from "./load.js";
import type { MemorySampler } from "./memory.js";
import type { Figure } from "./report.js";
import type { BenchNames, BenchResources } from "./resources.js";
import type { StackEnv } from "./stack-env.js";
import { appendRequest } from "./workload.js";

/** Settings of the restart benchmark. */
export interface RestartOptions {
  readonly stack: StackEnv;
  readonly resources: BenchResources;
  readonly memory: MemorySampler;
  /** How many kill -9 → start cycles are measured. */
  readonly restarts: number;
  /** Appends made against each running process before it is killed. */
  readonly appendsBeforeKill: number;
  readonly log: (message: string) => void;
}

/** Retry interval of the probing client. */
const PROBE_INTERVAL_MS = 50;
/** Longest wait for a first OK, or for a part to come up, before the cycle is reported as failed. */
const CYCLE_TIMEOUT_MS = 120_000;
const PROJECTION_HANDLER = "projection:instances";

/** One measured restart. */
interface Cycle {
  readonly firstOkMs: number;
  /** Calls that failed before the first OK. */
  readonly failedCalls: number;
  readonly relayMs: number | undefined;
  readonly consumersMs: number | undefined;
}

/** Runs the restart benchmark; its figures are in group `restart`. */
export async function runRestartBench(o: RestartOptions): Promise<Figure[]> {
  const names = o.resources.allocate("restart");
  o.resources.ownGroup(`${names.groupPrefix}${PROJECTION_HANDLER}`);
  const address = `127.0.0.1:${await freePort()}`;
  const env = childEnv(o.stack, names, address);
  let child: NodeChild | undefined;
  let aggregate = 0;
  const appendSome = async (count: number) => {
    const client = createClient(EventStoreService, address);
    try {
      for (let i = 0; i < count; i++) await client.appendEvents(appendRequest(`restart-${aggregate++}`, { exact: 0 }, 1, i), { deadlineMs: 30_000 });
    } finally {
      client.close();
    }
  };
  const cycles: Cycle[] = [];
  try {
    o.log("restart: first start of the all-in-one process (services mode)");
    const first = await startAndProbe(env, address, o, "all-in-one");
    child = first.child;
    o.log(`restart: first start served after ${Math.round(first.cycle.firstOkMs)} ms`);
    for (let i = 1; i <= o.restarts; i++) {
      // Killed only once every part runs: the next start then meets a held lease and a group member
      // that Kafka still counts, as after a real crash.
      await waitUntilRunning(child);
      await appendSome(o.appendsBeforeKill);
      child.kill("SIGKILL");
      await child.exited;
      const next = await startAndProbe(env, address, o, "all-in-one");
      child = next.child;
      await waitUntilRunning(child);
      cycles.push(next.cycle);
      o.log(
        `restart ${i}/${o.restarts}: first OK after ${Math.round(next.cycle.firstOkMs)} ms (${next.cycle.failedCalls} failed calls before it)` +
          `, relay publishing after ${fmtMs(next.cycle.relayMs)}, projection joined after ${fmtMs(next.cycle.consumersMs)}`,
      );
    }
  } catch (e) {
    o.log(`restart: failed: ${e instanceof Error ? e.message : String(e)}`);
    return [{ id: "restart.first-ok", group: "restart", name: "restart → first OK append (kill -9, services)", unit: "ms", notMeasured: `not measured: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}` }];
  } finally {
    await child?.stop();
  }
  return [
    figure("restart.first-ok", "restart → first OK append (kill -9, services)", cycles.map((c) => c.firstOkMs), { failedCallsBefore: cycles.map((c) => c.failedCalls).join(",") }),
    figure("restart.relay", "restart → relay publishing", cycles.map((c) => c.relayMs)),
    figure("restart.projection", "restart → projection joined its group", cycles.map((c) => c.consumersMs)),
  ];
}

function childEnv(stack: StackEnv, names: BenchNames, address: string): Record<string, string> {
  return {
    ...stack.vars,
    TIDEMARK_PG_SCHEMA: names.schema,
    TIDEMARK_S3_BUCKET: names.bucket,
    TIDEMARK_GRPC_ADDR: address,
    TIDEMARK_LOG_LEVEL: "info",
    TIDEMARK_RELAY_NAME: "bench",
    TIDEMARK_RELAY_TOPIC: names.topic,
    TIDEMARK_DEAD_LETTER_TOPIC: names.deadLetterTopic,
    TIDEMARK_CONSUMER_TOPICS: names.topic,
    TIDEMARK_CONSUMER_GROUP_PREFIX: names.groupPrefix,
    TIDEMARK_CONSUMER_FROM_BEGINNING: "true",
  };
}

/** Spawns `tidemark start` and probes it with appends until one is OK; notes when its parts came up. */
async function startAndProbe(env: Record<string, string>, address: string, o: RestartOptions, role: string): Promise<{ child: NodeChild; cycle: Cycle }> {
  const spawnedAt = performance.now();
  const child = spawnNode(role, "cli/main.ts", env, [], ["start"]);
  o.memory.track(role, child.pid);
  const seen: { relay?: number; consumers?: number } = {};
  void child.waitForLine(isRelayPublishing, "the relay to publish", CYCLE_TIMEOUT_MS).then(() => (seen.relay = performance.now() - spawnedAt), () => {});
  void child.waitForLine(isProjectionJoined, "the projection to join", CYCLE_TIMEOUT_MS).then(() => (seen.consumers = performance.now() - spawnedAt), () => {});
  let failedCalls = 0;
  let lastError = "";
  let exited = false;
  void child.exited.then(() => (exited = true));
  for (let n = 0; ; n++) {
    if (exited) throw new Error(`the process exited before its first OK append (last error: ${lastError})`);
    if (performance.now() - spawnedAt > CYCLE_TIMEOUT_MS) throw new Error(`no OK append within ${CYCLE_TIMEOUT_MS} ms (last error: ${lastError})`);
    // A fresh channel per attempt: a reused one would wait out grpc-js's reconnect backoff (1 s and up).
    const client = createClient(EventStoreService, address);
    try {
      await client.appendEvents(appendRequest(`probe-${child.pid}-${n}`, { exact: 0 }, 1, n), { deadlineMs: 2000 });
      const firstOkMs = performance.now() - spawnedAt;
      // Read later: the parts may come up after the first OK.
      const cycle: Cycle = {
        firstOkMs,
        failedCalls,
        get relayMs() {
          return seen.relay;
        },
        get consumersMs() {
          return seen.consumers;
        },
      };
      return { child, cycle };
    } catch (e) {
      failedCalls++;
      lastError = e instanceof Error ? e.message : String(e);
    } finally {
      client.close();
    }
    await sleep(PROBE_INTERVAL_MS);
  }
}

async function waitUntilRunning(child: NodeChild): Promise<void> {
  await child.waitForLine(isRelayPublishing, "the relay to publish", CYCLE_TIMEOUT_MS);
  await child.waitForLine(isProjectionJoined, "the projection to join its group", CYCLE_TIMEOUT_MS);
}

const isRelayPublishing = (line: Record<string, unknown>) => line["msg"] === "relay publishing from the checkpoint";
const isProjectionJoined = (line: Record<string, unknown>) => line["msg"] === "tidemark consumers running";

function figure(id: string, name: string, samples: ReadonlyArray<number | undefined>, extra: Record<string, string> = {}): Figure {
  const measured = samples.filter((s): s is number => s !== undefined);
  if (measured.length === 0) return { id, group: "restart", name, unit: "ms", notMeasured: "not measured: never seen" };
  const h = new Histogram();
  for (const s of measured) h.record(s);
  return {
    id,
    group: "restart",
    name,
    unit: "ms",
    p50Ms: h.percentile(50),
    samples: measured.length,
    extra: { minMs: h.percentile(0), medianMs: h.percentile(50), maxMs: h.percentile(100), samplesMs: measured.map((s) => Math.round(s)).join(","), ...extra },
  };
}

function fmtMs(ms: number | undefined): string {
  return ms === undefined ? "(not yet)" : `${Math.round(ms)} ms`;
}

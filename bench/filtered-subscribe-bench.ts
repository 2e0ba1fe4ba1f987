/**
 * P6: a filtered Subscribe against a client that filters itself (issue #16). One server child,
 * a log of `events` events of which 1 % match (event type `Rare`, one per call of 100, at a
 * different place in each); then, each on a freshly started server (cold event cache), a
 * Subscribe from 0 with `event_types: [Rare]` and `stop_at_caught_up`, and one with no filter that
 * decodes every event and keeps the matching ones itself. The figure is the time from the call to
 * the caught-up marker of each; both must find every matching event.
 */
import { createClient } from "../server/index.js";
import { EventStoreService, type SubscribeResponse } from "../gen/tidemark/v1/event_store_pb.js";
import type { MemorySampler } from "./memory.js";
import { startServerProcess, type ServerProcess } from "./processes.js";
import type { Figure } from "./report.js";
import type { BenchResources } from "./resources.js";
import type { StackEnv } from "./stack-env.js";

/** Settings of P6. */
export interface FilteredSubscribeBenchOptions {
  readonly stack: StackEnv;
  readonly resources: BenchResources;
  readonly memory: MemorySampler;
  /** Events in the log (a multiple of 100). */
  readonly events: number;
  readonly serverNodeArgs: readonly string[];
  readonly log: (message: string) => void;
}

/** Events per AppendEvents call while seeding (the default limit), and calls in flight. */
const PER_CALL = 100;
const SEED_CONCURRENCY = 8;
const MATCHING = "Rare";

/** Runs P6 on its own server child; returns the filtered and the self-filtering figure. */
export async function runFilteredSubscribeBench(o: FilteredSubscribeBenchOptions): Promise<Figure[]> {
  const names = o.resources.allocate("filter");
  const start = (role: string) => startServerProcess(o.stack, names, { memory: o.memory, nodeArgs: o.serverNodeArgs, role });
  let server: ServerProcess | undefined = await start("server (P6 seed)");
  try {
    const calls = Math.ceil(o.events / PER_CALL);
    o.log(`P6: seeding ${calls * PER_CALL} events (${calls} calls of ${PER_CALL}, ${SEED_CONCURRENCY} in flight), 1 % of type ${MATCHING}`);
    const seedStarted = performance.now();
    const client = createClient(EventStoreService, server.address);
    let next = 0;
    await Promise.all(
      Array.from({ length: SEED_CONCURRENCY }, async () => {
        while (next < calls) {
          const call = next++;
          await retried(() => client.appendEvents({
            aggregateType: "Seed",
            aggregateId: `s-${call}`,
            expectation: { case: "noStream", value: {} },
            events: Array.from({ length: PER_CALL }, (_, j) => ({
              eventId: `p6-${call}-${j}`,
              eventType: j === call % PER_CALL ? MATCHING : "Noise",
              data: { call, j, pad: "x".repeat(200) },
            })),
          }));
        }
      }),
    );
    client.close();
    o.log(`P6: seeded in ${Math.round((performance.now() - seedStarted) / 1000)} s`);
    const figures: Figure[] = [];
    for (const filtered of [true, false]) {
      await server.child.stop();
      server = undefined;
      server = await start(filtered ? "server (P6 filtered)" : "server (P6 unfiltered)");
      o.log(`P6: Subscribe from 0 to caught-up, ${filtered ? `event_types [${MATCHING}]` : "no filter, the client filters"}`);
      const run = await timeToCaughtUp(server.address, filtered);
      if (run.matched !== calls) o.log(`  P6: expected ${calls} matching events, got ${run.matched}`);
      figures.push({
        id: filtered ? "p6.filtered" : "p6.self-filtered",
        group: "P6",
        name: filtered ? `Subscribe with event_types [${MATCHING}] (1 %), to caught-up` : "Subscribe with no filter, the client keeps 1 %, to caught-up",
        unit: "events/s",
        rate: (calls * PER_CALL) / (run.ms / 1000),
        samples: 1,
        ...(filtered ? { baselineId: "p6.self-filtered" } : {}),
        extra: { caughtUpMs: Math.round(run.ms), matched: run.matched, messages: run.messages, logEvents: calls * PER_CALL },
      });
    }
    const [f, self] = figures as [Figure, Figure];
    const ratio = (f.extra!["caughtUpMs"] as number) / (self.extra!["caughtUpMs"] as number);
    return [{ ...f, extra: { ...f.extra, caughtUpRatio: ratio } }, self];
  } finally {
    await server?.child.stop();
  }
}

/** Subscribes from 0 with stop_at_caught_up; returns the time to the marker and what matched. */
async function timeToCaughtUp(address: string, filtered: boolean): Promise<{ ms: number; matched: number; messages: number }> {
  const client = createClient(EventStoreService, address);
  try {
    const started = performance.now();
    let matched = 0;
    let messages = 0;
    let caughtUp: number | undefined;
    const stream: AsyncIterable<SubscribeResponse> = client.subscribe({
      start: { case: "afterPosition", value: 0n },
      stopAtCaughtUp: true,
      ...(filtered ? { eventTypes: [MATCHING], checkpoints: true } : {}),
    });
    for await (const response of stream) {
      messages += 1;
      if (response.message.case === "event" && response.message.value.eventType === MATCHING) matched += 1;
      if (response.message.case === "caughtUp") caughtUp = performance.now() - started;
    }
    if (caughtUp === undefined) throw new Error("P6: the stream ended without a caught-up marker");
    return { ms: caughtUp, matched, messages };
  } finally {
    client.close();
  }
}

/**
 * Runs an append again while it fails UNAVAILABLE (S3 or PostgreSQL slow on a loaded machine):
 * the same event ids make a retry idempotent (W4), so nothing is appended twice.
 */
async function retried<T>(call: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (e) {
      if ((e as { code?: number }).code !== 14 || attempt >= 10) throw e;
      await new Promise((resolve) => setTimeout(resolve, 200 * attempt));
    }
  }
}

/**
 * The command path against the append (issue #16, bench/TARGETS.md P7 and P8), in one run per
 * storage mode, with the server in the bench's process:
 *
 *   P7  a command on an instance of 10 000 events with a cold server cache, against the same
 *       command on a 1-event instance: M of each, seeded, then the server restarted (an empty
 *       event cache) and each instance touched once, long and short alternating; medians.
 *   P8  UpdateInstance p50 at concurrency 1 against AppendEvents p50 (one event, exact
 *       expected_seq, one stream), in alternating blocks on the same server.
 *
 * The long instances are seeded through the server's event store directly (the generic API
 * refuses writes to instance streams) with the events commands produce, then given their
 * snapshots by what `tidemark rebuild snapshots` runs — as commands would have left them.
 *
 *   node --import tsx bench/command-bench.ts [--mode services|embedded|both] [--events 10000]
 *        [--instances 5] [--calls 200] [--rounds 3] [--no-snapshots]
 */
import { rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { contentHash, EventKind, INSTANCE_AGGREGATE_TYPE } from "../core/index.js";
import { EventStoreService } from "../gen/tidemark/v1/event_store_pb.js";
import { InstanceService } from "../gen/tidemark/v1/instance_pb.js";
import { type ClientOf, createClient, loadServerConfig, rebuildSnapshots, startServer, type ServerConfig, type ServerHandle } from "../server/index.js";
import { Histogram, median } from "./histogram.js";
import { BenchResources } from "./resources.js";
import { writeResultsFile } from "./results-file.js";
import { loadStackEnv, type StackEnv } from "./stack-env.js";

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? fallback : process.argv[i + 1]!;
};
const modes = arg("mode", "both") === "both" ? (["embedded", "services"] as const) : ([arg("mode", "both") as "embedded" | "services"] as const);
const longEvents = Number(arg("events", "10000"));
const instances = Number(arg("instances", "5"));
const calls = Number(arg("calls", "200"));
const rounds = Number(arg("rounds", "3"));
const snapshots = !process.argv.includes("--no-snapshots");
const log = (m: string) => process.stderr.write(`command-bench: ${m}\n`);

type Instances = ClientOf<typeof InstanceService>;
type Events = ClientOf<typeof EventStoreService>;

async function timed(f: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await f();
  return performance.now() - t0;
}

/** Appends `count` InstanceUpdated events after seq `from`, as UpdateInstance would have, 1 000 per call. */
async function seed(server: ServerHandle, aggregateId: string, from: number, count: number): Promise<void> {
  for (let done = 0; done < count; ) {
    const n = Math.min(1000, count - done);
    const events = Array.from({ length: n }, (_, i) => {
      const k = from + done + i;
      const metadata = { command_id: `seed-${k}`, kind: "domain" };
      const data = { patch: { n: k, [`field${k % 50}`]: `value ${k}` } };
      return {
        eventId: crypto.randomUUID(),
        eventType: "InstanceUpdated",
        data,
        metadata,
        schemaVersion: 1,
        kind: EventKind.DOMAIN,
        contentHash: contentHash({ eventType: "InstanceUpdated", aggregateType: INSTANCE_AGGREGATE_TYPE, aggregateId, data, metadata, schemaVersion: 1, kind: EventKind.DOMAIN }),
      };
    });
    await server.store.append({ aggregateType: INSTANCE_AGGREGATE_TYPE, aggregateId, expectation: { type: "exact", seq: from + done }, events, actor: "bench" });
    done += n;
  }
}

/** The services mode's stack and the names it hands out (undefined when only the embedded mode runs). */
interface Services {
  readonly stack: StackEnv;
  readonly resources: BenchResources;
}

async function runMode(mode: "embedded" | "services", services: Services | undefined): Promise<Record<string, unknown>> {
  const dataDir = path.join(os.tmpdir(), `tidemark-command-bench-${process.pid}-${mode}`);
  let config: ServerConfig;
  const common = { TIDEMARK_GRPC_ADDR: "127.0.0.1:0", TIDEMARK_LOG_LEVEL: "warn", TIDEMARK_AUTH: "off", TIDEMARK_SNAPSHOT_EVERY: snapshots ? "100" : "0" };
  if (mode === "embedded") config = loadServerConfig({ ...common, TIDEMARK_DATA_DIR: dataDir });
  else {
    const names = services!.resources.allocate("commands");
    config = loadServerConfig({ ...services!.stack.vars, ...common, TIDEMARK_PG_SCHEMA: names.schema, TIDEMARK_S3_BUCKET: names.bucket });
  }
  let server = await startServer(config);
  const clients = (s: ServerHandle) => ({ instances: createClient(InstanceService, s.address) as Instances, events: createClient(EventStoreService, s.address) as Events });
  let c = clients(server);
  const run = crypto.randomUUID().slice(0, 6);
  const address = (id: string) => ({ database: "bench", className: "Doc", instanceId: `${run}-${id}` });
  try {
    // P7: seed M long and M short instances.
    log(`${mode}: seeding ${instances} instances of ${longEvents} events and ${instances} of 1`);
    for (let i = 0; i < instances; i++) {
      await c.instances.createInstance({ ...address(`long${i}`), properties: { n: 0 }, commandId: `long${i}-c` });
      await seed(server, `bench/Doc/${run}-long${i}`, 1, longEvents - 1);
      await c.instances.createInstance({ ...address(`short${i}`), properties: { n: 0 }, commandId: `short${i}-c` });
    }
    if (snapshots) {
      const result = await rebuildSnapshots({ db: server.database.db, objects: server.objects, every: config.snapshotEvery });
      log(`${mode}: snapshots rebuilt: ${result.taken} over ${result.streams} streams`);
    }
    // A cold server cache: a new server on the same storage (the embedded one reopens its files).
    c.instances.close();
    c.events.close();
    await server.stop(1000);
    server = await startServer(config);
    c = clients(server);
    await c.instances.createInstance({ ...address("warm"), properties: {}, commandId: "warm-c" });
    for (let i = 1; i <= 20; i++) await c.instances.updateInstance({ ...address("warm"), properties: { i }, expectedSeq: BigInt(i), commandId: `warm-${i}` });
    const long: number[] = [];
    const short: number[] = [];
    for (let i = 0; i < instances; i++) {
      long.push(await timed(() => c.instances.updateInstance({ ...address(`long${i}`), properties: { cold: true }, expectedSeq: BigInt(longEvents), commandId: `long${i}-cold` })));
      short.push(await timed(() => c.instances.updateInstance({ ...address(`short${i}`), properties: { cold: true }, expectedSeq: 1n, commandId: `short${i}-cold` })));
    }
    log(`${mode}: P7 cold command on ${longEvents} events: median ${median(long).toFixed(1)} ms (${long.map((x) => x.toFixed(1)).join(", ")}); on 1 event: ${median(short).toFixed(1)} ms (${short.map((x) => x.toFixed(1)).join(", ")})`);

    // P8: UpdateInstance against AppendEvents, c1, alternating blocks.
    const hot = address("hot");
    await c.instances.createInstance({ ...hot, properties: { n: 0 }, commandId: "hot-c" });
    const streamId = `bench/${run}-append`;
    let instanceSeq = 1;
    let streamSeq = 0;
    const update = () => c.instances.updateInstance({ ...hot, properties: { n: instanceSeq, note: "update" }, expectedSeq: BigInt(instanceSeq), commandId: `hot-${instanceSeq++}` });
    const append = () =>
      c.events.appendEvents({
        aggregateType: "BenchDoc",
        aggregateId: streamId,
        expectation: { case: "expectedSeq", value: BigInt(streamSeq++) },
        events: [{ eventId: crypto.randomUUID(), eventType: "Updated", data: { patch: { n: streamSeq, note: "update" } }, kind: EventKind.DOMAIN, schemaVersion: 1 }],
        actor: "bench",
      });
    for (let i = 0; i < 30; i++) {
      await update();
      await append();
    }
    const updates = new Histogram();
    const appends = new Histogram();
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < calls; i++) updates.record(await timed(update));
      for (let i = 0; i < calls; i++) appends.record(await timed(append));
    }
    const u = updates.summary();
    const a = appends.summary();
    log(`${mode}: P8 UpdateInstance p50 ${u.p50.toFixed(2)} ms p99 ${u.p99.toFixed(2)}; AppendEvents p50 ${a.p50.toFixed(2)} ms p99 ${a.p99.toFixed(2)}; ratio ${(u.p50 / a.p50).toFixed(2)}`);
    return {
      mode,
      snapshots,
      c1: { longEvents, longMs: long, shortMs: short, ratio: median(long) / median(short), target: 2 },
      c2: { update: u, append: a, ratio: u.p50 / a.p50, target: 2 },
    };
  } finally {
    c.instances.close();
    c.events.close();
    await server.stop(1000);
    if (mode === "embedded") rmSync(dataDir, { recursive: true, force: true });
  }
}

const stack = modes.includes("services") ? loadStackEnv() : undefined;
const services = stack === undefined ? undefined : { stack, resources: new BenchResources(stack) };
const results: Array<Record<string, unknown>> = [];
try {
  for (const mode of modes) results.push(await runMode(mode, services));
} finally {
  await services?.resources.cleanup(log);
}
const file = writeResultsFile("commands", results);
for (const r of results) {
  const c1 = r["c1"] as { ratio: number; longEvents: number };
  const c2 = r["c2"] as { ratio: number };
  process.stdout.write(`${r["mode"]}${snapshots ? "" : " (no snapshots)"}: P7 cold command ${c1.longEvents} events / 1 event = ${c1.ratio.toFixed(2)} (target ≤ 2); P8 UpdateInstance p50 / AppendEvents p50 = ${c2.ratio.toFixed(2)} (target ≤ 2)\n`);
}
process.stdout.write(`→ ${file}\n`);
process.exit(0);

/**
 * The `tidemark` CLI end to end, as separate processes through the bin shim, on an embedded data
 * directory: the origin's settings accepted, `migrate`, `start` with the client commands
 * (`stream`, `tail`, `status`) against it, the data-directory lock, and a `rebuild` that is
 * interrupted and resumed. Usage and refusals are in cli-usage.test.ts.
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventStoreService } from "../../gen/tidemark/v1/event_store_pb.js";
import { InstanceService, ReadConsistency } from "../../gen/tidemark/v1/instance_pb.js";
import { createClient } from "../../server/grpc/client.js";
import { background, cleanEnv, freePort, tidemark, TIDEMARK_BIN, type Background, withoutStoreClients } from "../helpers/cli-process.js";
import { ORIGIN_ENV } from "../helpers/origin-env.js";
import { waitFor } from "../helpers/wait-for.js";

/** Appends of 100 events that the rebuild test replays (plus the two events of `ada`). */
const BULK_APPENDS = 4;

let dir: string;
let env: Record<string, string>;
let server: Background | undefined;
let addr: string;

async function startServer(): Promise<Background> {
  const child = background(process.execPath, [TIDEMARK_BIN, "start"], env);
  await child.waitFor(/gRPC\s+127\.0\.0\.1:\d+/, "the banner");
  return child;
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "tidemark-cli-"));
  addr = `127.0.0.1:${await freePort()}`;
  env = cleanEnv({ TIDEMARK_DATA_DIR: dir, TIDEMARK_GRPC_ADDR: addr, TIDEMARK_LOG_LEVEL: "warn", ...ORIGIN_ENV });
});

afterAll(async () => {
  await server?.stop("SIGKILL");
  await rm(dir, { recursive: true, force: true });
});

/**
 * A test that runs the CLI several times, each process opening PGlite: about 25 s on a quiet
 * machine, and more than the default minute when the machine is loaded (a deadlock still fails it).
 */
const PROCESS_TEST_MS = 240_000;

describe("an embedded deployment driven by the CLI", () => {
  it("migrates a fresh data directory, then finds it up to date", async () => {
    const first = await tidemark(["migrate"], env);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/schema spice_event_registry migrated: 2026-11-27-01-write-side, /);
    const again = await tidemark(["migrate"], env);
    expect(again.stdout).toMatch(/schema spice_event_registry is up to date/);
  }, PROCESS_TEST_MS);

  it("starts with the origin's settings, and the client commands talk to it", async () => {
    server = await startServer();
    expect(server.stderr()).toMatch(/embedded mode/);
    expect(server.stderr()).toContain(`data      ${dir}`);
    expect(server.stderr()).toMatch(/running {3}server, relay \(in process: commit log → consumers\), projection:instances/);
    expect(server.stderr()).toMatch(/warning {3}EVENT_STORE_SEQUENCE_HANDLER_PREFIX is accepted for the origin and has no effect/);
    expect(existsSync(path.join(dir, "objects", "spice-event-store"))).toBe(true);

    const instances = createClient(InstanceService, addr);
    // The client commands load no client of the store (PostgreSQL, PGlite, S3, Kafka): gRPC only.
    const lean = withoutStoreClients(env);
    // `tail` follows: started first, it prints the next commit and exits after --limit.
    const tail = background(process.execPath, [TIDEMARK_BIN, "tail", "--limit", "1", "--type", "Instance"], lean);
    await tail.waitFor(/caught up at position 0/, "tail to catch up");
    const created = await instances.createInstance({ database: "demo", className: "Person", instanceId: "ada", properties: { name: "Ada" }, commandId: "cmd-1" });
    await instances.updateInstance({ database: "demo", className: "Person", instanceId: "ada", properties: { born: 1815 }, expectedSeq: 1n, commandId: "cmd-2" });
    await tail.waitFor(/InstanceCreated/, "tail to print the commit");
    expect(await tail.stop("SIGTERM", 20_000)).toBe(0);
    expect(tail.stdout()).toMatch(/^@1 {2}Instance\/demo\/Person\/ada#1 {2}\S+ {2}InstanceCreated {2}\{"properties":\{"name":"Ada"\}\}\n$/);

    const stream = await tidemark(["stream", "Instance", "demo/Person/ada"], lean);
    expect(stream.code, stream.stderr).toBe(0);
    const lines = stream.stdout.trim().split("\n");
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(new RegExp(`^#1  @1  \\S+  InstanceCreated  \\{"properties":\\{"name":"Ada"\\}\\}  event_id=${created.result!.eventId} command_id=cmd-1$`));
    expect(lines[1]).toMatch(/^#2 {2}@2 {2}\S+ {2}InstanceUpdated {2}/);
    const json = await tidemark(["stream", "Instance", "demo/Person/ada", "--json", "--from", "2"], lean);
    expect(JSON.parse(json.stdout)).toMatchObject({ event_type: "InstanceUpdated", sequence_number: "2", aggregate_id: "demo/Person/ada" });

    const replay = await tidemark(["tail", "--after", "0", "--limit", "2", "--json"], lean);
    expect(replay.stdout.trim().split("\n").map((l) => (JSON.parse(l) as { global_position: string }).global_position)).toEqual(["1", "2"]);
    // tail takes batches: stopping inside one, the resume point is the last event printed, not the batch's end.
    const one = await tidemark(["tail", "--after", "0", "--limit", "1"], lean);
    expect(one.stdout).toMatch(/^@1 {2}Instance\/demo\/Person\/ada#1 /);
    expect(one.stderr).toMatch(/stopped at position 1 \(resume with --after 1\)/);

    // status by command id (tried as an event id first), then by event id.
    const byCommand = await waitForStatus(["status", "cmd-2"], /projection:instances\s+DONE/);
    expect(byCommand).toMatch(/^event \S+ {2}InstanceUpdated {2}Instance\/demo\/Person\/ada {2}seq 2 {2}position 2$/m);
    const byEvent = await tidemark(["status", "--event", created.result!.eventId, "--json"], lean);
    expect(JSON.parse(byEvent.stdout)).toMatchObject({ events: [{ event_id: created.result!.eventId, handlers: [{ handler: "projection:instances", state: "PROCESSING_STATE_DONE" }] }] });
    const unknown = await tidemark(["status", "no-such-id"], lean);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/nothing known about "no-such-id"/);
    instances.close();
  }, PROCESS_TEST_MS);

  it("refuses to open the data directory while the server holds it", async () => {
    const migrate = await tidemark(["migrate"], env);
    expect(migrate.code).toBe(2);
    expect(migrate.stderr).toMatch(new RegExp(`the data directory ${dir} is in use by process \\d+`));
  });

  it("stops gracefully on SIGTERM and keeps the data; then rebuilds offline, resumably", async () => {
    // Enough commit-log entries that the resumed rebuild has a tail to replay.
    const events = createClient(EventStoreService, addr);
    for (let i = 0; i < BULK_APPENDS; i++) {
      await events.appendEvents({
        aggregateType: "Bulk",
        aggregateId: `b${i}`,
        expectation: { case: "noStream", value: {} },
        events: Array.from({ length: 100 }, (_, j) => ({ eventId: `bulk-${i}-${j}`, eventType: "Filled", data: { j } })),
      });
    }
    events.close();
    expect(await server!.stop("SIGTERM")).toBe(0);
    expect(server!.stderr()).toMatch(/SIGTERM received, shutting down[\s\S]*tidemark: stopped/);
    server = undefined;
    expect(existsSync(path.join(dir, "LOCK"))).toBe(false);

    // Park the rebuild deterministically: the first segment becomes a FIFO, so the rebuild blocks
    // reading it until the test writes the original bytes — the interrupt lands while it waits,
    // whatever the machine's speed, and the rebuild stops after that first batch.
    const segments = path.join(dir, "objects", ORIGIN_ENV.EVENT_STORE_BUCKET, "segments");
    const first = path.join(segments, (await readdir(segments)).sort()[0]!);
    expect(await readFile(first, "utf8")).toContain('"aggregate_id":"demo/Person/ada","sequence_number":"1"');
    const original = await readFile(first);
    await rm(first);
    execFileSync("mkfifo", [first]);
    const interrupted = background(process.execPath, [TIDEMARK_BIN, "rebuild", "instances", "--batch-size", "1"], env);
    await interrupted.waitFor(/rebuilding projection instances from/, "the rebuild to start");
    const stopping = interrupted.stop("SIGINT");
    await writeFile(first, original);
    const interruptedCode = await stopping;
    expect(interruptedCode, interrupted.stderr()).toBe(130);
    expect(interrupted.stderr()).toMatch(/rebuild replay 0% position 1\//);
    expect(interrupted.stderr()).toMatch(/rebuild stopped; its progress is stored: run the same command again to resume/);
    await rm(first);
    await writeFile(first, original);

    const resumed = await tidemark(["rebuild", "instances"], env, { timeoutMs: 120_000 });
    expect(resumed.code, resumed.stderr).toBe(0);
    const total = BULK_APPENDS * 100 + 2;
    expect(resumed.stderr).toMatch(new RegExp(`rebuild replay \\d+% position \\d+/${total} events \\d+ {2}resumed from [1-9]`));
    expect(resumed.stdout).toMatch(new RegExp(`^rebuilt instances: 1 instances from ${total} commit-log entries, up to position ${total} \\(resumed at [1-9]\\d*\\)$`, "m"));
    expect((await tidemark(["rebuild", "orders"], env)).stderr).toMatch(/unknown projection "orders"/);
    // The instance snapshots (docs/STORAGE.md): the one instance, ada, has 2 events.
    const snapshots = await tidemark(["rebuild", "snapshots"], { ...env, TIDEMARK_SNAPSHOT_EVERY: "2" });
    expect(snapshots.code, snapshots.stderr).toBe(0);
    expect(snapshots.stdout).toMatch(/^rebuilt snapshots: 1 taken over 1 instance streams, 0 dropped before$/m);
    expect((await tidemark(["rebuild", "snapshots"], { ...env, TIDEMARK_SNAPSHOT_EVERY: "3" })).stdout).toMatch(/^rebuilt snapshots: 0 taken over 1 instance streams, 1 dropped before$/m);

    server = await startServer();
    const instances = createClient(InstanceService, addr);
    const got = await instances.getInstance({ database: "demo", className: "Person", instanceId: "ada", consistency: ReadConsistency.EVENTUAL });
    expect(got.instance).toMatchObject({ version: 2n, properties: { name: "Ada", born: 1815 } });
    instances.close();
    expect(await server.stop("SIGINT")).toBe(0);
    server = undefined;
  }, PROCESS_TEST_MS);
});

async function waitForStatus(args: string[], pattern: RegExp): Promise<string> {
  let last = "";
  try {
    return await waitFor(
      async () => {
        const result = await tidemark(args, env);
        last = `${result.stdout}${result.stderr}`;
        return pattern.test(result.stdout) ? result.stdout : undefined;
      },
      { intervalMs: 200, what: `status matching ${pattern}` },
    );
  } catch (e) {
    throw new Error(`status never matched ${pattern}: ${last}`, { cause: e });
  }
}

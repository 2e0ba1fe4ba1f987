/**
 * `tidemark verify` and `tidemark recover` in the embedded mode (docs/OPERATIONS.md "Recovering from
 * S3 alone"): the data directory's objects are the bucket and PGlite is the log. After the process
 * stopped, verify finds the store clean; with the database directory removed, a recovery stopped by
 * SIGINT part-way answers 130 with its progress stored, the next run resumes after the segment it
 * reached, and a restarted process reads back every acknowledged event at its seq and appends on.
 */
import { execFileSync } from "node:child_process";
import { mkdtemp, open, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventStoreService } from "../../gen/tidemark/v1/event_store_pb.js";
import { createClient } from "../../server/grpc/client.js";
import { collect } from "../helpers/grpc-errors.js";
import { background, cleanEnv, freePort, TIDEMARK_BIN, tidemark, type Background } from "../helpers/cli-process.js";

/** One append per call at concurrency 1: one segment each, so the recovery has many to settle. */
const APPENDS = 200;
const STREAMS = 3;
/** The segment the first recovery run is held at (segments are numbered from 1, one per append). */
const HELD_SEGMENT = 50;
let dir: string;
let env: Record<string, string>;
let running: Background | undefined;
/** Per stream, the acknowledged event ids by seq. */
const acked = new Map<string, string[]>();

async function start(): Promise<Background> {
  running = background(process.execPath, [TIDEMARK_BIN, "start"], env);
  await running.waitFor(/gRPC\s+127\.0\.0\.1:\d+/, "the banner");
  return running;
}

/** Replaces segment `n` of the store's bucket by a named pipe; `restore` puts its bytes back as a file. */
async function holdSegment(n: number): Promise<{ path: string; bytes: Buffer; restore: () => Promise<void> }> {
  const buckets = await readdir(path.join(dir, "objects"));
  expect(buckets).toHaveLength(1);
  const segments = path.join(dir, "objects", buckets[0]!, "segments");
  const name = (await readdir(segments)).sort()[n - 1]!;
  expect(Number(name.split(".")[0])).toBe(n);
  const file = path.join(segments, name);
  const bytes = await readFile(file);
  await rm(file);
  execFileSync("mkfifo", [file]);
  return {
    path: file,
    bytes,
    restore: async () => {
      await rm(file);
      await writeFile(file, bytes);
    },
  };
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "tidemark-recover-"));
  env = cleanEnv({ TIDEMARK_DATA_DIR: dir, TIDEMARK_GRPC_ADDR: `127.0.0.1:${await freePort()}`, TIDEMARK_LOG_LEVEL: "warn" });
});

afterAll(async () => {
  await running?.stop("SIGKILL");
  await rm(dir, { recursive: true, force: true });
});

describe("embedded verify and recover", () => {
  it("verifies a stopped store, recovers it in two runs after the database is gone, and serves it again", { timeout: 180_000 }, async () => {
    await start();
    const events = createClient(EventStoreService, env["TIDEMARK_GRPC_ADDR"]!);
    try {
      for (let i = 0; i < APPENDS; i++) {
        const stream = `s${i % STREAMS}`;
        const ids = acked.get(stream) ?? [];
        acked.set(stream, ids);
        const eventId = `${stream}-${ids.length + 1}`;
        await events.appendEvents({ aggregateType: "Ledger", aggregateId: stream, expectation: { case: "expectedSeq", value: BigInt(ids.length) }, events: [{ eventId, eventType: "Posted", data: { i } as never }] }).catch((e: unknown) => {
          throw new Error(`append ${i + 1} of ${APPENDS} failed: ${(e as Error).message}; the server's stderr ends:\n${running?.stderr().slice(-4000) ?? ""}`, { cause: e });
        });
        ids.push(eventId);
      }
    } finally {
      events.close();
    }
    expect(await running!.stop("SIGTERM")).toBe(0);
    running = undefined;

    const clean = await tidemark(["verify", "--json"], env, { timeoutMs: 120_000 });
    expect(clean.code, clean.stderr).toBe(0);
    expect(JSON.parse(clean.stdout)).toMatchObject({ clean: true, events: APPENDS, streams: STREAMS, unverifiedLinks: 0 });

    await rm(path.join(dir, "pg"), { recursive: true, force: true });
    // One segment in the middle becomes a named pipe, so the first run is held while it opens that
    // segment: the interrupt lands part-way however fast the machine settles the rest.
    const held = await holdSegment(HELD_SEGMENT);
    const first = background(process.execPath, [TIDEMARK_BIN, "recover"], env);
    const pipe = await Promise.race([
      open(held.path, "w"), // returns once the recovery opened the pipe to read
      new Promise<never>((_, reject) => first.child.once("exit", (code) => reject(new Error(`recover exited (${code}) before it read segment ${HELD_SEGMENT}\n${first.stderr()}`)))),
    ]);
    const stopping = first.stop("SIGINT");
    await pipe.writeFile(held.bytes);
    await pipe.close();
    expect(await stopping).toBe(130);
    expect(first.stderr()).toMatch(/recover stopped; its progress is stored: run the same command again to resume/);
    await held.restore();

    const second = await tidemark(["recover"], env, { timeoutMs: 150_000 });
    expect(second.code, second.stderr).toBe(0);
    const summary = /recovered (\d+) events from (\d+) segments \(0 void\) \(after segment (\d+), where the last run stopped\)/.exec(second.stdout);
    expect(summary, second.stdout).not.toBeNull();
    // The second run settled exactly the segments the first did not.
    expect(Number(summary![3]) + Number(summary![2])).toBe(APPENDS);
    // The first run settled the held segment and stopped before the end.
    expect(Number(summary![3])).toBeGreaterThanOrEqual(HELD_SEGMENT);
    expect(Number(summary![3])).toBeLessThan(APPENDS);
    expect((await tidemark(["recover"], env)).stdout).toMatch(/nothing to recover/);

    const after = await tidemark(["verify", "--json"], env, { timeoutMs: 120_000 });
    expect(after.code, after.stdout).toBe(0);
    expect(JSON.parse(after.stdout)).toMatchObject({ clean: true, events: APPENDS, unverifiedLinks: 0 });

    await start();
    const again = createClient(EventStoreService, env["TIDEMARK_GRPC_ADDR"]!);
    try {
      for (const [stream, ids] of acked) {
        const read = await collect(again.readStream({ aggregateType: "Ledger", aggregateId: stream }));
        expect(read.map((r) => r.event!.eventId)).toEqual(ids);
        expect(read.map((r) => Number(r.event!.sequenceNumber))).toEqual(ids.map((_, i) => i + 1));
        const next = await again.appendEvents({ aggregateType: "Ledger", aggregateId: stream, expectation: { case: "expectedSeq", value: BigInt(ids.length) }, events: [{ eventId: `${stream}-after`, eventType: "Posted", data: {} as never }] });
        expect(Number(next.events[0]!.sequenceNumber)).toBe(ids.length + 1);
      }
    } finally {
      again.close();
    }
  });
});

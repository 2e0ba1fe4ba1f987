/**
 * Crash recovery in the embedded mode (docs/CONTRACT.md C1, C3, C4, C5 without Kafka). The all-in-one
 * process is killed with SIGKILL while a handler is inside its transaction: on restart the event is
 * delivered again (the checkpoint never passed it), taken over (counting an attempt) and applied
 * exactly once, and everything written before the crash is there. A handler that never returns
 * holds the process's only database session: the runtime abandons it when its lease runs out, so
 * the server keeps answering, and the event is dead-lettered once its attempts are exhausted.
 */
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventStoreService } from "../../gen/tidemark/v1/event_store_pb.js";
import { ProcessingService, ProcessingState, type HandlerStatus } from "../../gen/tidemark/v1/processing_pb.js";
import { createClient, type ClientOf } from "../../server/grpc/client.js";
import { background, cleanEnv, freePort, TIDEMARK_BIN, type Background } from "../helpers/cli-process.js";
import { waitFor } from "../helpers/wait-for.js";

const HANDLER = "test/helpers/embedded-crash-handler.ts";
let dir: string;
let env: Record<string, string>;
let running: Background | undefined;

async function start(extra: Record<string, string> = {}): Promise<Background> {
  running = background(process.execPath, [TIDEMARK_BIN, "start", "--consumer", HANDLER], { ...env, ...extra });
  await running.waitFor(/gRPC\s+127\.0\.0\.1:\d+/, "the banner");
  return running;
}

async function append(events: ClientOf<typeof EventStoreService>, id: string): Promise<void> {
  await events.appendEvents({ aggregateType: "Crash", aggregateId: id, expectation: { case: "noStream", value: {} }, events: [{ eventId: id, eventType: "Happened", data: {} }] });
}

async function crashyStatus(processing: ClientOf<typeof ProcessingService>, eventId: string, state: ProcessingState): Promise<HandlerStatus> {
  return waitFor(async () => {
    const response = await processing.getProcessingStatus({ key: { case: "eventId", value: eventId } });
    const handler = response.events[0]?.handlers.find((h) => h.handler === "crashy");
    return handler?.state === state ? handler : undefined;
  }, { what: `${eventId} ${ProcessingState[state]}`, timeoutMs: 40_000 });
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "tidemark-crash-"));
  env = cleanEnv({
    TIDEMARK_DATA_DIR: dir,
    TIDEMARK_GRPC_ADDR: `127.0.0.1:${await freePort()}`,
    TIDEMARK_LOG_LEVEL: "warn",
    TIDEMARK_CONSUMER_LEASE_SECONDS: "2",
    TIDEMARK_CONSUMER_HEARTBEAT_SECONDS: "0.5",
    TIDEMARK_CONSUMER_MAX_ATTEMPTS: "3",
  });
});

afterAll(async () => {
  await running?.stop("SIGKILL");
  await rm(dir, { recursive: true, force: true });
});

describe("embedded crash recovery", () => {
  it("takes over an event whose holder was killed mid-transaction and applies it once", async () => {
    const addr = env["TIDEMARK_GRPC_ADDR"]!;
    const first = await start({ TIDEMARK_TEST_BLOCK_EVENT: "crash-3" });
    const events = createClient(EventStoreService, addr);
    for (const id of ["crash-1", "crash-2", "crash-3"]) await append(events, id);
    events.close();
    await first.waitFor(/"blocked":"crash-3","attempt":1/, "the handler to block inside its transaction");
    expect(await first.stop("SIGKILL")).toBe("SIGKILL");

    await start();
    const processing = createClient(ProcessingService, addr);
    try {
      // The killed holder's claim counted; the takeover is the second attempt.
      expect((await crashyStatus(processing, "crash-3", ProcessingState.DONE)).attempts).toBe(2);
      for (const id of ["crash-1", "crash-2"]) expect((await crashyStatus(processing, id, ProcessingState.DONE)).attempts).toBe(1);
    } finally {
      processing.close();
    }
  });

  it("abandons a handler that outlives its lease, keeps serving, and dead-letters it when exhausted", async () => {
    const addr = env["TIDEMARK_GRPC_ADDR"]!;
    const events = createClient(EventStoreService, addr);
    const processing = createClient(ProcessingService, addr);
    try {
      await append(events, "hang-1");
      // The hung transaction holds the only session until its lease (2 s) runs out, not forever.
      const started = Date.now();
      await append(events, "crash-4");
      expect(Date.now() - started).toBeLessThan(10_000);
      await crashyStatus(processing, "crash-4", ProcessingState.DONE);
      const dead = await crashyStatus(processing, "hang-1", ProcessingState.DEAD_LETTERED);
      expect(dead.lastError).toMatch(/gave up after 3 attempts; last error: .*lease/);
    } finally {
      events.close();
      processing.close();
    }
    expect(await running!.stop("SIGTERM")).toBe(0);
    running = undefined;

    // Count the side effects offline, with the process stopped (the data directory is exclusive).
    const { openBackends } = await import("../../core/backends.js");
    const { loadServerConfig } = await import("../../server/config.js");
    const { sql } = await import("kysely");
    const backends = await openBackends(loadServerConfig(env));
    try {
      const { rows } = await sql<{ event_id: string; attempt: number }>`select event_id, attempt from crash_effects order by event_id`.execute(backends.database.db);
      expect(rows).toEqual([
        { event_id: "crash-1", attempt: 1 },
        { event_id: "crash-2", attempt: 1 },
        { event_id: "crash-3", attempt: 2 },
        { event_id: "crash-4", attempt: 1 },
      ]);
    } finally {
      await backends.close();
    }
  });
});

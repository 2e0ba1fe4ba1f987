/**
 * kill -9 of a server in the middle of a segment write (docs/CONTRACT.md W1, W5): with the segment
 * number drawn and nothing in S3, and with the segment in S3 but not committed. A server started
 * afterwards on the same database and bucket resolves the write within the deadline — the events
 * are found and committed, or the number is closed with a void segment — and every event that was
 * acknowledged before the crash is still there, in S3 and in every read.
 */
import type { ChildProcess } from "node:child_process";
import { afterAll, describe, expect, it } from "vitest";
import { EventStoreService } from "../../gen/tidemark/v1/event_store_pb.js";
import { createClient } from "../../server/grpc/client.js";
import { freePort } from "../helpers/cli-process.js";
import { collect, grpc } from "../helpers/grpc-errors.js";
import { spawnTsx } from "../helpers/json-lines.js";
import { storedEvents, storedSegments } from "../helpers/stored-events.js";
import { type EventStoreClient, stackEnv, startTestServer, testServerConfig, uniqueId } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";

const DEADLINE_MS = 1500;
const children = new Set<ChildProcess>();
afterAll(() => {
  for (const child of children) child.kill("SIGKILL");
});

const event = (eventId: string) => ({ eventId, eventType: "Noted", data: { n: eventId } as never });

describe.each(["before-put", "after-put"] as const)("kill -9 of the server at %s", (point) => {
  it("loses no acknowledged event, and the write is resolved by the next server within the deadline", { timeout: 120_000 }, async () => {
    const id = uniqueId("crash");
    const storage = { TIDEMARK_S3_BUCKET: `tm-${id}`, TIDEMARK_PG_SCHEMA: id, TIDEMARK_WRITE_DEADLINE_MS: String(DEADLINE_MS), TIDEMARK_SWEEP_INTERVAL_MS: "100" };
    const port = await freePort();
    const child = spawnTsx(
      "test/helpers/server-crash-child.ts",
      { ...stackEnv(), ...storage, TIDEMARK_GRPC_ADDR: `127.0.0.1:${port}`, TIDEMARK_LOG_LEVEL: "warn", TIDEMARK_TEST_PAUSE_AT: point, TIDEMARK_TEST_PAUSE_EVENT: "doomed" },
      "server",
      children,
    );
    await child.waitForLine((l) => l["listening"] !== undefined, "the server to listen");
    const client = createClient(EventStoreService, `127.0.0.1:${port}`) as EventStoreClient;
    const acknowledged: string[] = [];
    try {
      for (let i = 0; i < 20; i++) {
        const out = await client.appendEvents({ aggregateType: "Task", aggregateId: `a${i % 4}`, expectation: { case: "any", value: {} }, events: [event(`ack-${i}`)] });
        acknowledged.push(out.events[0]!.eventId);
      }
      const doomed = client
        .appendEvents({ aggregateType: "Task", aggregateId: "a0", expectation: { case: "any", value: {} }, events: [event("doomed")] })
        .then(
          () => "OK",
          (e: grpc.ServiceError) => grpc.status[e.code],
        );
      const paused = await child.waitForLine((l) => l["paused"] === point, `the server to pause at ${point}`);
      child.child.kill("SIGKILL");
      await child.exited;
      expect(await doomed).toBe("UNAVAILABLE");

      const next = await startTestServer(testServerConfig(storage));
      try {
        const db = next.server.database.db;
        await waitFor(async () => (await db.selectFrom("segments").select("state").where("segment", "=", Number(paused["segment"])).executeTakeFirst())?.state !== "pending", {
          what: "the next server to settle the crashed write",
          timeoutMs: DEADLINE_MS + 15_000,
        });
        const expected = point === "after-put" ? [...acknowledged, "doomed"] : acknowledged;
        await waitFor(async () => (await db.selectFrom("event_log").select("state").where("event_id", "=", "doomed").executeTakeFirst())?.state !== "pending", {
          what: "the doomed event's slot to be resolved",
        });
        const read = (
          await Promise.all([0, 1, 2, 3].map((a) => collect(next.events.readStream({ aggregateType: "Task", aggregateId: `a${a}` }))))
        ).flatMap((responses) => responses.map((r) => r.event!.eventId));
        expect(read.sort()).toEqual([...expected].sort());
        const inS3 = (await storedEvents(next.server.objects)).map((e) => e.eventId);
        expect(inS3.sort()).toEqual([...expected].sort());
        const voided = (await storedSegments(next.server.objects)).filter((s) => s.content.type === "void").length;
        expect(voided).toBe(point === "before-put" ? 1 : 0);
      } finally {
        await next.close();
      }
    } finally {
      client.close();
      child.child.kill("SIGKILL");
    }
  });
});

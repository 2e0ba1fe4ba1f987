/**
 * The segment writer's places (server/segment-writer.ts): a flush gives its place back once its
 * segment is in S3, not when its commit ends. A commit waits for the stream predecessor of each of
 * its slots (R2); when that predecessor is still queued behind it in the writer, a place held
 * across the wait leaves the predecessor no flush to go in. Both storages.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../core/log.js";
import { Committer } from "../../server/committer.js";
import { SegmentWriter, type PendingWrite } from "../../server/segment-writer.js";
import { reserveNoted } from "../helpers/relay-writes.js";
import { startTestServer, type TestServer } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t?.close();
});

/** An append to `aggregateId` reserved alone, as EventStore.append does when its flush cannot reserve it. */
const reserveOne = (aggregateId: string, eventId: string): Promise<PendingWrite> => reserveNoted(t.server, "Order", aggregateId, eventId, {}, "segment-writer-test");

describe("segment writer", () => {
  it("writes a stream's event queued behind its successor's flush, with one place (no wait for a commit deadline)", async () => {
    const log = createLogger("segment-writer-test", "fatal");
    // A commit deadline well inside the test's timeout: with the place held until the commit ends,
    // the successor waits it out and fails, and only then is its predecessor written.
    const committer = new Committer(t.server.database.db, t.config.pgSchema, log, { maxWaitMs: 4_000 });
    let first: PendingWrite | undefined;
    const writer = new SegmentWriter({
      db: t.server.database.db,
      objects: t.server.objects,
      committer,
      log,
      settings: { maxBytes: 1 << 20, maxEvents: 100, maxInFlight: 1, lingerMs: 0 },
      now: () => new Date(),
      resync: () => Promise.reject(new Error("no resync expected")),
      settleSoon: () => {},
      // The predecessor's flush goes ahead only once the successor's commit is deferred behind
      // it (R2), which the committer reports (tidemark_commit_deferred).
      beforeWrite: async (slot) => {
        if (slot.logId === first?.slots[0]!.logId) await waitFor(() => committer.deferred === 1, { what: "the successor's commit to wait for its predecessor" });
      },
    });
    try {
      first = await reserveOne("o-queued", "sw-1");
      const second = await reserveOne("o-queued", "sw-2");
      expect(second.slots[0]!.seq).toBe(first.slots[0]!.seq + 1);
      // The successor reaches the writer first (two reservations answered out of their lock
      // order), takes the only place, and its commit waits for the predecessor queued behind it.
      const late = writer.write(second);
      const early = writer.write(first);
      expect({ inFlight: writer.stats.inFlight, queued: writer.stats.queued }).toEqual({ inFlight: 1, queued: 1 });
      const [p1, p2] = await Promise.all([early, late]);
      expect(p1.get(first.slots[0]!.logId)!).toBeLessThan(p2.get(second.slots[0]!.logId)!);
      expect(writer.stats).toMatchObject({ segments: 2, inFlight: 0, queued: 0 });
      expect(committer.deferred).toBe(0);
    } finally {
      writer.close();
      committer.close();
    }
  });
});

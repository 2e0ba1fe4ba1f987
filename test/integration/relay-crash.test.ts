/**
 * kill -9 of a real relay process at each step of a batch (docs/CONTRACT.md R1, R4): after the read,
 * after Kafka acknowledged but before the checkpoint, and after the checkpoint. A restarted relay
 * publishes everything; duplicates come only from the acknowledged-but-not-checkpointed tail.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readCheckpoint } from "../../relay/relay-repository.js";
import { writeSideView, type RelayTables } from "../../core/db/schema.js";
import type { Kysely } from "kysely";
import { copiesByEvent, deleteTopics, orderViolations, startCollector } from "../helpers/relay-kafka.js";
import { killAllRelays, spawnRelay } from "../helpers/relay-process.js";
import { relayEnv, relayTopics } from "../helpers/relay-test.js";
import { startTestServer, stackBrokers, type TestServer } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";

const BATCH = 10;
const EVENTS = 60;
const topics: string[] = [];

let t: TestServer;
let db: Kysely<RelayTables>;

beforeAll(async () => {
  t = await startTestServer();
  db = t.server.database.db as unknown as Kysely<RelayTables>;
  for (let i = 0; i < EVENTS; i++) {
    await t.events.appendEvents({
      aggregateType: "Crash",
      aggregateId: `c${i % 7}`,
      expectation: { case: "any", value: {} },
      events: [{ eventId: `crash-${i}`, eventType: "Noted", data: { i } as never }],
    });
  }
});

afterAll(async () => {
  await killAllRelays();
  await deleteTopics(stackBrokers(), topics);
  await t?.close();
});

const steps = [
  // The batch was read but not produced: nothing of it is on Kafka, so nothing repeats.
  { step: "after-read", duplicatesOfPausedBatch: false },
  // Kafka has the batch, the checkpoint does not: exactly that batch is published again.
  { step: "after-produce", duplicatesOfPausedBatch: true },
  // The checkpoint covers the batch: nothing repeats.
  { step: "after-checkpoint", duplicatesOfPausedBatch: false },
] as const;

describe("R1/R4 kill -9 of the relay process", () => {
  for (const { step, duplicatesOfPausedBatch } of steps) {
    it(`loses nothing and repeats at most the unacknowledged tail when killed ${step}`, { timeout: 120_000 }, async () => {
      const names = relayTopics(`rk`);
      topics.push(names.topic, names.deadLetter);
      const env = relayEnv(t.config, {
        TIDEMARK_RELAY_NAME: `crash-${step}`,
        TIDEMARK_RELAY_TOPIC: names.topic,
        TIDEMARK_DEAD_LETTER_TOPIC: names.deadLetter,
        TIDEMARK_RELAY_BATCH_SIZE: String(BATCH),
        // Read, produce and checkpoint strictly alternate, so the pause is at one well-defined step.
        TIDEMARK_RELAY_READ_AHEAD: "0",
        TIDEMARK_RELAY_LEASE_MS: "3000",
      });
      const crashing = spawnRelay({ ...env, TIDEMARK_TEST_PAUSE_AT: step, TIDEMARK_TEST_PAUSE_BATCH: "3" }, "test/helpers/relay-crash-child.ts");
      const paused = await crashing.waitForLine((l) => l["paused"] === step, `the relay to pause ${step}`);
      crashing.signal("SIGKILL");
      expect(await crashing.exited).toBe("SIGKILL");

      const checkpointAtKill = (await readCheckpoint(db, `crash-${step}`)).position;
      expect(checkpointAtKill).toBe(step === "after-checkpoint" ? paused["last"] : paused["after"]);

      const collector = await startCollector(stackBrokers(), [names.topic]);
      try {
        // What the killed relay left on Kafka: batches 1-2, plus batch 3 unless killed before producing it.
        const producedBeforeKill = step === "after-read" ? 2 * BATCH : 3 * BATCH;
        await collector.waitUntil((m) => m.length >= producedBeforeKill, "the killed relay's messages");

        const restarted = spawnRelay(env);
        const head = (await writeSideView(db).selectFrom("global_counter").select("position").executeTakeFirstOrThrow()).position;
        await waitFor(async () => (await readCheckpoint(db, `crash-${step}`)).position === head, { timeoutMs: 60_000, what: "the restarted relay to catch up" });
        await collector.waitForEvents(Array.from({ length: EVENTS }, (_, i) => `crash-${i}`));
        restarted.signal("SIGTERM");
        expect(await restarted.exited).toBe(0);

        const copies = copiesByEvent(collector.messages);
        expect(copies.size).toBe(EVENTS);
        const duplicated = [...copies.values()].filter((c) => c.length > 1).map((c) => c[0]!.position).sort((a, b) => a - b);
        if (duplicatesOfPausedBatch) {
          // R4: only positions above the durable checkpoint, and at most the one batch in flight.
          expect(duplicated.length).toBeLessThanOrEqual(BATCH);
          for (const p of duplicated) expect(p > checkpointAtKill && p <= paused["last"]).toBe(true);
          expect(duplicated).toEqual(Array.from({ length: paused["last"] - paused["after"] }, (_, i) => paused["after"] + 1 + i));
        } else {
          expect(duplicated).toEqual([]);
        }
        expect([...copies.values()].every((c) => c.length <= 2)).toBe(true);
        expect(orderViolations(collector.messages)).toEqual([]);
      } finally {
        await collector.close();
      }
    });
  }
});

/**
 * A relay whose term hangs on one step (docs/CONTRACT.md R1, R5): a client call that never settles
 * must not hold the lease forever. The active relay's step after Kafka's acknowledgement never
 * returns once; the relay stops renewing after TIDEMARK_RELAY_STALL_MS, the lease expires, and a
 * new term (the standby's, or this instance's) publishes everything, in order.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RelayHandle } from "../../relay/app.js";
import { readCheckpoint } from "../../relay/relay-repository.js";
import type { RelayTables } from "../../core/db/schema.js";
import type { Kysely } from "kysely";
import { copiesByEvent, deleteTopics, orderViolations, startCollector } from "../helpers/relay-kafka.js";
import { captureLog, relayTestConfig, relayTopics, startTestRelay, stopAllRelays } from "../helpers/relay-test.js";
import { startTestServer, stackBrokers, type TestServer } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";

const names = relayTopics("rs");
const EVENTS = 40;
let t: TestServer;

beforeAll(async () => {
  t = await startTestServer();
});

afterAll(async () => {
  await stopAllRelays();
  await deleteTopics(stackBrokers(), [names.topic, names.deadLetter]);
  await t?.close();
});

async function head(): Promise<number> {
  return (await t.server.database.db.selectFrom("global_counter").select("position").executeTakeFirstOrThrow()).position;
}

async function stalls(relay: RelayHandle): Promise<number> {
  return (await relay.metrics.registry.getSingleMetric("tidemark_relay_stalls_total")?.get())?.values[0]?.value ?? 0;
}

describe("a hung step of the active relay's term", () => {
  it("ends the term after the stall limit, and a new term publishes everything", { timeout: 120_000 }, async () => {
    const env = {
      TIDEMARK_RELAY_NAME: "stall",
      TIDEMARK_RELAY_TOPIC: names.topic,
      TIDEMARK_DEAD_LETTER_TOPIC: names.deadLetter,
      TIDEMARK_RELAY_BATCH_SIZE: "10",
      TIDEMARK_RELAY_LEASE_MS: "3000",
      TIDEMARK_RELAY_STALL_MS: "2000",
    };
    const captured = captureLog("stalling-relay");
    let hung = false;
    const stalling = await startTestRelay(relayTestConfig(t.config, env), {
      log: captured.log,
      holder: "stalling",
      hooks: {
        // Once: a call that never settles, like a client library's connect that hangs for good.
        afterProduce: () => {
          if (hung) return;
          hung = true;
          return new Promise<void>(() => {});
        },
      },
    });
    await waitFor(() => stalling.status().active && stalling.status().topicsReady, { what: "the first relay to take the lease and create the topics", timeoutMs: 60_000 });
    const standby = await startTestRelay(relayTestConfig(t.config, env), { holder: "standby" });
    const collector = await startCollector(stackBrokers(), [names.topic]);
    try {
      const ids: string[] = [];
      for (let i = 0; i < EVENTS; i++) {
        const id = `stall-${i}`;
        ids.push(id);
        await t.events.appendEvents({ aggregateType: "Stall", aggregateId: `s${i % 3}`, expectation: { case: "any", value: {} }, events: [{ eventId: id, eventType: "Noted", data: { i } as never }] });
      }
      await waitFor(() => hung, { what: "the hung step", timeoutMs: 30_000 });
      const end = await head();
      const db = t.server.database.db as unknown as Kysely<RelayTables>;
      await waitFor(async () => (await readCheckpoint(db, "stall")).position === end, { what: "a new term to publish past the hung one", timeoutMs: 60_000 });

      expect(await stalls(stalling)).toBe(1);
      const line = captured.lines.find((l) => l["msg"]?.startsWith("relay term stalled"));
      expect(line?.["step"]).toBe("the afterProduce hook");
      expect(stalling.status().lastTerm === "stalled" || standby.status().published > 0).toBe(true);
      await collector.waitForEvents(ids, 60_000);
      expect(copiesByEvent(collector.messages).size).toBe(EVENTS);
      expect(orderViolations(collector.messages)).toEqual([]);
    } finally {
      await collector.close();
    }
  });
});

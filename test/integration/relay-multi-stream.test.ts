/**
 * The relay and multi-stream appends (docs/CONTRACT.md W9, R1, R2) against real PostgreSQL, S3Proxy
 * and Kafka: AppendToStreams calls over three streams each, run by concurrent writers beside
 * single-stream appends to the same aggregates, reach Kafka each as one unbroken run of messages in
 * request order, at the contiguous positions the calls were answered with.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RelayHandle } from "../../relay/app.js";
import { copiesByEvent, deleteTopics, orderViolations, startCollector, type Collector } from "../helpers/relay-kafka.js";
import { relayTestConfig, relayTopics, startTestRelay, stopAllRelays } from "../helpers/relay-test.js";
import { startTestServer, stackBrokers, type TestServer } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";

const names = relayTopics("rm");
let t: TestServer;
let relay: RelayHandle;
let collector: Collector;
beforeAll(async () => {
  t = await startTestServer();
  // One partition: Kafka's offsets show the order in which the relay produced.
  relay = await startTestRelay(relayTestConfig(t.config, { TIDEMARK_RELAY_TOPIC: names.topic, TIDEMARK_DEAD_LETTER_TOPIC: names.deadLetter, TIDEMARK_RELAY_PARTITIONS: "1", TIDEMARK_RELAY_BATCH_SIZE: "7" }));
  await waitFor(() => relay.status().topicsReady, { what: "topics", timeoutMs: 60_000 });
  collector = await startCollector(stackBrokers(), [names.topic]);
});
afterAll(async () => {
  await collector?.close();
  await stopAllRelays();
  await deleteTopics(stackBrokers(), [names.topic, names.deadLetter]);
  await t?.close();
});

describe("W9 one call, one run on Kafka", () => {
  it("publishes each call's events contiguously and in request order, among concurrent appends", { timeout: 180_000 }, async () => {
    const writers = 8;
    const callsPerWriter = 12;
    const calls: string[][] = [];
    const singles: string[] = [];
    const write = async (w: number) => {
      for (let i = 0; i < callsPerWriter; i++) {
        // Three of six shared aggregates per call, in a rotating order, one or two events each.
        const streams = [0, 1, 2].map((k) => {
          const a = (w + i + k * 2) % 6;
          return {
            aggregateType: "Ledger",
            aggregateId: `acct-${a}`,
            expectation: { case: "any" as const, value: {} },
            events: Array.from({ length: 1 + ((w + k) % 2) }, (_, e) => ({ eventId: `m-${w}-${i}-${k}-${e}`, eventType: "Posted", data: { w, i, k, e } as never })),
          };
        });
        const out = await t.events.appendToStreams({ streams });
        const ids = streams.flatMap((s) => s.events.map((e) => e.eventId));
        const positions = out.streams.flatMap((s) => s.events.map((e) => e.globalPosition));
        expect(positions).toEqual(positions.map((_, n) => positions[0]! + BigInt(n)));
        calls.push(ids);
        // A single-stream append to one of the same aggregates between calls.
        const single = `s-${w}-${i}`;
        await t.events.appendEvents({ aggregateType: "Ledger", aggregateId: `acct-${(w + i) % 6}`, expectation: { case: "any", value: {} }, events: [{ eventId: single, eventType: "Posted", data: {} as never }] });
        singles.push(single);
      }
    };
    await Promise.all(Array.from({ length: writers }, (_, w) => write(w)));
    await collector.waitForEvents([...calls.flat(), ...singles]);

    expect(orderViolations(collector.messages)).toEqual([]);
    const firsts = [...copiesByEvent(collector.messages).values()].map((copies) => copies.sort((a, b) => a.offset - b.offset)[0]!).sort((a, b) => a.offset - b.offset);
    // Produced in position order, so a call's run of positions is a run of offsets.
    expect(firsts.map((m) => m.position)).toEqual([...firsts.map((m) => m.position)].sort((a, b) => a - b));
    const index = new Map(firsts.map((m, i) => [m.eventId, i]));
    for (const ids of calls) {
      const at = ids.map((id) => index.get(id)!);
      expect(at, ids[0]).toEqual(at.map((_, n) => at[0]! + n));
    }
  });
});

/**
 * The Kafka message source after kafkajs gives its consumer up (docs/CONTRACT.md C3: an outage of
 * Kafka pauses and retries, it never stops a handler for good). kafkajs restarts a crashed consumer
 * only when the error is marked retriable; after any other it disconnects the consumer and emits
 * CRASH with `restart: false`. The chaos harness met one ("Broker not connected", a plain Error,
 * while reconnecting to a restarted broker): the process went on living, neither consuming nor
 * exiting, 4107 messages behind. Here the crash comes from a TypeError in the first batch, which
 * kafkajs treats as unrecoverable the same way: the source must start a new consumer that
 * delivers the uncommitted messages again.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KafkaSource } from "../../consumers/index.js";
import type { SourceBatch } from "../../core/index.js";
import { consumerTestId } from "../helpers/consumer-env.js";
import { openTestKafka, testKafka, type TestKafka } from "../helpers/consumer-kafka.js";
import { captureLog } from "../helpers/relay-test.js";
import { waitFor } from "../helpers/wait-for.js";

const id = consumerTestId("ksrc");
let tk: TestKafka;

beforeAll(async () => {
  tk = await openTestKafka(`${id}.`);
});
afterAll(async () => {
  await tk?.close();
});

describe("the Kafka message source", () => {
  it("starts a new consumer when kafkajs gives one up, and delivers the uncommitted messages again (C3)", async () => {
    const topic = `${id}.events`;
    await tk.createTopic(topic);
    for (const n of [0, 1, 2]) await tk.produceRaw(topic, "k", `m${n}`);

    const { log, lines } = captureLog("kafka-source-test");
    const source = new KafkaSource({
      kafka: testKafka("kafka-source-test"),
      groupId: `${id}.group`,
      topics: [topic],
      fromBeginning: true,
      sessionTimeoutMs: 6000,
      partitionsConsumedConcurrently: 1,
      log,
      relaunchDelayMs: 100,
    });
    const delivered: string[][] = [];
    let batches = 0;
    const running: boolean[] = [];
    try {
      await source.start({
        async onBatch(batch: SourceBatch) {
          batches++;
          delivered.push(batch.messages.map((m) => m.value?.toString("utf8") ?? ""));
          if (batches === 1) throw new TypeError("planted: the first batch fails as kafkajs cannot retry");
          for (const m of batch.messages) batch.resolveOffset(m.offset);
        },
        onAssignment() {},
        onRunning(r) {
          running.push(r);
        },
      });

      // Delivered again, from the first uncommitted message, by a consumer kafkajs did not restart.
      await waitFor(() => delivered.length >= 2 && delivered.flat().filter((v) => v === "m0").length >= 2, { timeoutMs: 30_000, what: "the messages to be delivered again after the crash" });
      expect(lines.some((l) => l["msg"] === "kafka consumer crashed" && l["restart"] === false)).toBe(true);
      expect(running).toEqual(expect.arrayContaining([true, false]));
      expect(running.at(-1)).toBe(true);

      // And the new consumer commits: the group's offset reaches the end.
      await source.commit(topic, 0, "3");
      expect(await tk.committed(`${id}.group`, topic)).toEqual([3]);
    } finally {
      await source.stop();
    }
  });
});

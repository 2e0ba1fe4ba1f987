/**
 * The relay's idempotent producer against the real broker, with Produce responses lost on the way
 * back (the broker appended the batch, the client never heard): retrying the same batch writes it
 * once (R2, R3), and a different batch after an unacknowledged one is never silently dropped (R1).
 *
 * The control records a kafkajs 2.2.4 hazard: after a failed send it rolls the producer's sequence
 * numbers back, so the next, different batch reuses them and the broker acknowledges it as a
 * duplicate of the lost one without writing it.
 */
import { Kafka, logLevel, Partitioners } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../core/log.js";
import { ensureTopics, KafkaPublisher, type KafkaSettings } from "../../relay/kafka-publisher.js";
import { startDropProxy, type DropProxy } from "../helpers/kafka-drop-proxy.js";
import { deleteTopics, startCollector } from "../helpers/relay-kafka.js";
import { relayTopics } from "../helpers/relay-test.js";
import { stackBrokers } from "../helpers/test-server.js";

const log = createLogger("test-producer", "silent");
const topics: string[] = [];
let proxy: DropProxy;

beforeAll(async () => {
  const [host, port] = stackBrokers()[0]!.split(":");
  proxy = await startDropProxy(host!, Number(port));
});
afterAll(async () => {
  await proxy?.close();
  await deleteTopics(stackBrokers(), topics);
});

const settings: KafkaSettings = { brokers: stackBrokers(), clientId: "relay-producer-test", requestTimeoutMs: 2000, connectionTimeoutMs: 1000 };
const viaProxy = () =>
  new Kafka({ clientId: "relay-producer-test", brokers: stackBrokers(), socketFactory: proxy.socketFactory, logLevel: logLevel.NOTHING, retry: { retries: 1, initialRetryTime: 100, maxRetryTime: 300 } });

async function freshTopic(): Promise<string> {
  const topic = relayTopics("rpp").topic;
  topics.push(topic);
  await ensureTopics(viaProxy(), { topics: [topic], partitions: 1, replication: 1, retentionMs: 3_600_000 }, log);
  return topic;
}

async function topicValues(topic: string, expected: number): Promise<string[]> {
  const collector = await startCollector(stackBrokers(), [topic]);
  try {
    await collector.waitUntil((m) => m.length >= expected, `${expected} messages`, 30_000);
    return [...collector.messages].sort((a, b) => a.offset - b.offset).map((m) => m.eventId);
  } finally {
    await collector.close();
  }
}

const message = (topic: string, id: string) => ({ topic, key: "k", value: JSON.stringify({ event_id: id, global_position: "0" }), headers: {} });

describe("idempotent production when acknowledgements are lost", () => {
  it("control: raw kafkajs acknowledges a different batch after a failed one without writing it", async () => {
    const topic = await freshTopic();
    const producer = viaProxy().producer({ idempotent: true, maxInFlightRequests: 1, createPartitioner: Partitioners.DefaultPartitioner, retry: { retries: 1 } });
    await producer.connect();
    try {
      const send = (ids: string[]) => producer.send({ topic, acks: -1, messages: ids.map((id) => ({ key: "k", value: JSON.stringify({ event_id: id, global_position: "0" }) })) });
      await send(["warm-up"]);
      proxy.dropProduceResponses(2);
      await expect(send(["a1", "a2"])).rejects.toThrow();
      await send(["b1", "b2"]); // resolves: "acknowledged"
      await send(["c1"]);
      expect(await topicValues(topic, 4)).toEqual(["warm-up", "a1", "a2", "c1"]);
    } finally {
      await producer.disconnect();
    }
  });

  it("KafkaPublisher writes a retried batch once and never loses the next batch", async () => {
    const topic = await freshTopic();
    const publisher = new KafkaPublisher(viaProxy(), settings, log);
    try {
      await publisher.publish({ id: "0-1", messages: [message(topic, "warm-up")] });
      proxy.dropProduceResponses(2);
      await expect(publisher.publish({ id: "1-3", messages: [message(topic, "a1"), message(topic, "a2")] })).rejects.toThrow();
      // The relay retries the same batch: the broker recognises it and writes nothing twice.
      await publisher.publish({ id: "1-3", messages: [message(topic, "a1"), message(topic, "a2")] });
      await publisher.publish({ id: "3-4", messages: [message(topic, "b1")] });
      proxy.dropProduceResponses(2);
      await expect(publisher.publish({ id: "4-6", messages: [message(topic, "c1"), message(topic, "c2")] })).rejects.toThrow();
      // A different batch after an unacknowledged one (a new term would do this) gets a new producer.
      await publisher.publish({ id: "4-7", messages: [message(topic, "c1"), message(topic, "c2"), message(topic, "c3")] });
      // a1, a2 once; c1, c2 twice (the lost attempt was appended): duplicates, never a loss.
      expect(await topicValues(topic, 9)).toEqual(["warm-up", "a1", "a2", "b1", "c1", "c2", "c1", "c2", "c3"]);
    } finally {
      await publisher.reset();
    }
  });
});

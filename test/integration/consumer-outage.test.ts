/**
 * Infrastructure outages (docs/CONTRACT.md C3, C5; weakness 12 of the origin): the registry's
 * PostgreSQL or Kafka is cut mid-stream by a TCP proxy (a real network failure). The partition
 * pauses, its offset does not advance, nothing is skipped or dead-lettered for it, and after
 * recovery every event is applied exactly once.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import net from "node:net";
import { Kafka, logLevel } from "kafkajs";
import type { Database } from "../../core/db/database.js";
import { type Handler, PoisonError, startConsumer } from "../../consumers/index.js";
import { consumerTestConfig, consumerTestId, dropTestDatabase, effectCounts, effectHandler, grouped, openTestDatabase, registryRow, testEnvelope } from "../helpers/consumer-env.js";
import { collectTopic, openTestKafka, type TestKafka } from "../helpers/consumer-kafka.js";
import { startTcpProxy, type TcpProxy } from "../helpers/tcp-proxy.js";
import { stackEnv } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";
import type { ConsumerDatabase } from "../../core/index.js";

const id = consumerTestId("cout");
let database: Database<ConsumerDatabase>;
let tk: TestKafka;
const proxies: TcpProxy[] = [];

beforeAll(async () => {
  database = await openTestDatabase(id);
  tk = await openTestKafka(`${id}.`);
});
afterAll(async () => {
  for (const p of proxies) await p.close();
  await tk?.close();
  await dropTestDatabase(database);
});

async function counterValue(counter: { get(): Promise<{ values: Array<{ value: number }> }> }): Promise<number> {
  return (await counter.get()).values.reduce((sum, v) => sum + v.value, 0);
}

// Per event, and through the group path (the handler with handleBatch): the same outcome.
describe.each([
  { mode: "per event", name: "pgdown", wrap: (h: Handler) => h, inGroups: false },
  { mode: "grouped", name: "pgdown-grouped", wrap: grouped, inGroups: true },
])("registry outage ($mode)", ({ name, wrap, inGroups }) => {
  it("pauses without skipping while PostgreSQL is unreachable, then applies everything once", async () => {
    const topic = `${id}.${name}`;
    await tk.createTopic(topic);
    const pgUrl = new URL(stackEnv()["TIDEMARK_PG_URL"]!);
    const proxy = await startTcpProxy(pgUrl.hostname, Number(pgUrl.port || 5432));
    proxies.push(proxy);
    pgUrl.host = `127.0.0.1:${proxy.port}`;
    // The consumer reaches PostgreSQL only through the proxy; the test watches directly.
    const config = consumerTestConfig(id, { TIDEMARK_CONSUMER_TOPICS: topic, TIDEMARK_PG_URL: pgUrl.toString() });
    const handler = wrap(effectHandler(name, () => new Promise((r) => setTimeout(r, 10))));
    const events = Array.from({ length: 60 }, (_, i) => testEnvelope({ eventId: `${id}-${name}-${i}`, aggregateId: `a${i % 6}`, seq: Math.floor(i / 6) + 1 }));
    const handle = await startConsumer(config, handler, { housekeeping: false });
    try {
      await tk.produce(topic, events.slice(0, 20));
      await waitFor(async () => (await effectCounts(database.db, name)).size >= 5, { what: "the stream to be under way" });

      proxy.down();
      await tk.produce(topic, events.slice(20));
      const failures = await counterValue(handle.metrics.infrastructureFailures);
      await waitFor(async () => (await counterValue(handle.metrics.infrastructureFailures)) > failures + 5, { what: "the consumer to hit the outage repeatedly" });
      expect(await counterValue(handle.metrics.pausedPartitions)).toBe(1);
      const committedDuring = (await tk.committed(`${id}.${name}`, topic))[0]!;
      const appliedDuring = (await effectCounts(database.db, name)).size;
      // The committed offset never passes an event without a recorded outcome.
      expect(committedDuring).toBeLessThanOrEqual(appliedDuring);
      await waitFor(async () => (await counterValue(handle.metrics.infrastructureFailures)) > failures + 15, { what: "more failed attempts" });
      expect((await tk.committed(`${id}.${name}`, topic))[0]).toBe(committedDuring);

      proxy.up();
      await waitFor(async () => (await tk.committed(`${id}.${name}`, topic))[0] === 60, { timeoutMs: 30_000, what: "every offset to be committed after recovery" });
      const counts = await effectCounts(database.db, name);
      expect(counts.size).toBe(60);
      expect([...counts.values()].every((n) => n === 1)).toBe(true);
      const states = await database.db.selectFrom("processed_events").select(["state", "attempts"]).where("handler", "=", name).execute();
      expect(states.every((r) => r.state === "done")).toBe(true);
      // An outage is not the event's fault: a resumed claim does not count an attempt.
      expect(states.every((r) => r.attempts === 1)).toBe(true);
      expect(await counterValue(handle.metrics.pausedPartitions)).toBe(0);
      const groupedEvents = (await handle.metrics.groupSize.get()).values.find((v) => v.metricName === "tidemark_consumer_group_size_sum")?.value ?? 0;
      expect(groupedEvents > 0).toBe(inGroups);
      for (let a = 0; a < 6; a++) {
        const mark = await database.db.selectFrom("consumer_watermarks").select("applied_seq").where("handler", "=", name).where("aggregate_id", "=", `a${a}`).executeTakeFirst();
        expect(mark?.applied_seq).toBe(10);
      }
    } finally {
      await handle.stop();
    }
  });
});

describe("Kafka outage", () => {
  it("keeps a poison message unacknowledged until its dead letter is produced, and commits nothing past it", async () => {
    const topic = `${id}.kafkadown`;
    await tk.createTopic(topic);
    const [host, port] = stackEnv()["TIDEMARK_KAFKA_BROKERS"]!.split(",")[0]!.split(":");
    const proxy = await startTcpProxy(host!, Number(port));
    proxies.push(proxy);
    // Every connection of this consumer's client, also those to the broker metadata names, goes through the proxy.
    const kafka = new Kafka({
      clientId: "consumer-outage",
      brokers: [`${host}:${port}`],
      logLevel: logLevel.NOTHING,
      retry: { initialRetryTime: 100, maxRetryTime: 1000, retries: 5 },
      socketFactory: ({ onConnect }) => net.connect({ host: "127.0.0.1", port: proxy.port }, onConnect),
    });
    const config = consumerTestConfig(id, { TIDEMARK_CONSUMER_TOPICS: topic });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const handler = effectHandler("kafkadown", async (eventId) => {
      if (eventId === `${id}-kd-gated`) await gate;
      if (eventId === `${id}-kd-poison`) throw new PoisonError("rejected by validation");
    });
    const handle = await startConsumer(config, handler, { database, kafka, housekeeping: false });
    const dlq = await collectTopic(tk.kafka, config.deadLetterTopic);
    try {
      await tk.produce(topic, [testEnvelope({ eventId: `${id}-kd-gated`, aggregateId: "g", seq: 1 })]);
      // The poison waits behind the gated event of its aggregate, so it is handled during the outage.
      await tk.produce(topic, [
        testEnvelope({ eventId: `${id}-kd-poison`, aggregateId: "g", seq: 2 }),
        testEnvelope({ eventId: `${id}-kd-after`, aggregateId: "h", seq: 1 }),
      ]);
      await waitFor(async () => (await registryRow(database.db, "kafkadown", `${id}-kd-after`))?.state === "done", { what: "the message after the poison to be applied" });
      expect(await registryRow(database.db, "kafkadown", `${id}-kd-poison`)).toBeUndefined();

      // Kafka goes away while the gated event and the poison are unfinished.
      proxy.down();
      release();
      await waitFor(async () => (await registryRow(database.db, "kafkadown", `${id}-kd-gated`))?.state === "done", { what: "the gated event to be applied" });
      await waitFor(async () => (await counterValue(handle.metrics.infrastructureFailures)) > 2, { what: "the dead-letter produce to fail" });
      expect((await registryRow(database.db, "kafkadown", `${id}-kd-poison`))?.state).toBe("processing");
      expect(dlq.messages).toHaveLength(0);
      expect((await tk.committed(`${id}.kafkadown`, topic))[0]).toBeLessThanOrEqual(1);

      proxy.up();
      await waitFor(async () => (await registryRow(database.db, "kafkadown", `${id}-kd-poison`))?.state === "dead_lettered", { timeoutMs: 45_000, what: "the poison to be dead-lettered after recovery" });
      await dlq.waitFor(1, "the dead letter");
      expect(dlq.messages.every((m) => m.headers["dlq-event-id"] === `${id}-kd-poison`)).toBe(true);
      await waitFor(async () => (await tk.committed(`${id}.kafkadown`, topic))[0] === 3, { timeoutMs: 45_000, what: "offsets committed to the end" });
      expect(await effectCounts(database.db, "kafkadown")).toEqual(new Map([[`${id}-kd-gated`, 1], [`${id}-kd-after`, 1]]));
    } finally {
      await dlq.close();
      await handle.stop();
    }
  });
});

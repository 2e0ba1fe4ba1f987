/**
 * End to end with the real relay (relay/ startRelay): commands → server → S3 + commit log → relay →
 * Kafka → projection → read model. Read-your-writes through AT_LEAST_POSITION, the processing
 * status of a command, and the figures docs/CONSUMERS.md quotes: command → read-model latency
 * (p50/p99) and the projection's throughput on a backlog.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDatabase, type Database } from "../../core/db/database.js";
import { ReadConsistency } from "../../gen/tidemark/v1/instance_pb.js";
import type { RelayHandle } from "../../relay/index.js";
import { type ProjectionHandle, startProjection } from "../../consumers/index.js";
import { consumerTestConfig, consumerTestId } from "../helpers/consumer-env.js";
import { openTestKafka } from "../helpers/consumer-kafka.js";
import { startTestRelay, startTestServer, stackEnv, testServerConfig, type TestServer } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";
import { type ConsumerDatabase, createInstanceReadModel } from "../../core/index.js";

const id = consumerTestId("ce2e");
let t: TestServer;
let relay: RelayHandle;
let database: Database<ConsumerDatabase>;
let projection: ProjectionHandle | undefined;
const topic = `${id}.events`;
const deadLetter = `${id}.dead-letter`;

const projectionConfig = () => consumerTestConfig(id, { TIDEMARK_PG_SCHEMA: t.config.pgSchema, TIDEMARK_CONSUMER_TOPICS: topic, TIDEMARK_DEAD_LETTER_TOPIC: deadLetter, TIDEMARK_CONSUMER_CONCURRENCY: "16", TIDEMARK_CONSUMER_PG_POOL_SIZE: "24" });

beforeAll(async () => {
  const serverConfig = testServerConfig();
  database = createDatabase<ConsumerDatabase>({ url: stackEnv()["TIDEMARK_PG_URL"]!, schema: serverConfig.pgSchema, poolSize: 4 });
  t = await startTestServer(serverConfig, { readModel: createInstanceReadModel(database.db, { maxWaitMs: 20_000 }) });
  relay = await startTestRelay(serverConfig, topic, deadLetter);
  // The relay creates the topics once it holds its lease; the projection subscribes after that.
  await t.instances.createInstance({ database: "e2e", className: "Warmup", instanceId: "w", properties: {}, commandId: "c-warmup" });
  await waitFor(() => relay.status().topicsReady && relay.status().published > 0, { what: "the relay to publish" });
  projection = await startProjection(projectionConfig(), { housekeeping: false });
});
afterAll(async () => {
  await projection?.stop();
  await relay?.stop();
  await database?.close();
  await t?.close();
  // The topics the relay and the projection created for this file.
  await (await openTestKafka(`${id}.`)).close();
});

const percentile = (sorted: readonly number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

describe("with the real relay", () => {
  it("reads its own writes through the relay and the projection; measures command → read-model latency", async () => {
    const latencies: number[] = [];
    for (let i = 0; i < 150; i++) {
      const started = performance.now();
      const instanceId = `i${i % 30}`;
      const existing = i >= 30;
      const { result } = existing
        ? await t.instances.updateInstance({ database: "e2e", className: "Item", instanceId, properties: { i }, expectedSeq: BigInt(Math.floor(i / 30)), commandId: `c-${i}` })
        : await t.instances.createInstance({ database: "e2e", className: "Item", instanceId, properties: { i }, commandId: `c-${i}` });
      const read = await t.instances.getInstance({ database: "e2e", className: "Item", instanceId, consistency: ReadConsistency.AT_LEAST_POSITION, minPosition: result!.globalPosition });
      latencies.push(performance.now() - started);
      expect(read.instance).toMatchObject({ version: result!.sequenceNumber, properties: { i } });
    }
    latencies.sort((a, b) => a - b);
    console.info(`[consumer e2e] command -> read-model latency over ${latencies.length} commands: p50 ${percentile(latencies, 50).toFixed(1)} ms, p99 ${percentile(latencies, 99).toFixed(1)} ms`);
  });

  it("drains a backlog published by the relay; measures projection throughput", async () => {
    await projection!.stop();
    projection = undefined;
    const instances = 200;
    const perInstance = 5;
    const inFlight = 32;
    let next = 0;
    const writeOne = async (n: number) => {
      const instanceId = `b${n}`;
      await t.instances.createInstance({ database: "e2e", className: "Backlog", instanceId, properties: { n }, commandId: `cb-${n}-0` });
      for (let v = 1; v < perInstance; v++) {
        await t.instances.updateInstance({ database: "e2e", className: "Backlog", instanceId, properties: { v }, expectedSeq: BigInt(v), commandId: `cb-${n}-${v}` });
      }
    };
    await Promise.all(Array.from({ length: inFlight }, async () => {
      while (next < instances) await writeOne(next++);
    }));
    const events = instances * perInstance;
    const head = Number((await database.db.selectFrom("global_counter").select("position").executeTakeFirstOrThrow()).position);
    await waitFor(() => relay.status().checkpoint >= head, { timeoutMs: 60_000, what: "the relay to publish the backlog" });

    const started = performance.now();
    let firstApplied: number | undefined;
    projection = await startProjection(projectionConfig(), { housekeeping: false, onRecorded: () => (firstApplied ??= performance.now()) });
    const reader = createInstanceReadModel(database.db, { maxWaitMs: 120_000 });
    expect(await reader.waitForPosition(head, new AbortController().signal)).toBe(true);
    const finished = performance.now();
    const seconds = (finished - firstApplied!) / 1000;
    console.info(
      `[consumer e2e] projection drained ${events} events (${instances} instances, 3 partitions) in ${seconds.toFixed(2)} s after joining ` +
        `(${((firstApplied! - started) / 1000).toFixed(2)} s to start and join): ${Math.round(events / seconds)} events/s`,
    );

    const sample = await t.instances.getInstance({ database: "e2e", className: "Backlog", instanceId: "b7", consistency: ReadConsistency.EVENTUAL });
    expect(sample.instance).toMatchObject({ version: BigInt(perInstance), properties: { n: 7, v: perInstance - 1 } });
    const { count } = await database.db.selectFrom("instances").select((eb) => eb.fn.countAll<number>().as("count")).where("class_name", "=", "Backlog").executeTakeFirstOrThrow();
    expect(Number(count)).toBe(instances);
  }, 180_000);
});

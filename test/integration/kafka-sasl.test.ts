/**
 * The relay and the projection against Kafka with SASL/SCRAM over TLS (TIDEMARK_KAFKA_CA,
 * TIDEMARK_KAFKA_SASL_*; docs/SECURITY.md, docs/CONTRACT.md T1 for Kafka): a broker of this file's
 * own with only a SASL_SSL listener for clients (test/helpers/kafka-sasl.ts). Commands go through the
 * server, the relay publishes over SASL_SSL, the projection consumes over SASL_SSL, and reads at
 * AT_LEAST_POSITION see the result. A wrong password, no TLS and an untrusted CA are refused.
 */
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDatabase, type Database } from "../../core/db/database.js";
import { type ConsumerDatabase, createInstanceReadModel, createKafka, kafkaSecurity } from "../../core/index.js";
import { ReadConsistency } from "../../gen/tidemark/v1/instance_pb.js";
import { loadRelayConfig, startRelay, type RelayHandle } from "../../relay/index.js";
import { type ProjectionHandle, startProjection } from "../../consumers/index.js";
import { consumerTestConfig, consumerTestId } from "../helpers/consumer-env.js";
import { startSaslKafka, type SaslKafka } from "../helpers/kafka-sasl.js";
import { makeTestCerts } from "../helpers/tls-certs.js";
import { stackEnv, startTestServer, testServerConfig, type TestServer } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";

const id = consumerTestId("ksasl");
const topic = `${id}.events`;
const deadLetter = `${id}.dead-letter`;
let kafka: SaslKafka;
let t: TestServer;
let relay: RelayHandle | undefined;
let projection: ProjectionHandle | undefined;
let database: Database<ConsumerDatabase>;

const security = () => ({
  TIDEMARK_KAFKA_BROKERS: kafka.brokers,
  TIDEMARK_KAFKA_CA: kafka.caFile,
  TIDEMARK_KAFKA_SASL_MECHANISM: "scram-sha-256",
  TIDEMARK_KAFKA_SASL_USERNAME: kafka.username,
  TIDEMARK_KAFKA_SASL_PASSWORD: kafka.password,
});

beforeAll(async () => {
  kafka = await startSaslKafka();
  const serverConfig = testServerConfig();
  database = createDatabase<ConsumerDatabase>({ url: stackEnv()["TIDEMARK_PG_URL"]!, schema: serverConfig.pgSchema, poolSize: 4 });
  t = await startTestServer(serverConfig, { readModel: createInstanceReadModel(database.db, { maxWaitMs: 30_000 }) });
  relay = await startRelay(
    loadRelayConfig({
      ...stackEnv(),
      ...security(),
      TIDEMARK_PG_SCHEMA: serverConfig.pgSchema,
      TIDEMARK_S3_BUCKET: serverConfig.s3Bucket,
      TIDEMARK_RELAY_TOPIC: topic,
      TIDEMARK_DEAD_LETTER_TOPIC: deadLetter,
      TIDEMARK_RELAY_PARTITIONS: "2",
      TIDEMARK_LOG_LEVEL: process.env["TIDEMARK_TEST_LOG_LEVEL"] ?? "error",
    }),
    { log: pino({ level: "silent" }) },
  );
  await t.instances.createInstance({ database: "sasl", className: "Warmup", instanceId: "w", properties: {}, commandId: "c-warmup" });
  await waitFor(() => relay!.status().topicsReady && relay!.status().published > 0, { what: "the relay to publish over SASL_SSL", timeoutMs: 60_000 });
  projection = await startProjection(
    consumerTestConfig(id, { ...security(), TIDEMARK_PG_SCHEMA: serverConfig.pgSchema, TIDEMARK_CONSUMER_TOPICS: topic, TIDEMARK_DEAD_LETTER_TOPIC: deadLetter }),
    { housekeeping: false },
  );
}, 240_000);

afterAll(async () => {
  await projection?.stop();
  await relay?.stop();
  await database?.close();
  await t?.close();
  await kafka?.stop();
});

describe("Kafka with SASL/SCRAM over TLS", () => {
  it("relay → Kafka → projection: commands are read back from the read model", async () => {
    for (let i = 0; i < 5; i++) {
      const { result } = await t.instances.createInstance({ database: "sasl", className: "Item", instanceId: `i${i}`, properties: { i }, commandId: `c-${i}` });
      const read = await t.instances.getInstance({ database: "sasl", className: "Item", instanceId: `i${i}`, consistency: ReadConsistency.AT_LEAST_POSITION, minPosition: result!.globalPosition });
      expect(read.instance).toMatchObject({ version: 1n, properties: { i } });
    }
    expect(relay!.status().published).toBeGreaterThanOrEqual(6);
  });

  const connect = async (settings: Parameters<typeof kafkaSecurity>[0]) => {
    const admin = createKafka({ brokers: [kafka.brokers], clientId: "sasl-probe", connectionTimeoutMs: 3000, requestTimeoutMs: 3000, retry: { retries: 0 }, security: kafkaSecurity(settings) }, pino({ level: "silent" })).admin();
    try {
      await admin.connect();
      return await admin.listTopics();
    } finally {
      await admin.disconnect();
    }
  };
  const good = () => ({ kafkaTls: false, kafkaCa: kafka.caFile, kafkaSaslMechanism: "scram-sha-256", kafkaSaslUsername: kafka.username, kafkaSaslPassword: kafka.password });

  it("the same settings reach the broker; a wrong password, no TLS or an untrusted CA do not", async () => {
    expect(await connect(good())).toContain(topic);
    await expect(connect({ ...good(), kafkaSaslPassword: "wrong" })).rejects.toThrow(/SASL|authentication/i);
    await expect(connect({ ...good(), kafkaCa: "" })).rejects.toThrow();
    const other = makeTestCerts();
    try {
      await expect(connect({ ...good(), kafkaCa: other.serverCa })).rejects.toThrow();
    } finally {
      other.remove();
    }
  });
});

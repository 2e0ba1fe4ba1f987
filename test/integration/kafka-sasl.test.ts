/**
 * The relay and the projection against Kafka with SASL/SCRAM over TLS (TIDEMARK_KAFKA_CA,
 * TIDEMARK_KAFKA_SASL_*; docs/SECURITY.md, docs/CONTRACT.md T1 for Kafka): the stack broker's
 * SASL_SSL listener, with the settings `bash scripts/stack.sh env --secure` prints (docs/STACK.md).
 * Commands go through the server, the relay publishes over SASL_SSL, the projection consumes over
 * SASL_SSL, and reads at AT_LEAST_POSITION see the result. A wrong password, plain text to the TLS
 * port, TLS without SASL and an untrusted CA are refused.
 */
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDatabase, type Database } from "../../core/db/database.js";
import { type ConsumerDatabase, createInstanceReadModel, createKafka, kafkaSecurity } from "../../core/index.js";
import { ReadConsistency } from "../../gen/tidemark/v1/instance_pb.js";
import { loadRelayConfig, startRelay, type RelayHandle } from "../../relay/index.js";
import { type ProjectionHandle, startProjection } from "../../consumers/index.js";
import { consumerTestConfig, consumerTestId } from "../helpers/consumer-env.js";
import { deleteTopics } from "../helpers/relay-kafka.js";
import { makeTestCerts } from "../helpers/tls-certs.js";
import { stackBrokers, stackEnv, stackSecureEnv, startTestServer, testServerConfig, type TestServer } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";

const id = consumerTestId("ksasl");
const topic = `${id}.events`;
const deadLetter = `${id}.dead-letter`;
let secure: Record<string, string>;
let t: TestServer;
let relay: RelayHandle | undefined;
let projection: ProjectionHandle | undefined;
let database: Database<ConsumerDatabase>;

// Only the Kafka settings of the secure env: the server, the relay and the projection reach
// PostgreSQL and S3 as in the other files.
const KAFKA_SETTINGS = ["TIDEMARK_KAFKA_BROKERS", "TIDEMARK_KAFKA_CA", "TIDEMARK_KAFKA_SASL_MECHANISM", "TIDEMARK_KAFKA_SASL_USERNAME", "TIDEMARK_KAFKA_SASL_PASSWORD"];
const security = () => Object.fromEntries(KAFKA_SETTINGS.map((name) => [name, secure[name]!]));

beforeAll(async () => {
  secure = await stackSecureEnv();
  expect(secure["TIDEMARK_KAFKA_BROKERS"], "the secure face is another listener than the plain one").not.toBe(stackEnv()["TIDEMARK_KAFKA_BROKERS"]);
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
  await deleteTopics(stackBrokers(), [topic, deadLetter]);
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
    const admin = createKafka({ brokers: [secure["TIDEMARK_KAFKA_BROKERS"]!], clientId: "sasl-probe", connectionTimeoutMs: 3000, requestTimeoutMs: 3000, retry: { retries: 0 }, security: kafkaSecurity(settings) }, pino({ level: "silent" })).admin();
    try {
      await admin.connect();
      return await admin.listTopics();
    } finally {
      await admin.disconnect();
    }
  };
  const good = () => ({
    kafkaTls: false,
    kafkaCa: secure["TIDEMARK_KAFKA_CA"]!,
    kafkaSaslMechanism: secure["TIDEMARK_KAFKA_SASL_MECHANISM"]!,
    kafkaSaslUsername: secure["TIDEMARK_KAFKA_SASL_USERNAME"]!,
    kafkaSaslPassword: secure["TIDEMARK_KAFKA_SASL_PASSWORD"]!,
  });

  it("the same settings reach the broker; a wrong password, plain text, no SASL or an untrusted CA do not", async () => {
    expect(await connect(good())).toContain(topic);
    await expect(connect({ ...good(), kafkaSaslPassword: "wrong" })).rejects.toThrow(/SASL|authentication/i);
    await expect(connect({ ...good(), kafkaCa: "" })).rejects.toThrow();
    await expect(connect({ ...good(), kafkaSaslMechanism: "", kafkaSaslUsername: "", kafkaSaslPassword: "" })).rejects.toThrow();
    const other = makeTestCerts();
    try {
      await expect(connect({ ...good(), kafkaCa: other.serverCa })).rejects.toThrow();
    } finally {
      other.remove();
    }
  });
});

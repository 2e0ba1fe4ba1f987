/**
 * Starts a real server for one test file: its own PostgreSQL schema and S3 bucket, port 0, against
 * the stack's services. `close` stops it and drops the schema.
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { createConnection } from "node:net";
import { cp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { inject } from "vitest";
import { sql } from "kysely";
import { startServer, type ServerOverrides, type ServerHandle } from "../../server/app.js";
import { loadServerConfig, type ServerConfig } from "../../server/config.js";
import { createClient, type ClientOf } from "../../server/grpc/client.js";
import { EventStoreService } from "../../gen/tidemark/v1/event_store_pb.js";
import { InstanceService } from "../../gen/tidemark/v1/instance_pb.js";
import { createLogger } from "../../core/log.js";

export type EventStoreClient = ClientOf<typeof EventStoreService>;
export type InstanceClient = ClientOf<typeof InstanceService>;

/**
 * An embedded server's new data directory starts from the run's initialised PGlite cluster
 * (test/helpers/embedded-setup.ts) when there is one; an existing directory is left as it is.
 */
async function fromTemplate(config: ServerConfig): Promise<void> {
  const template = config.pgUrl === "" ? inject("pgliteTemplate") : undefined;
  const target = path.join(config.dataDir, "pg");
  if (template === undefined || existsSync(target)) return;
  await cp(template, target, { recursive: true });
}

/** A running test server with clients. */
export interface TestServer {
  readonly server: ServerHandle;
  readonly config: ServerConfig;
  readonly events: EventStoreClient;
  readonly instances: InstanceClient;
  /** Stops the server (keeping the schema and bucket) so a new one can start on the same state. */
  restart(overrides?: ServerOverrides): Promise<TestServer>;
  close(): Promise<void>;
  /** Stops the server and its clients, leaving the schema and the bucket as they are. */
  stop(): Promise<void>;
}

/** A unique lower-case id for schemas, buckets and topics of one test file. */
export function uniqueId(prefix: string): string {
  return `${prefix}${randomBytes(5).toString("hex")}`;
}

/**
 * The environment the stack script exported (only in projects that start the stack), with
 * `TIDEMARK_AUTH=off`: the services mode defaults to tokens, and tests that are not about
 * authentication talk to their servers without one. Tests of authentication set
 * `TIDEMARK_AUTH=tokens` themselves (test/integration/security.test.ts).
 */
export function stackEnv(): Record<string, string> {
  const env = inject("stack");
  if (env === undefined) throw new Error("this test needs the real stack: run it in the integration project");
  return { ...env, TIDEMARK_AUTH: "off" };
}

const portOpen = (host: string, port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = createConnection({ host, port }, () => {
      socket.end();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
  });

/**
 * The stack's secure faces (`bash scripts/stack.sh env --secure`, docs/STACK.md): PostgreSQL over
 * TLS, S3Proxy's HTTPS endpoint and Kafka's SASL_SSL listener (SCRAM-SHA-256) with their CA files,
 * with `TIDEMARK_AUTH=off` as {@link stackEnv}. Throws, naming what is missing, when the stack runs
 * without one of them: a test that needs them fails, it is not skipped.
 */
export async function stackSecureEnv(): Promise<Record<string, string>> {
  const env = inject("stackSecure");
  if (env === undefined) throw new Error("this test needs the real stack: run it in the integration project");
  const fix = "`npm run stack -- up` (scripts/stack.sh of this checkout) brings up the secure faces, restarting a service that runs without them";
  for (const name of ["TIDEMARK_PG_SSL_CA", "TIDEMARK_S3_CA", "TIDEMARK_KAFKA_CA", "TIDEMARK_KAFKA_SASL_MECHANISM", "TIDEMARK_KAFKA_SASL_USERNAME", "TIDEMARK_KAFKA_SASL_PASSWORD"]) {
    if (!env[name]) throw new Error(`\`bash scripts/stack.sh env --secure\` did not print ${name}: ${fix}`);
  }
  for (const name of ["TIDEMARK_PG_SSL_CA", "TIDEMARK_S3_CA", "TIDEMARK_KAFKA_CA"]) {
    if (!existsSync(env[name]!)) throw new Error(`${name}=${env[name]} does not exist: ${fix}`);
  }
  const faces: Array<[string, string]> = [
    ["Kafka's SASL_SSL listener", env["TIDEMARK_KAFKA_BROKERS"]!],
    ["S3Proxy's HTTPS endpoint", new URL(env["TIDEMARK_S3_ENDPOINT"]!).host],
  ];
  for (const [what, address] of faces) {
    const [host, port] = [address.slice(0, address.lastIndexOf(":")), Number(address.slice(address.lastIndexOf(":") + 1))];
    if (!(await portOpen(host, port))) throw new Error(`the stack's ${what} at ${address} does not answer: ${fix}`);
  }
  return { ...env, TIDEMARK_AUTH: "off" };
}

/** The stack's Kafka bootstrap brokers (integration project). */
export function stackBrokers(): string[] {
  return stackEnv()["TIDEMARK_KAFKA_BROKERS"]!.split(",");
}

/** Which storage the contract suites run against in this vitest project. */
export function testBackend(): "services" | "embedded" {
  return inject("backend") ?? "services";
}

/**
 * Server config for tests, port 0: with the "services" backend the stack's PostgreSQL and S3 with
 * a fresh schema and bucket; with the "embedded" backend a fresh data directory.
 */
export function testServerConfig(extra: Record<string, string> = {}): ServerConfig {
  const id = uniqueId("t");
  const storage =
    testBackend() === "embedded"
      ? { TIDEMARK_DATA_DIR: path.join(os.tmpdir(), "tidemark-tests", id) }
      : { ...stackEnv(), TIDEMARK_S3_BUCKET: `tm-${id}` };
  return loadServerConfig({
    ...storage,
    TIDEMARK_GRPC_ADDR: "127.0.0.1:0",
    TIDEMARK_PG_SCHEMA: `${id}`,
    TIDEMARK_LOG_LEVEL: process.env["TIDEMARK_TEST_LOG_LEVEL"] ?? "fatal",
    TIDEMARK_SHUTDOWN_GRACE_MS: "2000",
    // The embedded default would bind the console's fixed port in every test server.
    TIDEMARK_CONSOLE_ADDR: "off",
    ...extra,
  });
}

/** Starts a server with `config` (default: a fresh {@link testServerConfig}). */
export async function startTestServer(config: ServerConfig = testServerConfig(), overrides: ServerOverrides = {}): Promise<TestServer> {
  await fromTemplate(config);
  const server = await startServer(config, { log: createLogger("test-server", config.logLevel), ...overrides });
  const events = createClient(EventStoreService, server.address) as EventStoreClient;
  const instances = createClient(InstanceService, server.address) as InstanceClient;
  const stopClients = () => {
    events.close();
    instances.close();
  };
  return {
    server,
    config,
    events,
    instances,
    async restart(next = {}) {
      stopClients();
      await server.stop(1000);
      return startTestServer(config, next);
    },
    async stop() {
      stopClients();
      await server.stop(1000);
    },
    async close() {
      stopClients();
      await server.stop(1000);
      if (config.pgUrl === "") {
        await rm(config.dataDir, { recursive: true, force: true });
        return;
      }
      const { createDatabase } = await import("../../core/db/database.js");
      const database = createDatabase({ url: config.pgUrl, schema: config.pgSchema, poolSize: 1 });
      await sql`drop schema if exists ${sql.id(config.pgSchema)} cascade`.execute(database.db);
      await database.close();
    },
  };
}

/** A relay on a test server's schema and bucket, publishing to `topic` (3 partitions) — for end-to-end consumer tests. */
export async function startTestRelay(config: ServerConfig, topic: string, deadLetterTopic: string): Promise<import("../../relay/index.js").RelayHandle> {
  const { loadRelayConfig, startRelay } = await import("../../relay/index.js");
  return startRelay(
    loadRelayConfig({
      ...stackEnv(),
      TIDEMARK_PG_SCHEMA: config.pgSchema,
      TIDEMARK_S3_BUCKET: config.s3Bucket,
      TIDEMARK_RELAY_TOPIC: topic,
      TIDEMARK_DEAD_LETTER_TOPIC: deadLetterTopic,
      TIDEMARK_RELAY_PARTITIONS: "3",
      TIDEMARK_LOG_LEVEL: process.env["TIDEMARK_TEST_LOG_LEVEL"] ?? "error",
    }),
  );
}

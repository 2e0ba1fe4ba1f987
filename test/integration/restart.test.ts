/**
 * `tidemark start` in the services mode restarted after kill -9 (issue #11): the killed process
 * leaves a relay lease and a Kafka group member behind (the group keeps it until the session
 * timeout), yet the new process answers an append while its projection is still rejoining — health
 * says NOT_SERVING for it then, and SERVING once it joined (a Watch sees the change) — and the
 * event reaches the projection. The process stops gracefully at the end.
 */
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDatabase } from "../../core/db/database.js";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { InstanceService, ReadConsistency, type CreateInstanceResponse } from "../../gen/tidemark/v1/instance_pb.js";
import { createClient, type ClientOf } from "../../server/grpc/client.js";
import { background, cleanEnv, freePort, TIDEMARK_BIN, type Background } from "../helpers/cli-process.js";
import { FAST_CONSUMER_ENV } from "../helpers/consumer-env.js";
import { deleteTopics } from "../helpers/relay-kafka.js";
import { stackBrokers, stackEnv, uniqueId } from "../helpers/test-server.js";
import { waitFor } from "../helpers/wait-for.js";

const id = uniqueId("rs");
const topic = `tm.${id}.events`;
const deadLetter = `tm.${id}.dead-letter`;
const RELAY_HEALTH = "tidemark.relay";
const PROJECTION_HEALTH = "tidemark.consumer.projection:instances";
/** Long against the new process's start, so its projection rejoins well after it serves. */
const SESSION_TIMEOUT_MS = 20_000;
let env: Record<string, string>;
let addr: string;
const children: Background[] = [];

function start(extra: Record<string, string> = {}): Background {
  const child = background(process.execPath, [TIDEMARK_BIN, "start"], { ...env, ...extra });
  children.push(child);
  return child;
}

/** One call on a fresh channel: a reused one would wait out grpc-js's reconnect backoff. */
async function once<T>(call: (clients: { health: ClientOf<typeof Health>; instances: ClientOf<typeof InstanceService> }) => Promise<T>): Promise<T> {
  const health = createClient(Health, addr);
  const instances = createClient(InstanceService, addr);
  try {
    return await call({ health, instances });
  } finally {
    health.close();
    instances.close();
  }
}

const status = (service: string) => once(async ({ health }) => (await health.check({ service })).status);
const create = (instanceId: string) =>
  once(({ instances }) => instances.createInstance({ database: "acme", className: "Person", instanceId, properties: { id: instanceId }, commandId: `${id}-${instanceId}` }));
const readThroughProjection = (instanceId: string, created: CreateInstanceResponse) =>
  once(({ instances }) =>
    instances.getInstance(
      { database: "acme", className: "Person", instanceId, consistency: ReadConsistency.AT_LEAST_POSITION, minPosition: created.result!.globalPosition },
      { deadlineMs: 60_000 },
    ),
  );

beforeAll(async () => {
  addr = `127.0.0.1:${await freePort()}`;
  env = cleanEnv({
    ...stackEnv(),
    TIDEMARK_PG_SCHEMA: id,
    TIDEMARK_S3_BUCKET: `tm-${id}`,
    TIDEMARK_GRPC_ADDR: addr,
    TIDEMARK_LOG_LEVEL: "info",
    TIDEMARK_RELAY_NAME: id,
    TIDEMARK_RELAY_TOPIC: topic,
    TIDEMARK_RELAY_PARTITIONS: "1",
    TIDEMARK_DEAD_LETTER_TOPIC: deadLetter,
    TIDEMARK_CONSUMER_TOPICS: topic,
    TIDEMARK_CONSUMER_GROUP_PREFIX: `${id}.`,
    TIDEMARK_SHUTDOWN_GRACE_MS: "1000",
    ...FAST_CONSUMER_ENV,
    TIDEMARK_KAFKA_SESSION_TIMEOUT_MS: String(SESSION_TIMEOUT_MS),
  });
});

afterAll(async () => {
  for (const child of children) await child.stop("SIGKILL");
  await deleteTopics(stackBrokers(), [topic, deadLetter]).catch(() => {});
  const database = createDatabase({ url: env["TIDEMARK_PG_URL"]!, schema: id, poolSize: 1 });
  await sql`drop schema if exists ${sql.id(id)} cascade`.execute(database.db);
  await database.close();
});

describe("restart of the all-in-one process after kill -9", () => {
  it("answers an append before its projection has rejoined the group, then catches up", { timeout: 180_000 }, async () => {
    const first = start();
    await first.waitFor(/gRPC\s+127\.0\.0\.1:\d+/, "the first banner");
    await waitFor(async () => (await status(PROJECTION_HEALTH)) === ServingStatus.SERVING, { what: "the first projection in its group", timeoutMs: 90_000 });
    const before = await create("before-kill");
    expect((await readThroughProjection("before-kill", before)).instance?.version).toBe(1n);
    // The group now counts the first process as a member, and its relay holds the lease.
    expect(await first.stop("SIGKILL")).toBe("SIGKILL");

    const second = start();
    const created = await waitFor(() => create("after-restart"), { what: "the first OK append after the restart", intervalMs: 50, timeoutMs: 60_000 });
    const outputAtFirstOk = second.stdout();
    expect(created.result?.sequenceNumber).toBe(1n);
    // The append was answered while the killed member still held the group: nothing joined yet.
    expect(outputAtFirstOk).not.toContain('"msg":"joined consumer group"');
    expect(await status("")).toBe(ServingStatus.SERVING);
    expect(await status(InstanceService.typeName)).toBe(ServingStatus.SERVING);
    expect(await status(PROJECTION_HEALTH)).toBe(ServingStatus.NOT_SERVING);
    expect(second.stderr()).toMatch(/starting {2}.*projection:instances — in the background; health .*tidemark\.consumer\.projection:instances/);

    const watched: ServingStatus[] = [];
    const health = createClient(Health, addr);
    const stopWatching = new AbortController();
    const watching = (async () => {
      try {
        for await (const update of health.watch({ service: PROJECTION_HEALTH }, { signal: stopWatching.signal })) watched.push(update.status);
      } catch {
        // cancelled below
      }
    })();
    try {
      await waitFor(() => watched.includes(ServingStatus.SERVING), { what: "the projection to rejoin (Watch)", timeoutMs: SESSION_TIMEOUT_MS + 60_000 });
      expect(watched).toEqual([ServingStatus.NOT_SERVING, ServingStatus.SERVING]);
    } finally {
      stopWatching.abort();
      await watching;
      health.close();
    }
    expect(second.stdout()).toContain('"msg":"joined consumer group"');
    await second.waitFor(/tidemark: .*projection:instances running/, "the CLI to say every part runs");
    // Standing by while the killed holder's lease runs out, then publishing: SERVING either way.
    await waitFor(async () => (await status(RELAY_HEALTH)) === ServingStatus.SERVING, { what: "the relay SERVING", timeoutMs: 60_000 });

    // Both events went through the relay and Kafka to the projection of the new process.
    expect((await readThroughProjection("after-restart", created)).instance?.version).toBe(1n);
    expect(await second.stop("SIGTERM")).toBe(0);
  });

  it("stops gracefully while its projection still waits to rejoin, giving the join up", { timeout: 180_000 }, async () => {
    const third = start();
    await waitFor(async () => (await status(PROJECTION_HEALTH)) === ServingStatus.SERVING, { what: "the third projection in its group", timeoutMs: 90_000 });
    expect(await third.stop("SIGKILL")).toBe("SIGKILL");

    // Debug logs show kafkajs starting the group consumer: from then on its join is in flight,
    // and Kafka answers it only once the killed member's session has timed out.
    const fourth = start({ TIDEMARK_LOG_LEVEL: "debug" });
    await waitFor(() => create("before-stop"), { what: "the first OK append of the fourth process", intervalMs: 50, timeoutMs: 60_000 });
    await fourth.waitFor(/"kafkajs":"Consumer"[^\n]*"msg":"Starting"/, "the projection's consumer to start joining", 60_000);
    expect(await status(PROJECTION_HEALTH)).toBe(ServingStatus.NOT_SERVING);
    expect(await fourth.stop("SIGTERM")).toBe(0);
    const out = fourth.stdout();
    expect(out).toContain('"msg":"tidemark stopped"');
    // The join in flight was cut, not waited for: no abandoned start, and it never joined.
    expect(out).not.toContain("not waiting for it any longer");
    expect(out).not.toContain('"msg":"joined consumer group"');
    expect(out).not.toContain('"msg":"consumers started"');
  });
});

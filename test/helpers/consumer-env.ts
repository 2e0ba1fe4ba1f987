/**
 * Test environment of consumer tests: a consumer config with its own PostgreSQL schema, topic,
 * consumer-group prefix and dead-letter topic per test file (so files run in parallel), a short
 * lease, and a side-effect table that counts every application of an event.
 */
import { sql, type Kysely } from "kysely";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { createDatabase, migrateToLatest, type Database } from "../../core/db/database.js";
import { EventEnvelopeSchema, EventKind, type EventEnvelope } from "../../core/envelope.js";
import { type ConsumerConfig, loadConsumerConfig } from "../../consumers/index.js";
import { createEffectsTable } from "./consumer-effects.js";
export { effectHandler, grouped, recordEffect } from "./consumer-effects.js";
import { stackEnv, uniqueId } from "./test-server.js";
import type { ConsumerDatabase } from "../../core/index.js";

/** Consumer settings for tests: lease 2 s, heartbeat 0.5 s, session 6 s, fast retries. */
export const FAST_CONSUMER_ENV: Readonly<Record<string, string>> = Object.freeze({
  TIDEMARK_CONSUMER_LEASE_SECONDS: "2",
  TIDEMARK_CONSUMER_HEARTBEAT_SECONDS: "0.5",
  TIDEMARK_KAFKA_SESSION_TIMEOUT_MS: "6000",
  TIDEMARK_CONSUMER_RETRY_BASE_MS: "100",
  TIDEMARK_CONSUMER_RETRY_MAX_MS: "1000",
  TIDEMARK_CONSUMER_MAX_ATTEMPTS: "4",
  TIDEMARK_DEAD_LETTER_PARTITIONS: "1",
});

/** The environment of one test file's consumers (pass to loadConsumerConfig or a child process). */
export function consumerTestEnv(id: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...stackEnv(),
    TIDEMARK_PG_SCHEMA: id,
    TIDEMARK_CONSUMER_TOPICS: `${id}.events`,
    TIDEMARK_CONSUMER_GROUP_PREFIX: `${id}.`,
    TIDEMARK_DEAD_LETTER_TOPIC: `${id}.dead-letter`,
    TIDEMARK_LOG_LEVEL: process.env["TIDEMARK_TEST_LOG_LEVEL"] ?? "error",
    ...FAST_CONSUMER_ENV,
    ...extra,
  };
}

/** A parsed consumer config for a test (see {@link consumerTestEnv}). */
export function consumerTestConfig(id: string, extra: Record<string, string> = {}): ConsumerConfig {
  return loadConsumerConfig(consumerTestEnv(id, extra));
}

/** A fresh schema id for one test file. */
export function consumerTestId(prefix = "c"): string {
  return uniqueId(prefix);
}

/** Opens the test schema (migrated) with the side-effect table. */
export async function openTestDatabase(id: string): Promise<Database<ConsumerDatabase>> {
  const database = createDatabase<ConsumerDatabase>({ url: stackEnv()["TIDEMARK_PG_URL"]!, schema: id, poolSize: 6 });
  await migrateToLatest(database.db, id);
  await createEffectsTable(database.db);
  return database;
}

/** Drops the test schema and closes the database. */
export async function dropTestDatabase(database: Database<ConsumerDatabase> | undefined): Promise<void> {
  if (database === undefined) return;
  await sql`drop schema if exists ${sql.id(database.schema)} cascade`.execute(database.db);
  await database.close();
}

/** Side effects per event id, for one handler. */
export async function effectCounts(db: Kysely<any>, handler: string): Promise<Map<string, number>> {
  const { rows } = await sql<{ event_id: string; n: number }>`
    select event_id, count(*)::integer as n from effects where handler = ${handler} group by event_id`.execute(db);
  return new Map(rows.map((r) => [r.event_id, r.n]));
}

/** Side effects of one aggregate in the order they were applied. */
export async function effectOrder(db: Kysely<any>, handler: string, aggregateId: string): Promise<number[]> {
  const { rows } = await sql<{ seq: number }>`
    select seq from effects where handler = ${handler} and aggregate_id = ${aggregateId} order by n`.execute(db);
  return rows.map((r) => Number(r.seq));
}

/** One registry row, as tests check it. */
export async function registryRow(db: Kysely<ConsumerDatabase>, handler: string, eventId: string) {
  return db.selectFrom("processed_events").selectAll().where("handler", "=", handler).where("event_id", "=", eventId).executeTakeFirst();
}

/** An envelope as the relay would publish it. */
export function testEnvelope(input: {
  eventId: string;
  aggregateId: string;
  seq: number;
  aggregateType?: string;
  eventType?: string;
  data?: Record<string, unknown>;
  globalPosition?: number;
  metadata?: Record<string, string>;
  occurredAt?: Date;
}): EventEnvelope {
  return create(EventEnvelopeSchema, {
    eventId: input.eventId,
    eventType: input.eventType ?? "Noted",
    aggregateType: input.aggregateType ?? "Task",
    aggregateId: input.aggregateId,
    sequenceNumber: BigInt(input.seq),
    occurredAt: timestampFromDate(input.occurredAt ?? new Date()),
    actor: "test",
    data: (input.data ?? {}) as never,
    metadata: { kind: "domain", ...(input.metadata ?? {}) },
    schemaVersion: 1,
    globalPosition: BigInt(input.globalPosition ?? 0),
    kind: EventKind.DOMAIN,
  });
}

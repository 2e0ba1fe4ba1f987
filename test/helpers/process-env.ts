/**
 * The environment of one test file's Tidemark processes against the real services — a server, a
 * relay and consumers, in one process or each in its own — with the file's own schema, bucket,
 * relay name, topics and consumer-group prefix (so files run in parallel), a short relay lease,
 * fast consumer settings and a short shutdown grace; and the clean-up of what they leave.
 */
import { sql } from "kysely";
import { createDatabase } from "../../core/db/database.js";
import { FAST_CONSUMER_ENV } from "./consumer-env.js";
import { deleteTopics } from "./relay-kafka.js";
import { stackBrokers, stackEnv } from "./test-server.js";

/** The relay's topic and dead-letter topic of test file `id`. */
export function processTopics(id: string): { readonly topic: string; readonly deadLetter: string } {
  return { topic: `tm.${id}.events`, deadLetter: `tm.${id}.dead-letter` };
}

/** The environment of test file `id`'s processes; `extra` adds or overrides variables. */
export function processTestEnv(id: string, extra: Readonly<Record<string, string>> = {}): Record<string, string> {
  const { topic, deadLetter } = processTopics(id);
  return {
    ...stackEnv(),
    TIDEMARK_PG_SCHEMA: id,
    TIDEMARK_S3_BUCKET: `tm-${id}`,
    TIDEMARK_RELAY_NAME: id,
    TIDEMARK_RELAY_TOPIC: topic,
    TIDEMARK_RELAY_PARTITIONS: "1",
    TIDEMARK_RELAY_LEASE_MS: "4000",
    TIDEMARK_DEAD_LETTER_TOPIC: deadLetter,
    TIDEMARK_CONSUMER_TOPICS: topic,
    TIDEMARK_CONSUMER_GROUP_PREFIX: `${id}.`,
    TIDEMARK_SHUTDOWN_GRACE_MS: "1000",
    ...FAST_CONSUMER_ENV,
    ...extra,
  };
}

/** Deletes test file `id`'s topics and drops its schema (after its processes stopped). */
export async function dropProcessTestData(id: string): Promise<void> {
  const { topic, deadLetter } = processTopics(id);
  await deleteTopics(stackBrokers(), [topic, deadLetter]).catch(() => {});
  const database = createDatabase({ url: stackEnv()["TIDEMARK_PG_URL"]!, schema: id, poolSize: 1 });
  await sql`drop schema if exists ${sql.id(id)} cascade`.execute(database.db);
  await database.close();
}

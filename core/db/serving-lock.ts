/**
 * The serving lock: every server holds a shared PostgreSQL advisory lock on its schema for as long
 * as it serves, and `tidemark recover` takes the same lock exclusively, so a recovery never runs
 * beside a writer and no server starts during one (docs/OPERATIONS.md "Recovering from S3 alone").
 * An advisory lock rather than a look at recent activity: it is held exactly as long as the process
 * lives (a crashed server's session ends and frees it), it needs no table (the schema may be gone),
 * and it cannot mistake an idle server for a stopped one.
 */
import { sql, type Kysely } from "kysely";
import pg from "pg";
import { checkSchemaName } from "./database.js";

/** Thrown when the serving lock cannot be taken as asked. */
export class ServingLockError extends Error {
  override name = "ServingLockError";
}

/** The two keys of the lock (two-key form: apart from the one-key locks of rebuilds and migrations). */
function lockKeys(schema: string) {
  return sql`hashtext('tidemark.serving'), hashtext(${checkSchemaName(schema)})`;
}

/** A held shared serving lock. */
export interface ServingLock {
  release(): Promise<void>;
}

/**
 * Takes the shared serving lock of `schema` on a dedicated connection to `url`, re-taking it after
 * the connection drops (a PostgreSQL restart). Throws ServingLockError while a recovery holds it.
 */
export async function holdServingLock(url: string, schema: string, onError: (e: unknown) => void = () => {}): Promise<ServingLock> {
  let client: pg.Client | undefined;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const connect = async (): Promise<void> => {
    const c = new pg.Client({ connectionString: url });
    c.on("error", (e) => {
      onError(e);
      if (client === c) client = undefined;
      c.end().catch(() => {});
      retry();
    });
    await c.connect();
    const { rows } = await c.query<{ ok: boolean }>("select pg_try_advisory_lock_shared(hashtext('tidemark.serving'), hashtext($1)) as ok", [checkSchemaName(schema)]);
    if (rows[0]?.ok !== true) {
      await c.end().catch(() => {});
      throw new ServingLockError(`a recovery (tidemark recover) holds schema ${schema}: the server starts once it is done`);
    }
    client = c;
  };
  const retry = () => {
    if (stopped || timer !== undefined) return;
    timer = setTimeout(() => {
      timer = undefined;
      connect().catch((e: unknown) => {
        onError(e);
        retry();
      });
    }, 1000);
    timer.unref();
  };
  await connect();
  return {
    async release() {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      await client?.end().catch(() => {});
      client = undefined;
    },
  };
}

/**
 * Takes the serving lock of `schema` exclusively for the session of `conn` (one held connection),
 * or throws ServingLockError when a server holds it. Released by {@link releaseExclusiveServingLock}
 * or when the session ends.
 */
export async function takeExclusiveServingLock(conn: Kysely<any>, schema: string): Promise<void> {
  const { rows } = await sql<{ ok: boolean }>`select pg_try_advisory_lock(${lockKeys(schema)}) as ok`.execute(conn);
  if (rows[0]?.ok !== true) {
    throw new ServingLockError(`a server is serving schema ${schema} (it holds the serving lock): stop every server (and the all-in-one \`tidemark start\`) first`);
  }
}

/** Releases what {@link takeExclusiveServingLock} took. */
export async function releaseExclusiveServingLock(conn: Kysely<any>, schema: string): Promise<void> {
  await sql`select pg_advisory_unlock(${lockKeys(schema)})`.execute(conn);
}

import { Kysely, Migrator, PostgresDialect, sql, type Migration } from "kysely";
import pg from "pg";
import { MIGRATIONS } from "./migrations/index.js";
import { applySqlFunctions } from "./sql-functions.js";
import type { WriteSideTables } from "./schema.js";

/** Connection settings of the PostgreSQL database. */
export interface DatabaseSettings {
  /** A postgres:// URL. */
  readonly url: string;
  /** Schema holding every Tidemark table (default `tidemark`). */
  readonly schema: string;
  /** Maximum pooled connections (default 10). */
  readonly poolSize?: number;
  /** Server-side statement timeout in milliseconds (default 15 000). */
  readonly statementTimeoutMs?: number;
}

/** A Kysely database with the pool behind it, so callers can LISTEN on a dedicated client. */
export interface Database<T = WriteSideTables> {
  readonly db: Kysely<T>;
  readonly pool: pg.Pool;
  readonly schema: string;
  close(): Promise<void>;
}

const INT8_OID = 20;

/** Parses int8 as a JS number and refuses values that would lose precision. */
export function parseInt8(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n)) throw new RangeError(`int8 value ${value} exceeds 2^53`);
  return n;
}

/** node-postgres type parsers that read int8 as a safe JS number (shared by every pool). */
export const int8TypeParsers = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === INT8_OID ? parseInt8 : pg.types.getTypeParser(oid, format as "text")) as typeof pg.types.getTypeParser,
};

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** Validates a schema name (it is interpolated as an identifier). */
export function checkSchemaName(schema: string): string {
  if (!SCHEMA_NAME.test(schema)) throw new Error(`schema name ${JSON.stringify(schema)} must match ${SCHEMA_NAME}`);
  return schema;
}

/**
 * Opens a pool whose connections resolve unqualified names in `settings.schema` first. Nothing
 * connects until the first query.
 */
export function createDatabase<T = WriteSideTables>(settings: DatabaseSettings): Database<T> {
  const schema = checkSchemaName(settings.schema);
  const pool = new pg.Pool({
    connectionString: settings.url,
    max: settings.poolSize ?? 10,
    options: `-c search_path=${schema},public -c statement_timeout=${settings.statementTimeoutMs ?? 15_000}`,
    connectionTimeoutMillis: 5_000,
    types: int8TypeParsers,
  });
  // A connection error (server restart, 57P01) must not crash the process: idle clients report it
  // to the pool, checked-out ones to themselves; the query in flight fails and the next reconnects.
  pool.on("error", () => {});
  pool.on("connect", (client) => client.on("error", () => {}));
  const db = new Kysely<T>({ dialect: new PostgresDialect({ pool }) });
  return {
    db,
    pool,
    schema,
    async close() {
      await db.destroy();
    },
  };
}

/**
 * Creates the schema, runs every pending migration, then applies the SQL function files that
 * changed (core/db/sql-functions.ts). Returns what it applied (migration names, `function NAME`).
 * Kysely holds an advisory lock while it migrates, and the functions apply under one of their own,
 * so several processes may start at once.
 */
export async function migrateToLatest(
  db: Kysely<any>,
  schema: string,
  migrations: Readonly<Record<string, Migration>> = MIGRATIONS,
): Promise<string[]> {
  await sql`create schema if not exists ${sql.id(checkSchemaName(schema))}`.execute(db);
  if (await everyMigrationApplied(db, schema, migrations)) {
    const functions = await applySqlFunctions(db, schema);
    return functions.map((name) => `function ${name}`);
  }
  const migrator = new Migrator({
    db: db.withSchema(schema),
    migrationTableSchema: schema,
    provider: { getMigrations: async () => ({ ...migrations }) },
  });
  // Kysely introspects every schema before migrating, so concurrent DDL elsewhere (another process
  // migrating, a projection swapping tables) can fail an attempt spuriously: try again.
  for (let attempt = 1; ; attempt++) {
    const { error, results } = await migrator.migrateToLatest();
    if (error === undefined) {
      const applied = (results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName);
      const functions = await applySqlFunctions(db, schema);
      return [...applied, ...functions.map((name) => `function ${name}`)];
    }
    if (attempt >= 5) throw new Error("database migration failed", { cause: error });
    await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
  }
}

/**
 * True when the schema's migration table lists every migration by name: the usual start of a
 * process, which then skips Kysely's Migrator. That one reads the columns of every table in the
 * database before it takes its lock (a quarter of a second of PostgreSQL with a few dozen schemas,
 * and a spurious failure when DDL runs elsewhere meanwhile); migrations only add, so one applied
 * stays applied and no lock is needed to see it. Anything else — no table yet, a migration
 * missing — goes through the Migrator and its lock as before.
 */
async function everyMigrationApplied(db: Kysely<any>, schema: string, migrations: Readonly<Record<string, Migration>>): Promise<boolean> {
  // A checked schema name (checkSchemaName) needs no quoting.
  const { rows: exists } = await sql<{ found: boolean }>`select to_regclass(${`${schema}.kysely_migration`}) is not null as found`.execute(db);
  if (exists[0]?.found !== true) return false;
  const { rows } = await sql<{ name: string }>`select name from ${sql.table(`${schema}.kysely_migration`)}`.execute(db);
  const applied = new Set(rows.map((r) => r.name));
  return Object.keys(migrations).every((name) => applied.has(name));
}

/** The NOTIFY channel on which commits wake relays and subscribers. */
export function commitChannel(schema: string): string {
  return `${schema}_commits`;
}

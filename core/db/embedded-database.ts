/**
 * The embedded database: PostgreSQL compiled to WebAssembly (PGlite) in this process, behind the
 * same node-postgres Pool interface and Kysely dialect as a real server, so the schema, migrations
 * and queries are shared. One session: transactions run one after another.
 */
import { mkdir } from "node:fs/promises";
import { PGlite } from "@electric-sql/pglite";
import { createPgConfig } from "@electric-sql/pglite/node-postgres";
import { Kysely, PostgresDialect, CompiledQuery } from "kysely";
import pg from "pg";
import type { ListenConnector } from "../commit-listener.js";
import { checkSchemaName, int8TypeParsers, type Database } from "./database.js";

/** An embedded database plus the LISTEN connector that its commit listeners need. */
export interface EmbeddedDatabase<T> extends Database<T> {
  readonly listen: ListenConnector;
}

/** Opens (creating when missing) the PGlite database in `dataDir`, resolving names in `schema`. */
export async function createEmbeddedDatabase<T>(dataDir: string, schema: string): Promise<EmbeddedDatabase<T>> {
  checkSchemaName(schema);
  await mkdir(dataDir, { recursive: true });
  const pglite = await PGlite.create(dataDir);
  const pool = new pg.Pool({ ...createPgConfig(pglite), types: int8TypeParsers } as pg.PoolConfig);
  pool.on("error", () => {});
  const db = new Kysely<T>({
    dialect: new PostgresDialect({
      pool,
      onCreateConnection: async (connection) => {
        await connection.executeQuery(CompiledQuery.raw(`set search_path to ${schema}, public`));
      },
    }),
  });
  return {
    db,
    pool,
    schema,
    listen: async (channel, onNotify) => {
      const unlisten = await pglite.listen(channel, onNotify);
      return { close: () => unlisten() };
    },
    async close() {
      await db.destroy();
      await pglite.close();
    },
  };
}

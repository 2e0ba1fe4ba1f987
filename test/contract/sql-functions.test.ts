/**
 * The append's SQL functions are files applied by the migrate step when they change (issue #12):
 * a fresh schema gets every function, a second migrate applies nothing, an edited file is applied
 * again, and processes migrating at once apply a change without failing. Both storages.
 */
import { rm } from "node:fs/promises";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openBackends, type Backends } from "../../core/backends.js";
import { migrateToLatest } from "../../core/db/database.js";
import { applySqlFunctions, sqlFunctionFiles, type SqlFunctionFile } from "../../core/db/sql-functions.js";
import { testServerConfig } from "../helpers/test-server.js";

const config = testServerConfig();
let backends: Backends;
beforeAll(async () => {
  backends = await openBackends(config);
});
afterAll(async () => {
  if (config.pgUrl !== "") await sql`drop schema if exists ${sql.id(config.pgSchema)} cascade`.execute(backends.database.db);
  await backends?.close();
  if (config.pgUrl === "") await rm(config.dataDir, { recursive: true, force: true });
});

const probe = (value: number): SqlFunctionFile => {
  const text = `create or replace function tidemark_probe() returns int language sql as $$ select ${value} $$;`;
  return { name: "tidemark_probe", sql: text, checksum: `probe-${value}` };
};

describe("SQL function files", () => {
  it("applies every file to a fresh schema once, and nothing on the next migrate", async () => {
    const files = await sqlFunctionFiles();
    expect(files.map((f) => f.name)).toEqual(["allocate_segment", "commit_slots", "reserve_slots"]);
    const first = await migrateToLatest(backends.database.db, config.pgSchema);
    expect(first).toEqual(expect.arrayContaining(["function allocate_segment", "function commit_slots", "function reserve_slots"]));
    const again = await migrateToLatest(backends.database.db, config.pgSchema);
    expect(again).toEqual([]);
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_proc p join pg_namespace s on s.oid = p.pronamespace where s.nspname = ${config.pgSchema} and p.proname in ('allocate_segment', 'reserve_slots', 'commit_slots')`.execute(backends.database.db);
    expect(rows[0]!.n).toBe(3);
  });

  it("applies a file again when it changes, also when two processes migrate at once", async () => {
    const db = backends.database.db;
    expect(await applySqlFunctions(db, config.pgSchema, [probe(1)])).toEqual(["tidemark_probe"]);
    expect(await applySqlFunctions(db, config.pgSchema, [probe(1)])).toEqual([]);
    const both = await Promise.all([applySqlFunctions(db, config.pgSchema, [probe(2)]), applySqlFunctions(db, config.pgSchema, [probe(2)])]);
    expect(both.flat()).toEqual(["tidemark_probe"]);
    const { rows } = await sql<{ v: number }>`select tidemark_probe() as v`.execute(db);
    expect(rows[0]!.v).toBe(2);
  });
});

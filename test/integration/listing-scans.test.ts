/**
 * Listings read their own page, not the rest of the store (real PostgreSQL, pages counted in
 * pg_statio): beside 20 000 instance streams and read-model rows of a class that sorts before the
 * listed one and 20 000 of one after it, the first and the last page of the listed class — the
 * strong listing (stream_heads), the eventual one (instances) and the console's stream listing —
 * touch a few pages, and so does a page deep into a class of 20 000 in the eventual listing. Under
 * a locale collation a prefix gave PostgreSQL no key range, so such a page read every stream of
 * the type before the class, or after it.
 */
import { sql, type Kysely } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDatabase, migrateToLatest, type Database } from "../../core/db/database.js";
import { createInstanceReadModel, listDatabaseStreams, listStreams } from "../../core/index.js";
import { onFlushedConnection, pagesRead } from "../helpers/pages-read.js";
import { stackEnv, uniqueId } from "../helpers/test-server.js";

const schema = uniqueId("lst");
let database: Database<any>;

beforeAll(async () => {
  database = createDatabase({ url: stackEnv()["TIDEMARK_PG_URL"]!, schema, poolSize: 2 });
  await migrateToLatest(database.db, schema);
  await onFlushedConnection(database.db, async (c) => {
    for (const table of ["stream_heads", "instances"]) await sql`alter table ${sql.id(table)} set (autovacuum_enabled = false)`.execute(c);
    // Classes "Early" (before "Listed") and "Late" (after it): 20 000 each; "Listed": 30.
    await sql`insert into stream_heads (aggregate_type, aggregate_id, head)
      select 'Instance', 'shop/' || c.name || '/i' || lpad(g::text, 5, '0'), 1
      from (values ('Early', 20000), ('Late', 20000), ('Listed', 30)) as c(name, n), generate_series(1, c.n) g`.execute(c);
    await sql`insert into instances (database, class_name, instance_id, properties, version, deleted, created_at, updated_at, global_position)
      select 'shop', c.name, 'i' || lpad(g::text, 5, '0'), '{}', 1, false, now(), now(), g
      from (values ('Early', 20000), ('Late', 20000), ('Listed', 30)) as c(name, n), generate_series(1, c.n) g`.execute(c);
    for (const table of ["stream_heads", "instances"]) await sql`analyze ${sql.id(table)}`.execute(c);
  });
});

afterAll(async () => {
  await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(database.db);
  await database.close();
});

/** Pages of `table` and its indexes that `work` read. */
async function pagesReadBy<T>(table: string, work: (db: Kysely<any>) => Promise<T>): Promise<{ out: T; pages: number }> {
  const before = await pagesRead(database.db, table, true);
  const out = await onFlushedConnection(database.db, work);
  return { out, pages: (await pagesRead(database.db, table, true)) - before };
}

describe("listings beside 40 000 streams of other classes", () => {
  it("reads a few pages for the strong listing's first and last page (stream_heads)", async () => {
    const first = await pagesReadBy("stream_heads", (db) => listStreams(db, "Instance", "shop/Listed/", "", 10));
    expect(first.out).toEqual(Array.from({ length: 10 }, (_, i) => `shop/Listed/i${String(i + 1).padStart(5, "0")}`));
    const last = await pagesReadBy("stream_heads", (db) => listStreams(db, "Instance", "shop/Listed/", "shop/Listed/i00025", 10));
    expect(last.out).toEqual(Array.from({ length: 5 }, (_, i) => `shop/Listed/i${String(i + 26).padStart(5, "0")}`));
    // 20 000 rows of the other class on either side are more than 150 pages of heap alone.
    expect(first.pages, "first page").toBeLessThan(20);
    expect(last.pages, "last page").toBeLessThan(20);
  });

  it("reads a few pages for the console's stream listing of a prefix (stream_heads)", async () => {
    const listed = await pagesReadBy("stream_heads", (db) => listDatabaseStreams(db, { database: "shop", aggregateType: "Instance", prefix: "shop/Listed/", after: "", limit: 50 }));
    expect(listed.out).toHaveLength(30);
    expect(listed.pages).toBeLessThan(20);
  });

  it("reads a few pages for the eventual listing's pages deep into a class of 20 000 (instances)", async () => {
    // In code-point order too, so pages mix with the strong listing's: by its own index, not a sort of the class.
    const deep = await pagesReadBy("instances", (db) => createInstanceReadModel(db).list("shop", "Early", "i19995", 10, false));
    expect(deep.out.map((r) => r.instanceId)).toEqual(["i19996", "i19997", "i19998", "i19999", "i20000"]);
    expect(deep.pages).toBeLessThan(20);
  });
});

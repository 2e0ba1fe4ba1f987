/**
 * The server-side SQL functions (the append's reserve and commit transactions) live as one named
 * file each in core/db/functions/, and the migrate step applies every file whose content changed
 * since it was last applied. So a change of a rule is a diff of one function, not a new dated
 * migration that re-creates it whole; `sql_functions` records what each schema runs.
 */
import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { sql, type Kysely } from "kysely";

/** Where the function files are (next to this module, in the source tree and in a build). */
export const FUNCTIONS_DIR = new URL("./functions/", import.meta.url);

/** One function file: its name (the file name without `.sql`), its SQL and a checksum of it. */
export interface SqlFunctionFile {
  readonly name: string;
  readonly sql: string;
  readonly checksum: string;
}

/** The function files, in name order. */
export async function sqlFunctionFiles(dir: URL = FUNCTIONS_DIR): Promise<SqlFunctionFile[]> {
  const names = (await readdir(dir)).filter((f) => f.endsWith(".sql")).sort();
  return Promise.all(
    names.map(async (file) => {
      const text = await readFile(new URL(file, dir), "utf8");
      return { name: file.slice(0, -4), sql: text, checksum: createHash("sha256").update(text).digest("hex") };
    }),
  );
}

/**
 * Applies every function file whose checksum differs from the one recorded in `schema`, under a
 * transaction-level advisory lock, so processes migrating at once apply each change once. Returns
 * the names applied. The connection's search_path puts `schema` first, so the functions land there.
 */
export async function applySqlFunctions(db: Kysely<any>, schema: string, files?: readonly SqlFunctionFile[]): Promise<string[]> {
  const wanted = files ?? (await sqlFunctionFiles());
  return db.transaction().execute(async (tx) => {
    await sql`select pg_advisory_xact_lock(hashtext(${`${schema}.sql_functions`}))`.execute(tx);
    await sql`select set_config('search_path', ${`${schema}, public`}, true)`.execute(tx);
    await sql`
      create table if not exists ${sql.id(schema, "sql_functions")} (
        name text primary key,
        checksum text not null,
        applied_at timestamptz not null default now())`.execute(tx);
    const { rows } = await sql<{ name: string; checksum: string }>`select name, checksum from ${sql.id(schema, "sql_functions")}`.execute(tx);
    const applied = new Map(rows.map((r) => [r.name, r.checksum]));
    const changed: string[] = [];
    for (const file of wanted) {
      if (applied.get(file.name) === file.checksum) continue;
      await sql.raw(file.sql).execute(tx);
      await sql`
        insert into ${sql.id(schema, "sql_functions")} (name, checksum) values (${file.name}, ${file.checksum})
        on conflict (name) do update set checksum = excluded.checksum, applied_at = now()`.execute(tx);
      changed.push(file.name);
    }
    return changed;
  });
}

import { sql, type Kysely } from "kysely";

// Frozen in time once released. Owned by the server's authentication (core/tokens.ts): bearer tokens,
// stored as a SHA-256 of their secret part only (docs/SECURITY.md).

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("api_tokens")
    // The public part of a token (`tm_{id}_{secret}`): listed, logged and revoked by it.
    .addColumn("id", "text", (c) => c.primaryKey())
    // Hex SHA-256 of the secret part; the secret itself is never stored.
    .addColumn("secret_hash", "text", (c) => c.notNull())
    .addColumn("principal", "text", (c) => c.notNull())
    // JSON arrays of strings: the databases (tenants; `*` = every one) and the scopes.
    .addColumn("databases", "jsonb", (c) => c.notNull())
    .addColumn("scopes", "jsonb", (c) => c.notNull())
    .addColumn("aggregate_type_prefix", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("expires_at", "timestamptz")
    .addColumn("revoked_at", "timestamptz")
    .addColumn("bootstrap", "boolean", (c) => c.notNull().defaultTo(false))
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  // At most one bootstrap token per store, ever: `tidemark migrate` creates it with `on conflict do
  // nothing`, so two concurrent migrations print at most one token.
  await sql`create unique index api_tokens_one_bootstrap on api_tokens (bootstrap) where bootstrap`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("api_tokens").execute();
}

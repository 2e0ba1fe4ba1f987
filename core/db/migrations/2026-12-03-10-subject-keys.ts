import { sql, type Kysely } from "kysely";

// Frozen in time once released. Erasure by crypto-shredding (docs/SECURITY.md "Erasure"): one data
// key per (database, subject), stored only wrapped by a master key. Forgetting a subject sets
// `wrapped_key` to null and keeps the row, so the subject stays forgotten (a later event naming it
// is refused) and a repeated ForgetSubject finds it.

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("subject_keys")
    .addColumn("database", "text", (c) => c.notNull())
    .addColumn("subject", "text", (c) => c.notNull())
    // The id of the master key that wrapped it (the first line of TIDEMARK_MASTER_KEY_FILE then).
    .addColumn("master_key_id", "text")
    // nonce (12) || AES-256-GCM ciphertext of the 32-byte data key || tag (16); null once forgotten.
    .addColumn("wrapped_key", "bytea")
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("forgotten_at", "timestamptz")
    .addPrimaryKeyConstraint("subject_keys_pkey", ["database", "subject"])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("subject_keys").execute();
}

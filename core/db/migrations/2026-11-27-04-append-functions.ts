import type { Kysely } from "kysely";

// This migration once created the append's SQL functions. They live in core/db/functions/ now,
// one file each, applied by the migrate step whenever a file changes (core/db/sql-functions.ts),
// so a rule change is a diff of one function. The entry stays so databases that ran it still
// match the list of migrations.

export async function up(_db: Kysely<any>): Promise<void> {}

export async function down(_db: Kysely<any>): Promise<void> {}

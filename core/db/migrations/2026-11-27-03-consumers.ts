import type { Kysely } from "kysely";

// Frozen in time once released. Owned by the consumers (consumers/): the processed-event registry,
// ordering watermarks and the instances read model.

export async function up(_db: Kysely<any>): Promise<void> {}

export async function down(_db: Kysely<any>): Promise<void> {}

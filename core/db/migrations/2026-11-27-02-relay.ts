import type { Kysely } from "kysely";

// Frozen in time once released. Owned by the relay (relay/): checkpoints and the active-relay lease.

export async function up(_db: Kysely<any>): Promise<void> {}

export async function down(_db: Kysely<any>): Promise<void> {}

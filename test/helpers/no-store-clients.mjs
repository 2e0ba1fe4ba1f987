// `node --import ./test/helpers/no-store-clients.mjs …`: fails the process when anything loads a
// client of the store's services (PostgreSQL, PGlite, S3, Kafka), so a test can show that a command
// answers without them (the CLI's client commands). no-clients.mjs refuses gRPC as well.
import { register } from "node:module";
import { URL } from "node:url";

const packages = ["kysely", "pg", "@electric-sql/pglite", "@aws-sdk/client-s3", "kafkajs"];
register(new URL("./no-store-clients-hooks.mjs", import.meta.url), { data: { packages } });

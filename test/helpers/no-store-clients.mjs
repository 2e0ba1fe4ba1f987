// `node --import ./test/helpers/no-store-clients.mjs …`: fails the process when anything loads a
// client of the store's services (PostgreSQL, PGlite, S3, Kafka) or gRPC, so a test can show that a
// command answers without them (the CLI's help and usage errors).
import { register } from "node:module";
import { URL } from "node:url";

const packages = ["kysely", "pg", "@electric-sql/pglite", "@aws-sdk/client-s3", "kafkajs", "@grpc/grpc-js"];
register(new URL("./no-store-clients-hooks.mjs", import.meta.url), { data: { packages } });

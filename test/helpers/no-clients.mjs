// `node --import ./test/helpers/no-clients.mjs …`: what no-store-clients.mjs refuses, and gRPC too,
// so a test can show that a command answers without any client (the CLI's help and usage errors).
import { register } from "node:module";
import { URL } from "node:url";
import "./no-store-clients.mjs";

register(new URL("./no-store-clients-hooks.mjs", import.meta.url), { data: { packages: ["@grpc/grpc-js"] } });

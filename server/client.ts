/**
 * server/'s second, narrow face: the typed gRPC client of the services (server/grpc/client.ts),
 * for programs that talk to a running server — the CLI's client commands, tests, the bench —
 * without loading the server itself or any client of the store (core/client.ts says which parts
 * of core/ come with it). server/index.ts exports the same names.
 */
export { type CallOptions, type Client, type ClientOf, type ClientOptions, createClient, findDetail, grpc, statusDetails } from "./grpc/client.js";

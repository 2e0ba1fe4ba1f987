/**
 * core/'s second, narrow face: what a gRPC client of Tidemark needs — the envelope and its codecs,
 * the domain errors, the protobuf binary codecs, JSON object helpers, setting parsers and the
 * trace context — and nothing that opens a store. It loads no client of PostgreSQL, PGlite, S3 or
 * Kafka, so the CLI's client commands (`stream`, `tail`, `status`, `dead-letters`) start without
 * them; core/index.ts exports all of it too. A test holds the promise (test/embedded/cli-usage).
 */
export * from "./envelope.js";
export * from "./errors.js";
export * from "./json-object.js";
export * from "./proto-binary.js";
export * from "./settings.js";
export * from "./tracing.js";
export type { Logger } from "./log.js";
export type { Principal } from "./tokens.js";

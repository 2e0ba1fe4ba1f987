/**
 * The public face of core/: what cli/, server/, relay/ and consumers/ share — the commit log and
 * its readers, the envelope and its codecs, ids, errors, the database schema and migrations, the
 * object stores, settings, logs, metrics and the pure instance domain. Other folders import core
 * only through this file (a lint rule holds it). The embedded database is not exported: the storage
 * opener (backends.ts) loads PGlite only when the embedded mode needs it.
 */
export * from "./backends.js";
export * from "./commit-listener.js";
export * from "./commit-log-reader.js";
export * from "./db/database.js";
export * from "./db/migrations/index.js";
export * from "./db/schema.js";
export * from "./db/serving-lock.js";
export * from "./db/sql-functions.js";
export * from "./domain/instance.js";
export * from "./domain/instance-fold.js";
export * from "./domain/merge-patch.js";
export * from "./envelope.js";
export * from "./errors.js";
export * from "./event-log.js";
export * from "./fs-object-store.js";
export * from "./inspection.js";
export * from "./ids.js";
export * from "./kafka.js";
export * from "./json-object.js";
export * from "./lifecycle.js";
export * from "./log-filter.js";
export * from "./log-tail.js";
export * from "./log.js";
export type * from "./message-source.js";
export * from "./metrics.js";
export * from "./object-store.js";
export * from "./origin-settings.js";
export * from "./package-root.js";
export * from "./privacy.js";
export * from "./processing-status.js";
export * from "./lock-watermarks.js";
export * from "./dead-letters.js";
export * from "./proto-binary.js";
export * from "./read-model.js";
export * from "./s3-object-store.js";
export * from "./segment-log.js";
export * from "./segment.js";
export * from "./settings.js";
export * from "./shutdown.js";
export * from "./sleep.js";
export * from "./stream-snapshots.js";
export * from "./tokens.js";
export * from "./tracing.js";
export * from "./upcasters.js";

/** The public face of core/: what server, relay and consumers share. */
export * from "./commit-listener.js";
export * from "./db/database.js";
export type * from "./db/schema.js";
export * from "./envelope.js";
export * from "./errors.js";
export * from "./event-log.js";
export * from "./ids.js";
export * from "./log.js";
export * from "./metrics.js";
export type * from "./object-store.js";
export * from "./s3-object-store.js";
export * from "./settings.js";
export * from "./domain/instance.js";
export * from "./domain/merge-patch.js";

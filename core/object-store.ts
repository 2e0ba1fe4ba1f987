/**
 * The port to the object store, the source of truth. Narrow on purpose: conditional create, get and
 * a prefix listing are all the event store needs, and all an alternative backend must provide.
 */

/** Outcome of a conditional create. */
export type CreateOutcome = "created" | "exists";

/** What the event store needs from an S3-compatible object store. */
export interface ObjectStore {
  /**
   * Creates `key` with `body` only when no object exists there (`If-None-Match: *`), atomically:
   * of two concurrent creates of one key exactly one returns "created". Never overwrites.
   * Throws UnavailableError when the store cannot be reached.
   */
  createIfAbsent(key: string, body: string, contentType: string): Promise<CreateOutcome>;
  /** The object's body, or undefined when there is none. Throws UnavailableError on failure. */
  get(key: string): Promise<string | undefined>;
  /** Every key under `prefix`, in lexicographic order. */
  list(prefix: string): Promise<string[]>;
  /** Creates the bucket when missing; idempotent. */
  ensureReady(): Promise<void>;
  /** Releases connections. */
  close(): void;
}

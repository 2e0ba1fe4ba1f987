/**
 * The port to the object store, the source of truth. Narrow on purpose: conditional create, get and
 * a prefix listing are all the event store needs, and all an alternative backend must provide.
 */

/** Requests an object store made, by kind (for the metrics: S3 requests cost money per request). */
export interface ObjectStoreRequests {
  put: number;
  get: number;
  getRange: number;
  list: number;
}

/** Fresh request counters. */
export function newRequestCounts(): ObjectStoreRequests {
  return { put: 0, get: 0, getRange: 0, list: 0 };
}

/** Outcome of a conditional create. */
export type CreateOutcome = "created" | "exists";

/** What the event store needs from an S3-compatible object store. */
export interface ObjectStore {
  /**
   * Creates `key` with `body` only when no object exists there (`If-None-Match: *`), atomically:
   * of two concurrent creates of one key exactly one returns "created". Never overwrites.
   * Throws UnavailableError when the store cannot be reached.
   */
  createIfAbsent(key: string, body: string | Uint8Array, contentType: string): Promise<CreateOutcome>;
  /** The object's body as text, or undefined when there is none. Throws UnavailableError on failure. */
  get(key: string): Promise<string | undefined>;
  /**
   * The object's bytes — all of them, or `length` bytes from `start` (one ranged GET) — or
   * undefined when there is no object. Throws UnavailableError on failure.
   */
  read(key: string, range?: { readonly start: number; readonly length: number }): Promise<Buffer | undefined>;
  /** Every key under `prefix`, in lexicographic order; with `startAfter`, only the keys after it. */
  list(prefix: string, startAfter?: string): Promise<string[]>;
  /** Requests made so far, by kind. */
  readonly requests: ObjectStoreRequests;
  /** Creates the bucket when missing; idempotent. */
  ensureReady(): Promise<void>;
  /** Releases connections. */
  close(): void;
}

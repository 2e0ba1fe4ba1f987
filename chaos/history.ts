/**
 * What the clients did: every operation (an append of a batch, an instance command) and every
 * attempt at it, with what was sent and what answered. The checker judges the store against this
 * and nothing the store says about itself.
 */

/** The kinds of operation the writers issue. */
export type OpKind = "append" | "create" | "update";

/** One operation; its attempts are retries with the same event ids (or command id). */
export interface Op {
  readonly id: string;
  readonly kind: OpKind;
  readonly round: number;
  readonly writer: number;
  readonly aggregateType: string;
  readonly aggregateId: string;
  /** The expectation sent (expected_seq; 0 for a create). */
  readonly expected: number;
  /** Appends: the batch's event ids, in order. Instance commands: empty (the server derives the id). */
  readonly eventIds: readonly string[];
  /** Instance commands: the command id, which the server stores as the event's `command_id` metadata. */
  readonly commandId?: string;
}

/**
 * How an attempt ended. `ok` and `fail` are definite (`fail`: the server refused, nothing was
 * written); `indeterminate` is a timeout, a lost connection or `UNAVAILABLE`: it may have landed.
 */
export type Outcome = "ok" | "fail" | "indeterminate";

/** Where one event of an acknowledged operation landed. */
export interface Landed {
  readonly eventId: string;
  readonly seq: number;
  readonly position: number;
}

/** One attempt at an operation. */
export interface Attempt {
  readonly op: string;
  readonly attempt: number;
  readonly sentAt: number;
  readonly answeredAt: number;
  readonly outcome: Outcome;
  /** The gRPC status name of a failed attempt (`ABORTED`, `UNAVAILABLE`, …). */
  readonly code?: string;
  readonly message?: string;
  readonly landed?: readonly Landed[];
  readonly replayed?: boolean;
  /** The actual head from an `ABORTED` answer's `ConcurrencyConflict` detail. */
  readonly actual?: number;
}

/** The whole record of a run. */
export interface History {
  readonly ops: Op[];
  readonly attempts: Attempt[];
}

/** What an operation's attempts add up to. */
export type OpStatus = { readonly type: "acknowledged"; readonly landed: readonly Landed[] } | { readonly type: "failed" } | { readonly type: "indeterminate" };

/**
 * The status of an operation from its attempts: acknowledged by its first OK, failed when every
 * attempt was refused, indeterminate otherwise (timeouts are never counted as success or loss).
 */
export function opStatus(attempts: readonly Attempt[]): OpStatus {
  const ok = attempts.find((a) => a.outcome === "ok");
  if (ok !== undefined) return { type: "acknowledged", landed: ok.landed ?? [] };
  if (attempts.length > 0 && attempts.every((a) => a.outcome === "fail")) return { type: "failed" };
  return { type: "indeterminate" };
}

/**
 * The closed set of domain errors. Each carries what the client needs and nothing internal; the gRPC
 * layer maps them to status codes in one place (server/grpc/status.ts). Guards test the shape, so
 * they work across module copies and realms.
 */

/** One offending request field. */
export interface FieldViolation {
  readonly field: string;
  readonly description: string;
}

abstract class TidemarkError extends Error {
  abstract readonly kind: string;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A malformed request: INVALID_ARGUMENT naming every offending field. Nothing was written. */
export class ValidationError extends TidemarkError {
  readonly kind = "validation" as const;
  constructor(readonly violations: readonly FieldViolation[]) {
    super(violations.map((v) => `${v.field}: ${v.description}`).join("; "));
  }
}

/** The aggregate's head differs from the expected one (docs/CONTRACT.md W3): ABORTED. */
export class ConcurrencyError extends TidemarkError {
  readonly kind = "concurrency" as const;
  constructor(
    readonly aggregateType: string,
    readonly aggregateId: string,
    readonly expectedSeq: number,
    readonly actualSeq: number,
  ) {
    super(`${aggregateType}/${aggregateId}: expected sequence ${expectedSeq}, but the head is ${actualSeq}`);
  }
}

/** One expectation or consistency check of a multi-stream append that did not hold. */
export interface StreamConflictInfo {
  /** The request field that stated it: `streams[i]` or `consistency_checks[i]`. */
  readonly field: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly expectedSeq: number;
  readonly actualSeq: number;
}

/**
 * Expectations or consistency checks of a multi-stream append did not hold (docs/CONTRACT.md W8):
 * ABORTED listing every one that failed, in request order. Nothing was written.
 */
export class ConsistencyError extends TidemarkError {
  readonly kind = "consistency" as const;
  constructor(readonly conflicts: readonly StreamConflictInfo[]) {
    super(conflicts.map((c) => `${c.field} ${c.aggregateType}/${c.aggregateId}: expected sequence ${c.expectedSeq}, but the head is ${c.actualSeq}`).join("; "));
  }
}

/** An event_id was used before with other content (docs/CONTRACT.md W4): ALREADY_EXISTS. */
export class IdempotencyError extends TidemarkError {
  readonly kind = "idempotency" as const;
  constructor(
    readonly eventId: string,
    readonly storedHash: string,
    readonly incomingHash: string,
    detail = "was appended before with other content",
  ) {
    super(`event_id ${eventId} ${detail}`);
  }
}

/** The instance or stream does not exist: NOT_FOUND. */
export class NotFoundError extends TidemarkError {
  readonly kind = "not-found" as const;
}

/** The command is invalid in the current state (e.g. update a deleted instance): FAILED_PRECONDITION. */
export class PreconditionError extends TidemarkError {
  readonly kind = "precondition" as const;
}

/** A dependency (S3, PostgreSQL, Kafka) failed or timed out: UNAVAILABLE, nothing acknowledged. */
export class UnavailableError extends TidemarkError {
  readonly kind = "unavailable" as const;
}

/** Any Tidemark domain error. */
export type DomainError =
  | ValidationError
  | ConcurrencyError
  | ConsistencyError
  | IdempotencyError
  | NotFoundError
  | PreconditionError
  | UnavailableError
  | UnauthenticatedError
  | PermissionDeniedError;

function hasKind(e: unknown, kind: string): boolean {
  return typeof e === "object" && e !== null && (e as { kind?: unknown }).kind === kind && e instanceof Error;
}

export const isValidationError = (e: unknown): e is ValidationError => hasKind(e, "validation");
export const isConcurrencyError = (e: unknown): e is ConcurrencyError => hasKind(e, "concurrency");
export const isConsistencyError = (e: unknown): e is ConsistencyError => hasKind(e, "consistency");
export const isIdempotencyError = (e: unknown): e is IdempotencyError => hasKind(e, "idempotency");
export const isNotFoundError = (e: unknown): e is NotFoundError => hasKind(e, "not-found");
export const isPreconditionError = (e: unknown): e is PreconditionError => hasKind(e, "precondition");
export const isUnavailableError = (e: unknown): e is UnavailableError => hasKind(e, "unavailable");

/** Collects field violations and throws one ValidationError naming all of them. */
export class Violations {
  readonly list: FieldViolation[] = [];
  add(field: string, description: string | undefined): void {
    if (description !== undefined) this.list.push({ field, description });
  }
  throwIfAny(): void {
    if (this.list.length > 0) throw new ValidationError(this.list);
  }
}

/** Walks an error's `cause` chain (and AggregateError members) to the root cause. */
export function rootCause(e: unknown): unknown {
  let current = e;
  for (let depth = 0; depth < 16; depth++) {
    const next = (current as { cause?: unknown } | null)?.cause;
    if (next === undefined || next === null) break;
    current = next;
  }
  return current;
}

/**
 * The caller did not prove who it is: no token, a malformed, unknown, expired or revoked one
 * (docs/SECURITY.md): UNAUTHENTICATED. The message never repeats the token.
 */
export class UnauthenticatedError extends TidemarkError {
  readonly kind = "unauthenticated" as const;
  constructor(
    message: string,
    /** Why, for the ErrorInfo detail and the failure metric: missing, malformed, unknown, expired, revoked. */
    readonly reason: "missing" | "malformed" | "unknown" | "expired" | "revoked",
  ) {
    super(message);
  }
}

/**
 * The token is valid but lacks what the call needs (a database, a scope, the aggregate-type prefix):
 * PERMISSION_DENIED naming what was missing — only what the request named, never what exists.
 */
export class PermissionDeniedError extends TidemarkError {
  readonly kind = "permission-denied" as const;
  constructor(
    message: string,
    /** What was missing: `database`, `scope`, `aggregate_type_prefix` or `actor`. */
    readonly missing: "database" | "scope" | "aggregate_type_prefix" | "actor",
    /** The value the request needed (the database or scope it named). */
    readonly needed: string,
  ) {
    super(message);
  }
}

export const isUnauthenticatedError = (e: unknown): e is UnauthenticatedError => hasKind(e, "unauthenticated");
export const isPermissionDeniedError = (e: unknown): e is PermissionDeniedError => hasKind(e, "permission-denied");

/**
 * How a consumer classifies a failure (docs/CONTRACT.md C3): poison (retrying cannot help: undecodable,
 * invalid), retriable (back off, dead-letter when exhausted), or infrastructure (the registry's
 * PostgreSQL or Kafka is unreachable: pause, never advance the offset, never count an attempt).
 * Classification follows the `cause` chain to its root, as kafkajs does for its own errors.
 */
import { isValidationError, rootCause } from "../core/index.js";
import type { ConsumedEvent } from "./handler.js";

/**
 * A failure that retrying cannot fix; the event goes straight to the dead-letter topic. `event` is
 * the event as stored when its envelope decoded but it still cannot be read (an upcaster is
 * missing, E3): the letter is then registered under the event's own stream and seq, so its
 * aggregate's later events park behind it (C8); a message that does not decode at all is
 * registered by its headers.
 */
export class PoisonError extends Error {
  readonly kind = "poison" as const;
  readonly event: ConsumedEvent | undefined;
  constructor(message: string, options?: { cause?: unknown; event?: ConsumedEvent }) {
    super(message, options);
    this.name = "PoisonError";
    this.event = options?.event;
  }
}

/** The claim's lease expired or was taken over: the holder must not complete (docs/CONTRACT.md C1). */
export class LeaseLostError extends Error {
  readonly kind = "lease-lost" as const;
  constructor(message: string) {
    super(message);
    this.name = "LeaseLostError";
  }
}

/** The registry or Kafka could not be reached; the message stays unacknowledged and is retried. */
export class InfrastructureError extends Error {
  readonly kind = "infrastructure" as const;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "InfrastructureError";
  }
}

/** The three classes of failure. */
export type FailureClass = "poison" | "retriable" | "infrastructure";

const hasKind = (e: unknown, kind: string): boolean =>
  typeof e === "object" && e !== null && (e as { kind?: unknown }).kind === kind;

/** True for {@link PoisonError} (by shape, anywhere in the cause chain). */
export const isPoisonError = (e: unknown): e is PoisonError => inChain(e, (x) => hasKind(x, "poison"));
/** True for {@link LeaseLostError} (by shape, anywhere in the cause chain). */
export const isLeaseLostError = (e: unknown): e is LeaseLostError => inChain(e, (x) => hasKind(x, "lease-lost"));

// SQLSTATE classes and codes that mean "the database went away", not "the statement was wrong":
// connection exceptions (08), operator intervention (57P01-57P03), insufficient resources (53).
const PG_INFRASTRUCTURE = /^(08|53|57P0[1-3])/;
const PG_CONNECTION_MESSAGES = /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error|Connection terminated unexpectedly/i;

/**
 * True when some error in the chain says the PostgreSQL connection failed (SQLSTATE 08, 53,
 * 57P01-57P03, or node-postgres' own connection errors). Plain socket errors (ECONNREFUSED …) are
 * not enough: a handler's own HTTP call fails the same way and must be retried and dead-lettered.
 */
export function isDatabaseUnavailable(e: unknown): boolean {
  return inChain(e, (x) => {
    const code = (x as { code?: unknown } | null)?.code;
    if (typeof code === "string" && PG_INFRASTRUCTURE.test(code)) return true;
    return x instanceof Error && PG_CONNECTION_MESSAGES.test(x.message);
  });
}

/**
 * Classifies a handler failure: poison for PoisonError and ValidationError (at the root or anywhere
 * in the chain), infrastructure when the database connection failed under the handler's
 * transaction, retriable otherwise (a handler bug or a flaky downstream is retried, then
 * dead-lettered when exhausted).
 */
export function classifyFailure(e: unknown): FailureClass {
  if (isPoisonError(e) || isValidationError(rootCause(e)) || inChain(e, isValidationError)) return "poison";
  if (hasKind(e, "infrastructure") || isDatabaseUnavailable(e)) return "infrastructure";
  return "retriable";
}

/** A one-line description of a failure and its causes, for `last_error` and the dead-letter header. */
export function describeFailure(e: unknown, maxLength = 2000): string {
  const parts: string[] = [];
  let current: unknown = e;
  for (let depth = 0; depth < 8 && current !== undefined && current !== null; depth++) {
    parts.push(current instanceof Error ? `${current.name}: ${current.message}` : String(current));
    current = (current as { cause?: unknown }).cause;
  }
  const text = parts.join(" <- caused by ");
  return text.length > maxLength ? `${text.slice(0, maxLength - 1)}…` : text;
}

function inChain(e: unknown, test: (x: unknown) => boolean): boolean {
  let current = e;
  for (let depth = 0; depth < 16 && current !== undefined && current !== null; depth++) {
    if (test(current)) return true;
    if (current instanceof AggregateError && current.errors.some((member) => inChain(member, test))) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

/**
 * The one mapping from domain errors to gRPC statuses (docs/CONTRACT.md, API table). Details travel as a
 * `google.rpc.Status` in `grpc-status-details-bin`; causes are logged, never sent to the client.
 */
import * as grpc from "@grpc/grpc-js";
import { create, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { anyPack, type Any } from "@bufbuild/protobuf/wkt";
import { BadRequestSchema, ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../../gen/google/rpc/status_pb.js";
import { ConcurrencyConflictSchema, ConsistencyConflictSchema, IdempotencyConflictSchema } from "../../gen/tidemark/v1/errors_pb.js";
import {
  isConcurrencyError,
  isConsistencyError,
  isIdempotencyError,
  isNotFoundError,
  isPermissionDeniedError,
  isPreconditionError,
  isUnauthenticatedError,
  isUnavailableError,
  isValidationError,
  type Logger,
  rootCause,
} from "../../core/client.js";

const ERROR_DOMAIN = "tidemark.dev";

/** A grpc-js error with code, message and rich details. */
export interface ServiceError {
  readonly code: grpc.status;
  readonly details: string;
  readonly metadata: grpc.Metadata;
}

/** Maps any thrown value to a gRPC status; unexpected errors are logged and become INTERNAL. */
export function toServiceError(e: unknown, log: Logger, path: string): ServiceError {
  if (isValidationError(e)) {
    const detail = create(BadRequestSchema, {
      fieldViolations: e.violations.map((v) => ({ field: v.field, description: v.description })),
    });
    return build(grpc.status.INVALID_ARGUMENT, e.message, [pack(BadRequestSchema, detail), info("INVALID_ARGUMENT", {})]);
  }
  if (isConcurrencyError(e)) {
    const detail = create(ConcurrencyConflictSchema, {
      aggregateType: e.aggregateType,
      aggregateId: e.aggregateId,
      expectedSeq: BigInt(e.expectedSeq),
      actualSeq: BigInt(e.actualSeq),
    });
    return build(grpc.status.ABORTED, e.message, [
      pack(ConcurrencyConflictSchema, detail),
      info("SEQUENCE_CONFLICT", { expected_seq: String(e.expectedSeq), actual_seq: String(e.actualSeq) }),
    ]);
  }
  if (isConsistencyError(e)) {
    // Every failing expectation and check (W8); the first also as a ConcurrencyConflict, the detail
    // a client of AppendEvents already reads.
    const first = e.conflicts[0]!;
    const detail = create(ConsistencyConflictSchema, {
      conflicts: e.conflicts.map((c) => ({ field: c.field, aggregateType: c.aggregateType, aggregateId: c.aggregateId, expectedSeq: BigInt(c.expectedSeq), actualSeq: BigInt(c.actualSeq) })),
    });
    const firstDetail = create(ConcurrencyConflictSchema, { aggregateType: first.aggregateType, aggregateId: first.aggregateId, expectedSeq: BigInt(first.expectedSeq), actualSeq: BigInt(first.actualSeq) });
    return build(grpc.status.ABORTED, e.message, [
      pack(ConsistencyConflictSchema, detail),
      pack(ConcurrencyConflictSchema, firstDetail),
      info("SEQUENCE_CONFLICT", { conflicts: String(e.conflicts.length), expected_seq: String(first.expectedSeq), actual_seq: String(first.actualSeq) }),
    ]);
  }
  if (isIdempotencyError(e)) {
    const detail = create(IdempotencyConflictSchema, {
      eventId: e.eventId,
      storedHash: e.storedHash,
      incomingHash: e.incomingHash,
    });
    return build(grpc.status.ALREADY_EXISTS, e.message, [pack(IdempotencyConflictSchema, detail), info("EVENT_ID_REUSED", {})]);
  }
  if (isNotFoundError(e)) return build(grpc.status.NOT_FOUND, e.message, []);
  // Authentication and authorization: the reason and what was missing, never the token or what exists.
  if (isUnauthenticatedError(e)) return build(grpc.status.UNAUTHENTICATED, e.message, [info(`TOKEN_${e.reason.toUpperCase()}`, {})]);
  if (isPermissionDeniedError(e)) return build(grpc.status.PERMISSION_DENIED, e.message, [info(`MISSING_${e.missing.toUpperCase()}`, { missing: e.missing, needed: e.needed })]);
  if (isPreconditionError(e)) return build(grpc.status.FAILED_PRECONDITION, e.message, []);
  if (isUnavailableError(e) || isInfrastructureFailure(e)) {
    log.warn({ err: e, cause: rootCause(e), path }, "dependency unavailable");
    return build(grpc.status.UNAVAILABLE, isUnavailableError(e) ? e.message : "a dependency is unavailable; nothing was acknowledged", []);
  }
  log.error({ err: e, path }, "unexpected error");
  return build(grpc.status.INTERNAL, "internal error", []);
}

/**
 * True for failures of the database connection (refused, reset, server shutting down, too many
 * clients, timeouts): the request may be retried, nothing was acknowledged.
 */
export function isInfrastructureFailure(e: unknown): boolean {
  const root = rootCause(e) as { code?: unknown; message?: unknown } | null;
  for (const candidate of [e as typeof root, root]) {
    const code = typeof candidate?.code === "string" ? candidate.code : "";
    if (/^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EHOSTUNREACH|ENOTFOUND|EAI_AGAIN)$/.test(code)) return true;
    // PostgreSQL classes 08 (connection), 53 (resources), 57P (operator intervention), 57014 (statement timeout).
    if (/^(08|53|57P)/.test(code) || code === "57014" || code === "40001" || code === "40P01") return true;
    const message = typeof candidate?.message === "string" ? candidate.message : "";
    if (/Connection terminated|connection timeout|timeout exceeded when trying to connect/i.test(message)) return true;
  }
  return false;
}

function pack<D extends DescMessage>(schema: D, message: MessageShape<D>): Any {
  return anyPack(schema, message);
}

function info(reason: string, metadata: Record<string, string>): Any {
  return anyPack(ErrorInfoSchema, create(ErrorInfoSchema, { reason, domain: ERROR_DOMAIN, metadata }));
}

function build(code: grpc.status, message: string, details: Any[]): ServiceError {
  const metadata = new grpc.Metadata();
  if (details.length > 0) {
    const status = create(StatusSchema, { code, message, details });
    metadata.set("grpc-status-details-bin", Buffer.from(toBinary(StatusSchema, status)));
  }
  return { code, details: message, metadata };
}

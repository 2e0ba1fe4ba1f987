/**
 * The handler API: what a user writes to build a consumer. A handler is a name (its registry key
 * and consumer group) and a function that applies one event inside a PostgreSQL transaction that
 * also records "done", so a database side effect happens exactly once (docs/CONTRACT.md C1).
 */
import type { JsonObject } from "@bufbuild/protobuf";
import type { Transaction } from "kysely";
import { checkHandlerName, type EventEnvelope, type Logger, type Upcaster, Upcasters } from "../core/index.js";

/** One event as a handler sees it: the decoded envelope plus where it came from. */
export interface ConsumedEvent {
  readonly envelope: EventEnvelope;
  readonly eventId: string;
  readonly eventType: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly seq: number;
  /** The store-wide position the relay set (0 when the producer did not set it). */
  readonly globalPosition: number;
  readonly occurredAt: Date;
  readonly data: JsonObject;
  readonly metadata: Readonly<Record<string, string>>;
  /**
   * W3C trace context of the call that appended the event (`traceparent` gRPC metadata → envelope
   * metadata → Kafka header), or undefined when the client sent none.
   */
  readonly traceparent: string | undefined;
  readonly tracestate: string | undefined;
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
}

/** What a handler knows about the attempt it runs in. */
export interface HandlerContext {
  /** 1 for the first attempt; takeovers and retries count. */
  readonly attempt: number;
  /** Aborted when the lease is lost: stop external work, the transaction will not commit. */
  readonly signal: AbortSignal;
  /** Logger bound to the event: its fields include `eventId` and, when traced, `traceId`/`traceparent`. */
  readonly log: Logger;
  /** The event's W3C `traceparent` (same as `event.traceparent`): continue the trace from here. */
  readonly traceparent: string | undefined;
}

/**
 * A consumer's handler. `handle` runs inside a transaction that commits together with the
 * registry's "done"; throw to fail the attempt (PoisonError or ValidationError: dead-letter at
 * once; anything else: retry with backoff, dead-letter when exhausted). A side effect outside
 * PostgreSQL must be idempotent by `event.eventId`, because a crash after it and before "done"
 * repeats it.
 */
export interface Handler<DB = any> {
  /** Registry key and default consumer group suffix, e.g. `projection:instances`. */
  readonly name: string;
  /** Only these aggregate types reach `handle` (default all); others are acknowledged untouched. */
  readonly aggregateTypes?: readonly string[];
  /** Only these event types reach `handle` (default all). */
  readonly eventTypes?: readonly string[];
  /**
   * Upcasters keyed by `(eventType, fromVersion)`: every event of a type they cover reaches `handle`
   * in that type's latest schema version (docs/CONTRACT.md E3); one they cannot bring there —
   * a missing step, a version newer than the latest, an upcaster that throws — is dead-lettered at
   * once as poison. A handler module's `upcasters` export applies to its handlers that declare none.
   */
  readonly upcasters?: readonly Upcaster[];
  /**
   * What follows a dead letter of this handler (docs/CONTRACT.md C8): `park` (default) records
   * every later event of the same aggregate as parked, not applied, until the dead letter is
   * replayed or discarded, so the side effects keep the stream's order; `skip` applies them
   * anyway, for handlers that do not care about order.
   */
  readonly onDeadLetter?: "park" | "skip";
  handle(event: ConsumedEvent, tx: Transaction<DB>, context: HandlerContext): Promise<void>;
  /**
   * Optional: applies several events in one transaction, for handlers whose whole side effect is
   * in PostgreSQL (a projection). When present, the runtime claims the events that arrive
   * together in one statement and applies them, their "done" and their watermarks in one
   * transaction — a few round trips per group instead of several per event. The events are
   * fresh (above their aggregate's watermark), of several aggregates, each aggregate's in seq
   * order. Any failure rolls the whole group back and its events go through `handle` one by one,
   * so retries, dead letters and their counting are exactly those of `handle`.
   */
  handleBatch?(events: readonly ConsumedEvent[], tx: Transaction<DB>, context: BatchContext): Promise<void>;
}

/** What a handler knows about a group applied by {@link Handler.handleBatch}. */
export interface BatchContext {
  /** Aborted when a lease of the group is lost: the transaction will not commit. */
  readonly signal: AbortSignal;
  readonly log: Logger;
}

/**
 * Declares a handler, checking its name (letters, digits, `_ . : -`, at most 128 characters).
 * `defineHandler({ name: "audit", async handle(event, tx) { await tx.insertInto(...)... } })`.
 */
export function defineHandler<DB = any>(handler: Handler<DB>): Handler<DB> {
  const reason = checkHandlerName(handler.name);
  if (reason !== undefined) throw new Error(`handler name ${JSON.stringify(handler.name)} ${reason}`);
  // Malformed or duplicate upcasters fail here, at definition, rather than at the first event.
  if (handler.upcasters !== undefined) new Upcasters(handler.upcasters);
  return Object.freeze({ ...handler });
}

/** True when `handler` wants `event` (its aggregate and event type filters). */
export function wants(handler: Handler<unknown>, aggregateType: string, eventType: string): boolean {
  if (handler.aggregateTypes !== undefined && !handler.aggregateTypes.includes(aggregateType)) return false;
  if (handler.eventTypes !== undefined && !handler.eventTypes.includes(eventType)) return false;
  return true;
}

/**
 * Turns a Kafka message into a {@link ConsumedEvent}: the value is the envelope's protobuf JSON
 * (docs/CONTRACT.md R3). Anything that does not decode into a valid envelope is poison: it would fail
 * the same way on every attempt, so it goes to the dead-letter topic at once (C3).
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { checkAggregateId, checkAggregateType, checkEventId, checkEventType, decodeEnvelope, type MessageHeaders, type StoredMessage } from "../core/index.js";
import { PoisonError } from "./failures.js";
import type { ConsumedEvent } from "./handler.js";

/** The parts of a Kafka message the decoder reads. */
export interface RawMessage {
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
  readonly value: Buffer | null;
  readonly headers?: MessageHeaders | undefined;
}

/** Decodes and validates a message; throws PoisonError naming what is wrong. */
export function decodeMessage(message: RawMessage): ConsumedEvent {
  if (message.value === null || message.value.length === 0) throw new PoisonError("message has no value (tombstone or empty)");
  let envelope;
  try {
    envelope = decodeEnvelope(message.value.toString("utf8"));
  } catch (e) {
    throw new PoisonError("message value is not EventEnvelope JSON", { cause: e });
  }
  const problems: string[] = [];
  const check = (field: string, reason: string | undefined) => {
    if (reason !== undefined) problems.push(`${field} ${reason}`);
  };
  check("event_id", checkEventId(envelope.eventId));
  check("event_type", checkEventType(envelope.eventType));
  check("aggregate_type", checkAggregateType(envelope.aggregateType));
  check("aggregate_id", checkAggregateId(envelope.aggregateId));
  if (envelope.sequenceNumber < 1n || envelope.sequenceNumber > BigInt(Number.MAX_SAFE_INTEGER)) {
    problems.push(`sequence_number must be from 1 to 2^53, got ${envelope.sequenceNumber}`);
  }
  if (envelope.globalPosition > BigInt(Number.MAX_SAFE_INTEGER)) problems.push("global_position exceeds 2^53");
  if (problems.length > 0) throw new PoisonError(`invalid envelope: ${problems.join("; ")}`);
  return {
    envelope,
    eventId: envelope.eventId,
    eventType: envelope.eventType,
    aggregateType: envelope.aggregateType,
    aggregateId: envelope.aggregateId,
    seq: Number(envelope.sequenceNumber),
    globalPosition: Number(envelope.globalPosition),
    occurredAt: envelope.occurredAt === undefined ? new Date(0) : timestampDate(envelope.occurredAt),
    data: envelope.data ?? {},
    metadata: envelope.metadata,
    // The header is what the relay sent (R3); the metadata is where the server put it.
    traceparent: nonEmpty(headerText(message, "traceparent")) ?? nonEmpty(envelope.metadata["traceparent"]),
    tracestate: nonEmpty(headerText(message, "tracestate")) ?? nonEmpty(envelope.metadata["tracestate"]),
    topic: message.topic,
    partition: message.partition,
    offset: message.offset,
  };
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}

/** The trace id of a W3C `traceparent` (`00-{trace id}-{parent id}-{flags}`), if it is well-formed. */
export function traceIdOf(traceparent: string | undefined): string | undefined {
  const match = traceparent === undefined ? null : /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/.exec(traceparent.trim());
  return match === null || /^0+$/.test(match[1]!) ? undefined : match[1];
}

/** A header as text, if present (kafkajs gives Buffers). */
export function headerText(message: RawMessage, name: string): string | undefined {
  const value = message.headers?.[name];
  const first = Array.isArray(value) ? value[0] : value;
  if (first === undefined) return undefined;
  return typeof first === "string" ? first : first.toString("utf8");
}

/**
 * The registry key of a message that did not decode: its `event_id` header when that is a valid
 * id, else its Kafka coordinates (stable across redeliveries, so it is dead-lettered once).
 */
export function poisonEventId(message: RawMessage): string {
  const header = headerText(message, "event_id");
  if (header !== undefined && checkEventId(header) === undefined) return header;
  return `kafka:${message.topic}:${message.partition}:${message.offset}`;
}

/** A message as the registry keeps it for a replay (value and header values in base64; a header's first value). */
export function storedMessage(message: RawMessage): StoredMessage {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(message.headers ?? {})) {
    const first = Array.isArray(value) ? value[0] : value;
    if (first !== undefined) headers[name] = Buffer.from(first as Buffer | string).toString("base64");
  }
  return { topic: message.topic, partition: message.partition, offset: message.offset, value: message.value === null ? null : message.value.toString("base64"), headers };
}

/** The message {@link storedMessage} kept, as the decoder takes it. */
export function fromStoredMessage(stored: StoredMessage): RawMessage {
  const headers: Record<string, Buffer> = {};
  for (const [name, value] of Object.entries(stored.headers)) headers[name] = Buffer.from(value, "base64");
  return { topic: stored.topic, partition: stored.partition, offset: stored.offset, value: stored.value === null ? null : Buffer.from(stored.value, "base64"), headers };
}

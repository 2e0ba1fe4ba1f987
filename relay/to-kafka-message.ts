/**
 * The one wire format (docs/CONTRACT.md R3): the value is the envelope's protobuf JSON with proto field
 * names and `global_position` set from the commit log (the S3 object stores 0, because the position
 * is assigned at commit); headers repeat the identity fields, the content type and the trace context.
 */
import {
  type CommittedEvent,
  encodeEnvelope,
  ENVELOPE_CONTENT_TYPE,
  type EventEnvelope,
  EventKind,
  kindLabel,
  type Logger,
  type SlotRow,
  type UnreadableEventError,
} from "../core/index.js";
import type { EventKindLabel } from "./topic-router.js";

/**
 * Raises the alarm for publication blocked at an unreadable event (`who` names the relay): a
 * warning while the object store is unavailable, an error when the object is missing or corrupt.
 */
export function logBlocked(log: Logger, e: UnreadableEventError, who: string): void {
  const fields = { alarm: "relay_blocked", reason: e.reason, position: e.position, key: e.key, err: e };
  // A missing or corrupt object is data loss in the source of truth: an operator must act.
  if (e.reason === "unavailable") log.warn(fields, `${who} blocked: the object store is unavailable`);
  else log.error(fields, `${who} blocked: a committed event cannot be read; it will not be skipped`);
}

/** A Kafka message for one committed event, before routing picks its topic. */
export interface EventMessage {
  readonly position: number;
  readonly eventId: string;
  readonly aggregateType: string;
  readonly kind: EventKindLabel;
  /** Database time of the commit, for the commit-to-ack latency. */
  readonly committedAt: Date;
  readonly key: string;
  readonly value: string;
  readonly headers: Readonly<Record<string, string>>;
}

/** W3C trace context keys carried from metadata to headers. */
const TRACE_HEADERS = ["traceparent", "tracestate"] as const;

/**
 * Builds the message of a committed log row from its stored event (core's readCommittedEvent,
 * which has checked that the object holds that very event).
 */
export function toKafkaMessage(row: SlotRow, event: CommittedEvent): EventMessage {
  const position = row.globalPosition!;
  const envelope = event.envelope;
  const orderingKey = envelope.metadata["ordering_key"];
  // R2: one key per ordering domain, so Kafka keeps the events of that key in one partition.
  const key = orderingKey !== undefined && orderingKey !== "" ? orderingKey : `${envelope.aggregateType}/${envelope.aggregateId}`;
  const headers: Record<string, string> = {
    event_id: envelope.eventId,
    event_type: envelope.eventType,
    aggregate_type: envelope.aggregateType,
    aggregate_id: envelope.aggregateId,
    sequence_number: envelope.sequenceNumber.toString(),
    global_position: String(position),
    "content-type": ENVELOPE_CONTENT_TYPE,
  };
  for (const name of TRACE_HEADERS) {
    const value = envelope.metadata[name];
    if (value !== undefined && value !== "") headers[name] = value;
  }
  return {
    position,
    eventId: envelope.eventId,
    aggregateType: envelope.aggregateType,
    kind: eventKind(envelope.kind, envelope.metadata["kind"]),
    committedAt: row.committedAt!,
    key,
    value: withGlobalPosition(event.body, envelope, position),
    headers,
  };
}

/**
 * The stored envelope with `global_position` set: the stored bytes with the field put first, so
 * everything S3 holds reaches Kafka byte for byte (unknown fields of newer writers included) without
 * encoding the envelope again. Stored envelopes never carry a position (the log assigns it at
 * commit); one that does is re-encoded with the log's.
 */
function withGlobalPosition(body: string, envelope: EventEnvelope, position: number): string {
  if (body.startsWith("{\"") && !body.includes('"global_position"') && !body.includes('"globalPosition"')) {
    return `{"global_position":"${position}",${body.slice(1)}`;
  }
  return encodeEnvelope({ ...envelope, globalPosition: BigInt(position) });
}

function eventKind(kind: EventKind, metadataKind: string | undefined): EventKindLabel {
  if (kind === EventKind.UNSPECIFIED) return metadataKind === "command" ? "command" : "domain";
  return kindLabel(kind);
}

/**
 * Turns a Kafka message into a {@link ConsumedEvent}: the value is the envelope's protobuf JSON
 * (docs/CONTRACT.md R3). Anything that does not decode into a valid envelope is poison: it would fail
 * the same way on every attempt, so it goes to the dead-letter topic at once (C3). The handler's
 * upcasters bring the data to its type's latest schema version here, before the handler sees it
 * (E3); an event they cannot bring there is poison too.
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { checkAggregateId, checkAggregateType, checkEventId, checkEventType, databaseOf, decodeEnvelope, type MessageHeaders, openEnvelope, type StoredMessage, Upcasters } from "../core/index.js";
import { InfrastructureError, PoisonError } from "./failures.js";
import type { ConsumedEvent, Handler } from "./handler.js";

/** The parts of a Kafka message the decoder reads. */
export interface RawMessage {
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
  readonly value: Buffer | null;
  readonly headers?: MessageHeaders | undefined;
}

/** A message as the processor takes it: decoded into `event`, or poison with the reason. */
export interface IncomingMessage {
  readonly raw: RawMessage;
  readonly event: ConsumedEvent | undefined;
  readonly poison: PoisonError | undefined;
}

/**
 * A message delivered (the partition scheduler) or kept for a replay (the replayer) as the
 * processor takes it; one that does not decode, or that the upcasters cannot bring up to date, is
 * poison, kept with the reason (C3, E3).
 */
export function decode(raw: RawMessage, upcasters: Upcasters = Upcasters.NONE): IncomingMessage {
  try {
    return { raw, event: decodeMessage(raw, upcasters), poison: undefined };
  } catch (e) {
    return { raw, event: undefined, poison: e instanceof PoisonError ? e : new PoisonError("message could not be decoded", { cause: e }) };
  }
}

/**
 * Decodes and validates a message, then upcasts it with `upcasters`; throws PoisonError naming what
 * is wrong (for a missing upcaster: the event type and the version nothing upcasts).
 */
export function decodeMessage(message: RawMessage, upcasters: Upcasters = Upcasters.NONE): ConsumedEvent {
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
  const stored: ConsumedEvent = {
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
  // A sealed event's data is upcast once it is opened (openSealedEvent), never its empty stand-in.
  if (envelope.subject !== "") return stored;
  const upcast = upcastOrPoison(envelope, upcasters, stored);
  return upcast === envelope ? stored : { ...stored, envelope: upcast, data: upcast.data ?? {} };
}

/** `envelope` brought to its type's latest schema, or a PoisonError naming the event (E3, C8). */
function upcastOrPoison<E extends Parameters<Upcasters["upcastEnvelope"]>[0]>(envelope: E, upcasters: Upcasters, event: ConsumedEvent): E {
  try {
    return upcasters.upcastEnvelope(envelope) as E;
  } catch (e) {
    throw new PoisonError(`cannot read the event: ${(e as Error).message}`, { cause: e, event });
  }
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

// ------------------------------------------------------------------ sealed events (docs/SECURITY.md "Erasure")

/**
 * Where a consumer process gets a data subject's key: from the server (PrivacyService.GetSubjectKey,
 * wired by the CLI), or in process from the server it runs beside. Null when the subject was
 * forgotten (or never named). A consumer holds no master key, so once a subject is forgotten no
 * consumer can open its events again, however long it kept its messages.
 */
export interface SubjectKeySource {
  key(database: string, subject: string): Promise<Uint8Array | null>;
}

/**
 * The event as a handler sees it: an event naming a subject gets its `data` opened with the
 * subject's key, or the erasure marker (core ERASED_DATA) once the subject is forgotten; other
 * events are returned as they are. The key source failing is an outage (the partition pauses, no
 * attempt is counted); sealed bytes that do not open with the subject's key are poison.
 */
export async function openSealedEvent(event: ConsumedEvent, keys: SubjectKeySource | undefined, upcasters: Upcasters = Upcasters.NONE): Promise<ConsumedEvent> {
  const subject = event.envelope.subject;
  if (subject === "") return event;
  if (keys === undefined) {
    throw new InfrastructureError("an event names a data subject, but this consumer has no key source: set TIDEMARK_CONSUMER_KEY_SERVER (docs/OPERATIONS.md \"Erasure\")");
  }
  let key: Uint8Array | null;
  try {
    key = await keys.key(databaseOf(event.aggregateId), subject);
  } catch (e) {
    throw new InfrastructureError("subject key", { cause: e });
  }
  let envelope;
  try {
    envelope = openEnvelope(event.envelope, key);
  } catch (e) {
    throw new PoisonError("the event's sealed data does not open with its subject's key", { cause: e });
  }
  // Opened, it is brought to its type's latest schema like any other event (E3; the upcasters leave the erasure marker as it is).
  envelope = upcastOrPoison(envelope, upcasters, event);
  return { ...event, envelope, data: envelope.data ?? {} };
}

/**
 * What a runtime applies to each claimed event of `handler` before its transaction begins
 * (EventProcessorOptions.open): {@link openSealedEvent} with the handler's upcasters, so a handler
 * sees no sealed bytes.
 */
export function eventOpener(handler: Pick<Handler, "upcasters">, keys: SubjectKeySource | undefined): (event: ConsumedEvent) => Promise<ConsumedEvent> {
  const upcasters = new Upcasters(handler.upcasters ?? []);
  return (event) => openSealedEvent(event, keys, upcasters);
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

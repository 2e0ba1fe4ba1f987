/**
 * Request validation: every problem becomes a field violation naming the field, and a request with
 * any violation is refused before anything is reserved or written (docs/CONTRACT.md A2). A value that
 * passes can be stored exactly as sent: ids are taken as they are or refused, data has a JSON form.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import {
  checkAggregateId,
  checkAggregateType,
  checkEventId,
  checkEventType,
  checkJsonValue,
  checkSubject,
  contentHash,
  databaseOf,
  EventKind,
  type Expectation,
  type JsonRules,
  kindLabel,
  Violations,
} from "../core/index.js";
import type { AppendEventsRequest } from "../gen/tidemark/v1/event_store_pb.js";
import type { AppendInput, ProposedEventInput } from "./event-store.js";
import type { Limits } from "./limits.js";

const METADATA_KEY = /^[A-Za-z0-9_.-]{1,64}$/;
// C0 and C1 controls and DEL: a value with NUL, CR or LF breaks logs, headers and text protocols.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/**
 * Aggregate types whose streams belong to a domain service: only that service writes them, so a
 * generic append cannot forge what the service decides (GetInstance folds these streams).
 */
export const DOMAIN_AGGREGATE_TYPES: ReadonlyMap<string, string> = new Map([
  ["Instance", "tidemark.v1.InstanceService"],
  ["DataSubject", "tidemark.v1.PrivacyService"],
]);

/**
 * Metadata keys the server sets itself; a client may not send them. `command_id` is what
 * GetProcessingStatus finds a command's events by, and InstanceService sets it from the request.
 */
export const SERVER_METADATA_KEYS: ReadonlySet<string> = new Set(["command_id"]);

/** Validates an AppendEvents request into an append; throws ValidationError naming every bad field. */
export function validateAppend(request: AppendEventsRequest, limits: Limits, traceparent?: string): AppendInput {
  const v = new Violations();
  v.add("aggregate_type", checkAggregateType(request.aggregateType));
  const owner = DOMAIN_AGGREGATE_TYPES.get(request.aggregateType);
  if (owner !== undefined) v.add("aggregate_type", `${request.aggregateType} streams are written only through ${owner}`);
  v.add("aggregate_id", checkAggregateId(request.aggregateId));
  v.add("actor", checkActor(request.actor));
  let expectation: Expectation = { type: "any" };
  switch (request.expectation.case) {
    case "expectedSeq":
      v.add("expected_seq", checkSeq(request.expectation.value));
      expectation = { type: "exact", seq: Number(request.expectation.value) };
      break;
    case "noStream":
      expectation = { type: "exact", seq: 0 };
      break;
    case "any":
      break;
    default:
      v.add("expectation", "is required: set expected_seq, no_stream or any");
  }
  if (request.events.length === 0) v.add("events", "must contain at least one event");
  if (request.events.length > limits.maxEventsPerAppend) {
    v.add("events", `must contain at most ${limits.maxEventsPerAppend} events, got ${request.events.length}`);
  }
  const ids = new Set<string>();
  const events: ProposedEventInput[] = [];
  request.events.slice(0, limits.maxEventsPerAppend).forEach((event, i) => {
    const at = `events[${i}]`;
    v.add(`${at}.event_id`, checkEventId(event.eventId));
    if (ids.has(event.eventId)) v.add(`${at}.event_id`, "appears twice in this request");
    ids.add(event.eventId);
    v.add(`${at}.event_type`, checkEventType(event.eventType));
    const data = event.data ?? {};
    const checked = checkJson(v, `${at}.data`, data, limits);
    const metadata = { ...event.metadata };
    v.add(`${at}.metadata`, checkMetadata(metadata, limits, SERVER_METADATA_KEYS));
    let kind = event.kind;
    if (kind === EventKind.UNSPECIFIED) kind = metadata["kind"] === "command" ? EventKind.COMMAND : EventKind.DOMAIN;
    if (!(kind in EventKind)) v.add(`${at}.kind`, `unknown kind ${kind}`);
    if (metadata["kind"] !== undefined && metadata["kind"] !== kindLabel(kind)) {
      v.add(`${at}.metadata.kind`, `must be "${kindLabel(kind)}" to match kind, or be left out`);
    }
    metadata["kind"] = kindLabel(kind);
    if (traceparent !== undefined && metadata["traceparent"] === undefined) metadata["traceparent"] = traceparent;
    if (event.subject !== "") {
      v.add(`${at}.subject`, checkSubject(event.subject));
      // A subject is scoped to a database (ForgetSubject names both).
      if (databaseOf(request.aggregateId) === "") v.add(`${at}.subject`, `needs an aggregate of a database: aggregate_id must start with "{database}/"`);
    }
    const schemaVersion = event.schemaVersion === 0 ? 1 : event.schemaVersion;
    const hash = contentHash({
      eventType: event.eventType,
      aggregateType: request.aggregateType,
      aggregateId: request.aggregateId,
      data,
      metadata,
      schemaVersion,
      kind,
    });
    events.push({ eventId: event.eventId, eventType: event.eventType, data, dataJson: checked, metadata, schemaVersion, kind, contentHash: hash, ...(event.subject === "" ? {} : { subject: event.subject }) });
  });
  v.throwIfAny();
  return { aggregateType: request.aggregateType, aggregateId: request.aggregateId, expectation, events, actor: request.actor };
}

/** A sequence number the store can represent. */
export function checkSeq(value: bigint): string | undefined {
  return value > BigInt(Number.MAX_SAFE_INTEGER) ? `must be at most ${Number.MAX_SAFE_INTEGER}` : undefined;
}

/** The actor: free text up to 256 characters, no control characters. */
export function checkActor(actor: string): string | undefined {
  if (actor.length > 256) return "must be at most 256 characters";
  if (CONTROL.test(actor)) return "must not contain control characters";
  return undefined;
}

/**
 * Metadata: bounded entry count, key charset, no `__proto__` (it cannot be kept in a JSON object
 * built by assignment, as protobuf-es builds maps), none of the keys in `reserved`, and values of
 * bounded length without control characters.
 */
export function checkMetadata(metadata: Readonly<Record<string, string>>, limits: Limits, reserved: ReadonlySet<string> = new Set()): string | undefined {
  const keys = Object.keys(metadata);
  if (keys.length > limits.maxMetadataEntries) return `must have at most ${limits.maxMetadataEntries} entries`;
  for (const key of keys) {
    const value = metadata[key]!;
    if (!METADATA_KEY.test(key)) return `key ${JSON.stringify(key.slice(0, 80))} must match [A-Za-z0-9_.-]{1,64}`;
    if (key === "__proto__") return "key __proto__ is not allowed";
    if (reserved.has(key)) return `key ${key} is set by the server and cannot be sent`;
    if (value.length > limits.maxMetadataValueLength) {
      return `value of ${key} must be at most ${limits.maxMetadataValueLength} characters`;
    }
    if (CONTROL.test(value)) return `value of ${key} must not contain control characters (NUL, CR, LF, ...)`;
  }
  return undefined;
}

/** The JSON rules of event data (and instance properties, with `refuseNul`) under `limits`. */
export function jsonRules(limits: Limits, refuseNul = false): JsonRules {
  return { maxDepth: limits.maxDataDepth, maxBytes: limits.maxDataBytes, refuseNul };
}

/**
 * Checks a JSON object field (`data`, `properties`) and adds a violation naming the exact place, e.g.
 * `events[0].data.price: must be a finite number`. Returns the value encoded as JSON when it passes.
 */
export function checkJson(v: Violations, field: string, value: JsonObject, limits: Limits, refuseNul = false): string | undefined {
  const result = checkJsonValue(value, jsonRules(limits, refuseNul));
  if ("json" in result) return result.json;
  v.add(`${field}${result.problem.at}`, result.problem.reason);
  return undefined;
}

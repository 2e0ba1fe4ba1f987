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
import type { AppendEventsRequest, AppendToStreamsRequest, ProposedEvent } from "../gen/tidemark/v1/event_store_pb.js";
import type { AppendInput, MultiAppendInput, ProposedEventInput, StreamAppendInput } from "./event-store.js";
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
  checkWrittenAggregate(v, "", request.aggregateType, request.aggregateId);
  v.add("actor", checkActor(request.actor));
  const expectation = checkExpectation(v, "", request.expectation);
  if (request.events.length === 0) v.add("events", "must contain at least one event");
  if (request.events.length > limits.maxEventsPerAppend) {
    v.add("events", `must contain at most ${limits.maxEventsPerAppend} events, got ${request.events.length}`);
  }
  const events = checkEvents(v, "events", request.aggregateType, request.aggregateId, request.events.slice(0, limits.maxEventsPerAppend), limits, new Set(), traceparent);
  v.throwIfAny();
  return { aggregateType: request.aggregateType, aggregateId: request.aggregateId, expectation, events, actor: request.actor };
}

/**
 * Validates an AppendToStreams request (docs/CONTRACT.md W8): every stream as AppendEvents checks
 * its own, at least one stream, at most `maxStreamsPerCall` streams and checks together and
 * `maxEventsPerAppend` events in all, no aggregate named twice (written twice, checked twice, or
 * written and checked), event ids unique across the call. Throws ValidationError naming every bad field.
 */
export function validateAppendToStreams(request: AppendToStreamsRequest, limits: Limits, traceparent?: string): MultiAppendInput {
  const v = new Violations();
  v.add("actor", checkActor(request.actor));
  const named = request.streams.length + request.consistencyChecks.length;
  if (request.streams.length === 0) v.add("streams", "must contain at least one stream");
  if (named > limits.maxStreamsPerCall) {
    v.add("streams", `with consistency_checks must name at most ${limits.maxStreamsPerCall} aggregates, got ${named}`);
  }
  const total = request.streams.reduce((n, stream) => n + stream.events.length, 0);
  if (total > limits.maxEventsPerAppend) v.add("streams", `must contain at most ${limits.maxEventsPerAppend} events in all, got ${total}`);
  const seen = new Map<string, string>();
  const claim = (at: string, aggregateType: string, aggregateId: string) => {
    const key = `${aggregateType}\u0000${aggregateId}`;
    const before = seen.get(key);
    if (before !== undefined) v.add(at, `names the same aggregate as ${before}: each aggregate is written or checked once per call`);
    else seen.set(key, at);
  };
  const ids = new Set<string>();
  const streams: StreamAppendInput[] = [];
  request.streams.slice(0, limits.maxStreamsPerCall).forEach((stream, i) => {
    const at = `streams[${i}]`;
    checkWrittenAggregate(v, `${at}.`, stream.aggregateType, stream.aggregateId);
    v.add(`${at}.database`, checkStatedDatabase(stream.database, stream.aggregateId));
    claim(at, stream.aggregateType, stream.aggregateId);
    const expectation = checkExpectation(v, `${at}.`, stream.expectation);
    if (stream.events.length === 0) v.add(`${at}.events`, "must contain at least one event");
    const events = checkEvents(v, `${at}.events`, stream.aggregateType, stream.aggregateId, stream.events.slice(0, limits.maxEventsPerAppend), limits, ids, traceparent);
    streams.push({ aggregateType: stream.aggregateType, aggregateId: stream.aggregateId, expectation, events });
  });
  const checks: MultiAppendInput["checks"][number][] = [];
  request.consistencyChecks.slice(0, limits.maxStreamsPerCall).forEach((check, i) => {
    const at = `consistency_checks[${i}]`;
    v.add(`${at}.aggregate_type`, checkAggregateType(check.aggregateType));
    v.add(`${at}.aggregate_id`, checkAggregateId(check.aggregateId));
    v.add(`${at}.database`, checkStatedDatabase(check.database, check.aggregateId));
    claim(at, check.aggregateType, check.aggregateId);
    let expectedSeq = 0;
    switch (check.expectation.case) {
      case "expectedSeq":
        v.add(`${at}.expected_seq`, checkSeq(check.expectation.value));
        expectedSeq = Number(check.expectation.value);
        break;
      case "noStream":
        break;
      default:
        v.add(`${at}.expectation`, "is required: set expected_seq or no_stream");
    }
    checks.push({ aggregateType: check.aggregateType, aggregateId: check.aggregateId, expectedSeq });
  });
  v.throwIfAny();
  return { streams, checks, actor: request.actor };
}

/** The aggregate of a generic write: valid ids, and not a type a domain service owns. */
function checkWrittenAggregate(v: Violations, at: string, aggregateType: string, aggregateId: string): void {
  v.add(`${at}aggregate_type`, checkAggregateType(aggregateType));
  const owner = DOMAIN_AGGREGATE_TYPES.get(aggregateType);
  if (owner !== undefined) v.add(`${at}aggregate_type`, `${aggregateType} streams are written only through ${owner}`);
  v.add(`${at}aggregate_id`, checkAggregateId(aggregateId));
}

/** An append's expectation; a missing one is a violation, never an implied "any" (W3). */
function checkExpectation(v: Violations, at: string, expectation: AppendEventsRequest["expectation"]): Expectation {
  switch (expectation.case) {
    case "expectedSeq":
      v.add(`${at}expected_seq`, checkSeq(expectation.value));
      return { type: "exact", seq: Number(expectation.value) };
    case "noStream":
      return { type: "exact", seq: 0 };
    case "any":
      return { type: "any" };
    default:
      v.add(`${at}expectation`, "is required: set expected_seq, no_stream or any");
      return { type: "any" };
  }
}

/** `database`, when set, must be the aggregate's database (its id's first part). */
export function checkStatedDatabase(stated: string, aggregateId: string): string | undefined {
  if (stated === "" || stated === databaseOf(aggregateId)) return undefined;
  return `must be the part of aggregate_id before its first "/" (the aggregate's database), or empty`;
}

/**
 * The proposed events of one stream, each under `{at}[i]`: ids (unique across `ids`, which collects
 * them), type, data, metadata and kind; computes each content hash.
 */
function checkEvents(
  v: Violations,
  at: string,
  aggregateType: string,
  aggregateId: string,
  proposed: readonly ProposedEvent[],
  limits: Limits,
  ids: Set<string>,
  traceparent: string | undefined,
): ProposedEventInput[] {
  return proposed.map((event, i) => {
    const field = `${at}[${i}]`;
    v.add(`${field}.event_id`, checkEventId(event.eventId));
    if (ids.has(event.eventId)) v.add(`${field}.event_id`, "appears twice in this request");
    ids.add(event.eventId);
    v.add(`${field}.event_type`, checkEventType(event.eventType));
    const data = event.data ?? {};
    const checked = checkJson(v, `${field}.data`, data, limits);
    const metadata = { ...event.metadata };
    v.add(`${field}.metadata`, checkMetadata(metadata, limits, SERVER_METADATA_KEYS));
    let kind = event.kind;
    if (kind === EventKind.UNSPECIFIED) kind = metadata["kind"] === "command" ? EventKind.COMMAND : EventKind.DOMAIN;
    if (!(kind in EventKind)) v.add(`${field}.kind`, `unknown kind ${kind}`);
    if (metadata["kind"] !== undefined && metadata["kind"] !== kindLabel(kind)) {
      v.add(`${field}.metadata.kind`, `must be "${kindLabel(kind)}" to match kind, or be left out`);
    }
    metadata["kind"] = kindLabel(kind);
    if (traceparent !== undefined && metadata["traceparent"] === undefined) metadata["traceparent"] = traceparent;
    if (event.subject !== "") {
      v.add(`${field}.subject`, checkSubject(event.subject));
      // A subject is scoped to a database (ForgetSubject names both).
      if (databaseOf(aggregateId) === "") v.add(`${field}.subject`, `needs an aggregate of a database: aggregate_id must start with "{database}/"`);
    }
    const schemaVersion = event.schemaVersion === 0 ? 1 : event.schemaVersion;
    const hash = contentHash({ eventType: event.eventType, aggregateType, aggregateId, data, metadata, schemaVersion, kind });
    return { eventId: event.eventId, eventType: event.eventType, data, dataJson: checked, metadata, schemaVersion, kind, contentHash: hash, ...(event.subject === "" ? {} : { subject: event.subject }) };
  });
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

/**
 * Request validation: every problem becomes a field violation naming the field, and a request with
 * any violation is refused before anything is written (CONTRACT.md A2).
 */
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { contentHash, EventKind, kindLabel } from "../core/envelope.js";
import { Violations } from "../core/errors.js";
import type { Expectation } from "../core/event-log.js";
import { checkAggregateId, checkAggregateType, checkEventId, checkEventType } from "../core/ids.js";
import type { AppendEventsRequest } from "../gen/tidemark/v1/event_store_pb.js";
import type { AppendInput, ProposedEventInput } from "./event-store.js";
import type { Limits } from "./limits.js";

const METADATA_KEY = /^[A-Za-z0-9_.-]{1,64}$/;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/** Validates an AppendEvents request into an append; throws ValidationError naming every bad field. */
export function validateAppend(request: AppendEventsRequest, limits: Limits, traceparent?: string): AppendInput {
  const v = new Violations();
  v.add("aggregate_type", checkAggregateType(request.aggregateType));
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
    v.add(`${at}.data`, checkJson(data, limits));
    const metadata = { ...event.metadata };
    v.add(`${at}.metadata`, checkMetadata(metadata, limits));
    let kind = event.kind;
    if (kind === EventKind.UNSPECIFIED) kind = metadata["kind"] === "command" ? EventKind.COMMAND : EventKind.DOMAIN;
    if (!(kind in EventKind)) v.add(`${at}.kind`, `unknown kind ${kind}`);
    if (metadata["kind"] !== undefined && metadata["kind"] !== kindLabel(kind)) {
      v.add(`${at}.metadata.kind`, `must be "${kindLabel(kind)}" to match kind, or be left out`);
    }
    metadata["kind"] = kindLabel(kind);
    if (traceparent !== undefined && metadata["traceparent"] === undefined) metadata["traceparent"] = traceparent;
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
    events.push({ eventId: event.eventId, eventType: event.eventType, data, metadata, schemaVersion, kind, contentHash: hash });
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

/** Metadata: bounded entry count, key charset and value length. */
export function checkMetadata(metadata: Readonly<Record<string, string>>, limits: Limits): string | undefined {
  const entries = Object.entries(metadata);
  if (entries.length > limits.maxMetadataEntries) return `must have at most ${limits.maxMetadataEntries} entries`;
  for (const [key, value] of entries) {
    if (!METADATA_KEY.test(key)) return `key ${JSON.stringify(key.slice(0, 80))} must match [A-Za-z0-9_.-]{1,64}`;
    if (value.length > limits.maxMetadataValueLength) {
      return `value of ${key} must be at most ${limits.maxMetadataValueLength} characters`;
    }
  }
  return undefined;
}

/** A JSON object within the size and depth limits. */
export function checkJson(data: JsonObject, limits: Limits): string | undefined {
  const depth = jsonDepth(data, limits.maxDataDepth + 1);
  if (depth > limits.maxDataDepth) return `must nest at most ${limits.maxDataDepth} levels deep`;
  const bytes = Buffer.byteLength(JSON.stringify(data), "utf8");
  if (bytes > limits.maxDataBytes) return `must be at most ${limits.maxDataBytes} bytes as JSON, got ${bytes}`;
  return undefined;
}

function jsonDepth(value: JsonValue, stopAt: number, depth = 0): number {
  if (value === null || typeof value !== "object" || depth >= stopAt) return depth;
  let max = depth + 1;
  for (const child of Array.isArray(value) ? value : Object.values(value)) {
    max = Math.max(max, jsonDepth(child, stopAt, depth + 1));
    if (max >= stopAt) break;
  }
  return max;
}

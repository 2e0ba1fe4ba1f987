/**
 * The event envelope on the wire and at rest: protobuf JSON with proto field names, so any language
 * decodes it. Also the canonical content hash that decides idempotent retries (docs/CONTRACT.md W4).
 */
import { createHash } from "node:crypto";
import { fromJson, toJson, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { EventEnvelopeSchema, EventKind, type EventEnvelope } from "../gen/tidemark/v1/envelope_pb.js";
import { isJsonObject } from "./json-object.js";

export { EventEnvelopeSchema, EventKind, type EventEnvelope };

/** Content type of envelope bytes in S3 and on Kafka. */
export const ENVELOPE_CONTENT_TYPE = "application/vnd.tidemark.event+json";

/** Metadata keys that describe transport, not content: excluded from the content hash. */
export const TRACE_METADATA_KEYS: ReadonlySet<string> = new Set(["traceparent", "tracestate", "baggage"]);

/** The proto (snake_case) names of the envelope's fields, in field-number order. */
const ENVELOPE_FIELDS = EventEnvelopeSchema.fields.map((f) => f.name);

/**
 * Encodes an envelope as protobuf JSON with proto field names, fields in field-number order. `data`
 * is written by JSON.stringify rather than protobuf-es, which builds objects by assignment and so
 * would drop a key such as `__proto__`: the stored data is exactly what the client sent. Pass
 * `dataJson` when the caller already has `data` encoded (validation does).
 */
export function encodeEnvelope(envelope: EventEnvelope, dataJson?: string): string {
  const rest = toJson(EventEnvelopeSchema, { ...envelope, data: undefined }, { useProtoFieldName: true }) as JsonObject;
  const data = dataJson ?? (envelope.data === undefined ? undefined : JSON.stringify(envelope.data));
  const parts: string[] = [];
  for (const name of ENVELOPE_FIELDS) {
    if (name === "data") {
      if (data !== undefined) parts.push(`"data":${data}`);
    } else if (rest[name] !== undefined) {
      parts.push(`${JSON.stringify(name)}:${JSON.stringify(rest[name])}`);
    }
  }
  return `{${parts.join(",")}}`;
}

/** Decodes envelope JSON; unknown fields are ignored so newer writers do not break older readers. */
export function decodeEnvelope(json: string): EventEnvelope {
  return envelopeFromJson(JSON.parse(json) as JsonValue);
}

/** The envelope of parsed JSON, with `data` taken as parsed (every key kept, see encodeEnvelope). */
function envelopeFromJson(parsed: JsonValue): EventEnvelope {
  if (!isJsonObject(parsed)) throw new Error("an envelope must be a JSON object");
  const { data, ...rest } = parsed;
  const envelope = fromJson(EventEnvelopeSchema, rest, { ignoreUnknownFields: true });
  if (data !== undefined && data !== null) {
    if (!isJsonObject(data)) throw new Error("an envelope's data must be a JSON object");
    envelope.data = data;
  }
  return envelope;
}

/** The parts of an event that make up its content for idempotency. */
export interface EventContent {
  readonly eventType: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly data: JsonObject;
  readonly metadata: Readonly<Record<string, string>>;
  readonly schemaVersion: number;
  readonly kind: EventKind;
  /** The data subject (docs/SECURITY.md "Erasure"); with one, `data` is `{}` and `sealedData` holds it. */
  readonly subject?: string;
  readonly sealedData?: Uint8Array;
}

/**
 * The canonical content hash: SHA-256 over canonical JSON (sorted keys) of type, aggregate, data,
 * schema version, kind and the semantic metadata — not trace headers, not server-assigned fields.
 */
export function contentHash(content: EventContent): string {
  const metadata: Record<string, string> = {};
  for (const [key, value] of Object.entries(content.metadata)) {
    if (!TRACE_METADATA_KEYS.has(key)) metadata[key] = value;
  }
  const fields: Record<string, JsonValue> = {
    aggregate_id: content.aggregateId,
    aggregate_type: content.aggregateType,
    data: content.data,
    event_type: content.eventType,
    kind: content.kind,
    metadata,
    schema_version: content.schemaVersion,
  };
  // A sealed event hashes its sealed bytes, never its plaintext: the hash (and the chain over it)
  // stays verifiable after the subject is forgotten, and reveals nothing of the data (T5). Events
  // without a subject hash exactly as before.
  if (content.subject !== undefined && content.subject !== "") {
    fields["subject"] = content.subject;
    fields["sealed_data"] = Buffer.from(content.sealedData ?? new Uint8Array()).toString("base64");
  }
  const canonical = canonicalJson(fields);
  return `sha256:${createHash("sha256").update(canonical).digest("hex")}`;
}

/**
 * An event's link in its stream's hash chain (docs/STORAGE.md "Hash chain"): SHA-256 over the UTF-8
 * text `previousHash \n eventId \n seq \n contentHash`, as "sha256:<hex>". The next event of the
 * stream carries it as `previous_hash`. core/db/functions/reserve_slots.sql computes the same.
 */
export function chainLink(previousHash: string, eventId: string, seq: number | bigint, contentHash: string): string {
  return `sha256:${createHash("sha256").update(`${previousHash}\n${eventId}\n${String(seq)}\n${contentHash}`, "utf8").digest("hex")}`;
}

/** JSON with object keys sorted at every level; arrays keep their order. */
export function canonicalJson(value: JsonValue): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k] as JsonValue)}`).join(",")}}`;
}

/** The metadata value of `kind` for an event kind, as the origin wrote it. */
export function kindLabel(kind: EventKind): "domain" | "command" {
  return kind === EventKind.COMMAND ? "command" : "domain";
}

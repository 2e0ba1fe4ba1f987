/**
 * Identifier rules and the S3 key layout. Every id that becomes part of an S3 key is validated here
 * and encoded injectively, so no id can escape its stream's prefix or share it with another id
 * (docs/CONTRACT.md A2, weakness 6 of the origin).
 */

/** Limits on identifiers, also listed in docs/CONFIGURATION.md. */
export const ID_LIMITS = Object.freeze({
  aggregateTypeMaxLength: 64,
  aggregateIdMaxBytes: 256,
  eventIdMaxLength: 128,
  eventTypeMaxLength: 128,
  instancePartMaxLength: 64,
  instanceIdMaxBytes: 128,
});

const AGGREGATE_TYPE = /^[A-Za-z][A-Za-z0-9_.-]*$/;
const EVENT_TYPE = /^[A-Za-z][A-Za-z0-9_.:-]*$/;
const EVENT_ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]*$/;
const INSTANCE_PART = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;
// C0/C1 controls, DEL, lone surrogates, and the Unicode line/paragraph separators.
// eslint-disable-next-line no-control-regex
const FORBIDDEN_CHARS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/u;
// Characters that render as nothing or reorder text: U+FEFF (byte order mark), zero-width spaces
// and joiners, soft hyphen, variation selectors, tags, and the bidi controls. Two ids that differ
// only by them look identical to a person, so ids may not contain them at all.
const INVISIBLE_CHARS = /[\p{Default_Ignorable_Code_Point}\p{Bidi_Control}]/u;

/** Returns the reason an aggregate type is invalid, or undefined when it is valid. */
export function checkAggregateType(value: string): string | undefined {
  if (value.length === 0) return "is required";
  if (value.length > ID_LIMITS.aggregateTypeMaxLength) {
    return `must be at most ${ID_LIMITS.aggregateTypeMaxLength} characters`;
  }
  if (!AGGREGATE_TYPE.test(value)) return "must match [A-Za-z][A-Za-z0-9_.-]*";
  return undefined;
}

/**
 * Returns the reason an aggregate id is invalid, or undefined. Any Unicode text in NFC form up to
 * 256 UTF-8 bytes is allowed, except control characters; `/` and `.` are allowed because the key
 * encoding escapes them.
 */
export function checkAggregateId(value: string): string | undefined {
  return checkFreeText(value, ID_LIMITS.aggregateIdMaxBytes);
}

/** Returns the reason an event id is invalid, or undefined. */
export function checkEventId(value: string): string | undefined {
  if (value.length === 0) return "is required";
  if (value.length > ID_LIMITS.eventIdMaxLength) {
    return `must be at most ${ID_LIMITS.eventIdMaxLength} characters`;
  }
  if (!EVENT_ID.test(value)) return "must match [A-Za-z0-9][A-Za-z0-9_.:-]*";
  return undefined;
}

/** Returns the reason an event type is invalid, or undefined. */
export function checkEventType(value: string): string | undefined {
  if (value.length === 0) return "is required";
  if (value.length > ID_LIMITS.eventTypeMaxLength) {
    return `must be at most ${ID_LIMITS.eventTypeMaxLength} characters`;
  }
  if (!EVENT_TYPE.test(value)) return "must match [A-Za-z][A-Za-z0-9_.:-]*";
  return undefined;
}

/** Returns the reason a database or class name is invalid, or undefined. */
export function checkInstancePart(value: string): string | undefined {
  if (value.length === 0) return "is required";
  if (value.length > ID_LIMITS.instancePartMaxLength) {
    return `must be at most ${ID_LIMITS.instancePartMaxLength} characters`;
  }
  if (!INSTANCE_PART.test(value)) return "must match [A-Za-z0-9][A-Za-z0-9_-]*";
  return undefined;
}

/** Returns the reason an instance id is invalid, or undefined: free text without `/`. */
export function checkInstanceId(value: string): string | undefined {
  const reason = checkFreeText(value, ID_LIMITS.instanceIdMaxBytes);
  if (reason !== undefined) return reason;
  if (value.includes("/")) return "must not contain '/'";
  return undefined;
}

function checkFreeText(value: string, maxBytes: number): string | undefined {
  if (value.length === 0) return "is required";
  if (Buffer.byteLength(value, "utf8") > maxBytes) return `must be at most ${maxBytes} bytes of UTF-8`;
  if (FORBIDDEN_CHARS.test(value)) return "must not contain control characters or lone surrogates";
  if (INVISIBLE_CHARS.test(value)) return "must not contain invisible or bidi control characters (U+FEFF, zero-width, bidi overrides, ...)";
  if (value.normalize("NFC") !== value) return "must be in Unicode NFC form";
  if (value.trim() !== value) return "must not start or end with white space";
  return undefined;
}

/**
 * Encodes an id as one S3 key segment: ASCII letters, digits, `_` and `-` stay; every other UTF-8
 * byte becomes `%XX`. Injective, never contains `/` or `.`, so `..` and prefix collisions cannot arise.
 */
export function encodeKeySegment(value: string): string {
  let out = "";
  for (const byte of Buffer.from(value, "utf8")) {
    const isPlain =
      (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) ||
      (byte >= 0x61 && byte <= 0x7a) || byte === 0x5f || byte === 0x2d;
    out += isPlain ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** Inverse of {@link encodeKeySegment}. */
export function decodeKeySegment(segment: string): string {
  return decodeURIComponent(segment);
}

/** The aggregate id of an instance: `{database}/{class_name}/{instance_id}`. */
export function instanceAggregateId(database: string, className: string, instanceId: string): string {
  return `${database}/${className}/${instanceId}`;
}

/**
 * Longest path segment the encoded id is split into. Filesystem-backed S3 servers store each
 * segment as a file name, and file systems cap those at 255 bytes.
 */
const MAX_SEGMENT = 200;

/**
 * The encoded id as one or more path segments. Every segment but the last ends with `~`, a
 * character the encoding never produces, so no id's segments are a prefix of another id's.
 */
function idPath(aggregateId: string): string {
  const encoded = encodeKeySegment(aggregateId);
  const parts: string[] = [];
  for (let i = 0; i < encoded.length; i += MAX_SEGMENT) parts.push(encoded.slice(i, i + MAX_SEGMENT));
  return parts.map((p, i) => (i < parts.length - 1 ? `${p}~` : p)).join("/");
}

/** The key prefix that holds one stream's slots and nothing else (ends with `/`). */
export function streamPrefix(aggregateType: string, aggregateId: string): string {
  return `streams/${encodeKeySegment(aggregateType)}/${idPath(aggregateId)}/`;
}

/** Splits a slot key made by {@link slotKey} back into aggregate type, id and seq. */
export function parseSlotKey(key: string): { aggregateType: string; aggregateId: string; seq: number } | undefined {
  const parts = key.split("/");
  if (parts.length < 4 || parts[0] !== "streams") return undefined;
  const seq = seqOfSlotKey(key);
  if (seq === undefined) return undefined;
  const idParts = parts.slice(2, -1).map((p, i, all) => (i < all.length - 1 ? p.slice(0, -1) : p));
  return { aggregateType: decodeKeySegment(parts[1]!), aggregateId: decodeKeySegment(idParts.join("")), seq };
}

/** The key of one sequence slot: the sequence number as 20 digits, so keys sort by number. */
export function slotKey(aggregateType: string, aggregateId: string, seq: number): string {
  return `${streamPrefix(aggregateType, aggregateId)}${String(seq).padStart(20, "0")}.json`;
}

/** The sequence number of a slot key produced by {@link slotKey}, or undefined. */
export function seqOfSlotKey(key: string): number | undefined {
  const match = /\/(\d{20})\.json$/.exec(key);
  return match?.[1] === undefined ? undefined : Number(match[1]);
}

/**
 * Identifier rules (docs/CONTRACT.md A2), and the injective encoding of an id into one S3 key
 * segment (dead letters' keys; events live in numbered segments, docs/STORAGE.md).
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
const HANDLER_NAME = /^[A-Za-z][A-Za-z0-9_.:-]{0,127}$/;
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

/**
 * Returns the reason a consumer handler's name (its registry key and consumer group suffix) is
 * invalid, or undefined: letters, digits, `_ . : -`, starting with a letter, at most 128 characters.
 */
export function checkHandlerName(value: string): string | undefined {
  if (value.length === 0) return "is required";
  return HANDLER_NAME.test(value) ? undefined : "must match [A-Za-z][A-Za-z0-9_.:-]* and be at most 128 characters";
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

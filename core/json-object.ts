/**
 * JSON objects exactly as a client sent them. A plain assignment `obj[key] = value` with the key
 * `__proto__` changes the object's prototype instead of adding a key, so every place that builds a
 * JSON object from user keys goes through {@link setOwn}; and every check a stored value must pass
 * (finite numbers, depth, size) lives here, so a value that passes can be encoded exactly as sent.
 */
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";

/** Sets `key` as an own, enumerable property, also when the key is `__proto__`. */
export function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  if (key === "__proto__") {
    Object.defineProperty(target, key, { value, writable: true, enumerable: true, configurable: true });
  } else {
    target[key] = value;
  }
}

/** The own property `key` of `target`, never one inherited from Object.prototype. */
export function getOwn(target: JsonObject, key: string): JsonValue | undefined {
  return Object.hasOwn(target, key) ? target[key] : undefined;
}

/** True for a JSON object (not null, not an array). */
export function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** What {@link checkJsonValue} enforces. */
export interface JsonRules {
  /** Deepest nesting of objects and arrays. */
  readonly maxDepth: number;
  /** Largest size as JSON, in UTF-8 bytes. */
  readonly maxBytes: number;
  /** Refuse U+0000 in keys and strings (PostgreSQL's jsonb cannot hold it). */
  readonly refuseNul?: boolean;
}

/** A problem found in a JSON value: where (a JSON path below the field) and why. */
export interface JsonProblem {
  /** `""` for the value itself, else `.key`, `["odd key"]` or `[3]` steps. */
  readonly at: string;
  readonly reason: string;
}

/**
 * The first reason `value` cannot be stored exactly as sent, or undefined: nesting deeper than
 * `maxDepth`, a number that has no JSON form (NaN, ±Infinity: binary protobuf can carry them, JSON
 * cannot), U+0000 when refused, or more than `maxBytes` as JSON. Returns the encoded JSON on success
 * so callers need not encode twice.
 */
export function checkJsonValue(value: JsonObject, rules: JsonRules): { problem: JsonProblem } | { json: string } {
  const problem = walk(value, rules, 0, "");
  if (problem !== undefined) return { problem };
  const json = JSON.stringify(value);
  const bytes = Buffer.byteLength(json, "utf8");
  if (bytes > rules.maxBytes) return { problem: { at: "", reason: `must be at most ${rules.maxBytes} bytes as JSON, got ${bytes}` } };
  return { json };
}

function walk(value: JsonValue, rules: JsonRules, depth: number, at: string): JsonProblem | undefined {
  switch (typeof value) {
    case "number":
      return Number.isFinite(value) ? undefined : { at, reason: `must be a finite number, got ${value} (NaN and Infinity have no JSON form)` };
    case "string":
      return rules.refuseNul === true && value.includes("\u0000") ? { at, reason: "must not contain U+0000" } : undefined;
    case "boolean":
      return undefined;
    case "object": {
      if (value === null) return undefined;
      // Reported at the field itself: the path to the cut-off would be as deep as the limit.
      if (depth >= rules.maxDepth) return { at: "", reason: `must nest at most ${rules.maxDepth} levels deep` };
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) {
          const problem = walk(value[i]!, rules, depth + 1, `${at}[${i}]`);
          if (problem !== undefined) return problem;
        }
        return undefined;
      }
      for (const key of Object.keys(value)) {
        const step = jsonPathStep(key);
        if (rules.refuseNul === true && key.includes("\u0000")) return { at: `${at}${step}`, reason: "key must not contain U+0000" };
        const problem = walk(value[key]!, rules, depth + 1, `${at}${step}`);
        if (problem !== undefined) return problem;
      }
      return undefined;
    }
    default:
      return { at, reason: `is not a JSON value (${typeof value})` };
  }
}

/** One step of a readable JSON path: `.name` for plain keys, `["..."]` (shortened) otherwise. */
export function jsonPathStep(key: string): string {
  if (/^[A-Za-z_][A-Za-z0-9_]{0,63}$/.test(key)) return `.${key}`;
  const shown = key.length > 40 ? `${key.slice(0, 40)}…` : key;
  return `[${JSON.stringify(shown)}]`;
}

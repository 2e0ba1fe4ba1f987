import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { getOwn, isJsonObject, setOwn } from "../json-object.js";

/**
 * Applies a JSON merge patch (RFC 7386) to an object: null removes a key, objects merge, anything
 * else replaces. Every key is an own property of the result, `__proto__` included.
 */
export function mergePatch(target: JsonObject, patch: JsonObject): JsonObject {
  const out: JsonObject = { ...target };
  for (const key of Object.keys(patch)) {
    const value: JsonValue = patch[key]!;
    if (value === null) {
      delete out[key];
    } else if (isJsonObject(value)) {
      const current = getOwn(out, key);
      setOwn(out, key, mergePatch(isJsonObject(current) ? current : {}, value));
    } else {
      setOwn(out, key, value);
    }
  }
  return out;
}

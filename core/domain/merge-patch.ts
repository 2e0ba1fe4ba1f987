import type { JsonObject, JsonValue } from "@bufbuild/protobuf";

/** Applies a JSON merge patch (RFC 7386) to an object: null removes a key, objects merge, anything else replaces. */
export function mergePatch(target: JsonObject, patch: JsonObject): JsonObject {
  const out: JsonObject = { ...target };
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) {
      delete out[key];
    } else if (isObject(value)) {
      const current = out[key];
      out[key] = mergePatch(isObject(current) ? current : {}, value);
    } else {
      out[key] = value;
    }
  }
  return out;
}

function isObject(value: JsonValue | undefined): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

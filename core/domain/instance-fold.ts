/**
 * Where an instance's fold starts: from nothing or from a snapshot (docs/STORAGE.md "Snapshots").
 * Pure: a snapshot is the state after its seq, encoded as plain JSON; {@link foldInstanceFrom}
 * continues from it with the events after that seq. Changing what the fold computes means bumping
 * {@link INSTANCE_FOLD_VERSION}, so snapshots taken by the old fold are never read again.
 */
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { evolveInstance, INITIAL_INSTANCE_STATE, type InstanceEvent, type InstanceState } from "./instance.js";

/**
 * The schema version of the instance fold (`evolveInstance` and the state it builds). Bump it with
 * every change of either: a snapshot records the version that took it and is ignored by any other.
 */
export const INSTANCE_FOLD_VERSION = 1;

/** An instance's state after every event up to `seq`, as a snapshot holds it. */
export interface InstanceSnapshot {
  readonly seq: number;
  readonly state: InstanceState;
}

/**
 * Folds `events` (in seq order) onto the snapshot's state, or onto the empty state without one.
 * Events at or below the snapshot's seq are already in it and skipped, so a caller may hand over
 * more than the tail.
 */
export function foldInstanceFrom(snapshot: InstanceSnapshot | undefined, events: Iterable<InstanceEvent>): InstanceState {
  let state = snapshot?.state ?? INITIAL_INSTANCE_STATE;
  const after = snapshot?.seq ?? 0;
  for (const event of events) if (event.seq > after) state = evolveInstance(state, event);
  return state;
}

/** The state as snapshot JSON (dates as ISO strings); the inverse of {@link decodeInstanceState}. */
export function encodeInstanceState(state: InstanceState): string {
  if (!state.exists) return JSON.stringify({ exists: false });
  return JSON.stringify({
    exists: true,
    deleted: state.deleted,
    properties: state.properties,
    version: state.version,
    globalPosition: state.globalPosition,
    createdAt: state.createdAt.toISOString(),
    updatedAt: state.updatedAt.toISOString(),
  });
}

/**
 * The state a snapshot's JSON holds, or undefined when the text is not one (bad JSON, a missing or
 * mistyped field): the caller then folds the whole stream, never guesses.
 */
export function decodeInstanceState(json: string): InstanceState | undefined {
  let value: JsonValue;
  try {
    value = JSON.parse(json) as JsonValue;
  } catch {
    return undefined;
  }
  if (!isObject(value)) return undefined;
  if (value["exists"] === false) return INITIAL_INSTANCE_STATE;
  if (value["exists"] !== true) return undefined;
  const { deleted, properties, version, globalPosition } = value;
  const createdAt = dateOf(value["createdAt"]);
  const updatedAt = dateOf(value["updatedAt"]);
  if (typeof deleted !== "boolean" || !isObject(properties) || !isCount(version) || !isCount(globalPosition)) return undefined;
  if (createdAt === undefined || updatedAt === undefined) return undefined;
  return { exists: true, deleted, properties, version, globalPosition, createdAt, updatedAt };
}

function isObject(value: JsonValue | undefined): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isCount(value: JsonValue | undefined): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

function dateOf(value: JsonValue | undefined): Date | undefined {
  if (typeof value !== "string") return undefined;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? undefined : date;
}

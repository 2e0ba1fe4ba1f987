/**
 * The instance domain as pure functions: fold a stream into state, decide a command into an event
 * or an error. Time and ids arrive as arguments; no I/O here.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { NotFoundError, PreconditionError } from "../errors.js";
import { mergePatch } from "./merge-patch.js";

/** Aggregate type of instances. */
export const INSTANCE_AGGREGATE_TYPE = "Instance";

/** Event types of the instance stream. */
export const InstanceEventType = Object.freeze({
  created: "InstanceCreated",
  updated: "InstanceUpdated",
  deleted: "InstanceDeleted",
});

/** The part of a stored event the fold needs. */
export interface InstanceEvent {
  readonly eventType: string;
  readonly seq: number;
  readonly globalPosition: number;
  readonly occurredAt: Date;
  readonly data: JsonObject;
}

/** An instance's state after its events, or absent before the first. */
export type InstanceState =
  | { readonly exists: false }
  | {
      readonly exists: true;
      readonly deleted: boolean;
      readonly properties: JsonObject;
      readonly version: number;
      readonly globalPosition: number;
      readonly createdAt: Date;
      readonly updatedAt: Date;
    };

/** A command the server decides. */
export type InstanceCommand =
  | { readonly type: "create"; readonly properties: JsonObject }
  | { readonly type: "update"; readonly patch: JsonObject }
  | { readonly type: "delete" };

/** The event a command produces: type and data (the envelope is built by the caller). */
export interface DecidedEvent {
  readonly eventType: string;
  readonly data: JsonObject;
}

/** The empty state. */
export const INITIAL_INSTANCE_STATE: InstanceState = Object.freeze({ exists: false });

/** Applies one event to the state. Unknown event types only advance the version. */
export function evolveInstance(state: InstanceState, event: InstanceEvent): InstanceState {
  switch (event.eventType) {
    case InstanceEventType.created:
      return {
        exists: true,
        deleted: false,
        properties: objectField(event.data, "properties"),
        version: event.seq,
        globalPosition: event.globalPosition,
        createdAt: event.occurredAt,
        updatedAt: event.occurredAt,
      };
    case InstanceEventType.updated:
      if (!state.exists) return state;
      return {
        ...state,
        properties: mergePatch(state.properties, objectField(event.data, "patch")),
        version: event.seq,
        globalPosition: event.globalPosition,
        updatedAt: event.occurredAt,
      };
    case InstanceEventType.deleted:
      if (!state.exists) return state;
      return { ...state, deleted: true, version: event.seq, globalPosition: event.globalPosition, updatedAt: event.occurredAt };
    default:
      return state.exists ? { ...state, version: event.seq, globalPosition: event.globalPosition } : state;
  }
}

/** Folds a whole stream. */
export function foldInstance(events: Iterable<InstanceEvent>): InstanceState {
  let state = INITIAL_INSTANCE_STATE;
  for (const event of events) state = evolveInstance(state, event);
  return state;
}

/**
 * Decides a command against the current state. Creating an existing instance is left to the
 * append's concurrency check (expected_seq 0), so the client gets ABORTED with the actual head.
 */
export function decideInstance(state: InstanceState, command: InstanceCommand): DecidedEvent {
  if (command.type !== "create") requireLive(state);
  return instanceEventOf(command);
}

/**
 * The event a command produces when it is accepted. Depends on the command alone, so a retried
 * command rebuilds exactly the event its first attempt appended (same content hash).
 */
export function instanceEventOf(command: InstanceCommand): DecidedEvent {
  switch (command.type) {
    case "create":
      return { eventType: InstanceEventType.created, data: { properties: command.properties } };
    case "update":
      return { eventType: InstanceEventType.updated, data: { patch: command.patch } };
    case "delete":
      return { eventType: InstanceEventType.deleted, data: {} };
  }
}

function requireLive(state: InstanceState): void {
  if (!state.exists) throw new NotFoundError("instance does not exist");
  if (state.deleted) throw new PreconditionError("instance is deleted");
}

function objectField(data: JsonObject, key: string): JsonObject {
  const value = data[key];
  return typeof value === "object" && value !== null && !Array.isArray(value) ? value : {};
}

/**
 * An instance as the instances read model holds it: the row the projection (consumers/) writes and
 * the server's EVENTUAL and AT_LEAST_POSITION reads return.
 */
export interface ReadModelInstance {
  readonly database: string;
  readonly className: string;
  readonly instanceId: string;
  readonly properties: JsonObject;
  readonly version: number;
  readonly deleted: boolean;
  readonly createdAt: Date;
  readonly updatedAt: Date;
  readonly globalPosition: number;
}

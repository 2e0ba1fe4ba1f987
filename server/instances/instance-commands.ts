/**
 * Instance commands end to end: validate, derive the event id from command_id (so a retry is the
 * same append, W4), fold the stream from its latest snapshot, decide with the pure domain
 * functions, append. The fold's start is one query (head, snapshot, the slots after it, the
 * command's event id), so a command costs that query, the tail's events (usually cached) and the
 * append, whatever the stream's length (docs/STORAGE.md "Snapshots").
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { v5 as uuidv5 } from "uuid";
import {
  checkEventId,
  checkInstanceId,
  checkInstancePart,
  ConcurrencyError,
  contentHash,
  decideInstance,
  EventKind,
  type Expectation,
  IdempotencyError,
  INSTANCE_AGGREGATE_TYPE,
  instanceAggregateId,
  type InstanceCommand,
  type InstanceState,
  instanceEventOf,
  kindLabel,
  type Logger,
  NotFoundError,
  PreconditionError,
  Upcasters,
  Violations,
  type WriteSideTables,
} from "../../core/index.js";
import type { Kysely } from "kysely";
import type { EventStore, ProposedEventInput } from "../event-store.js";
import type { Limits } from "../limits.js";
import { InstanceFolder, type SnapshotSettings } from "./instance-folder.js";
import { checkActor, checkJson, checkMetadata, checkSeq, SERVER_METADATA_KEYS } from "../validation.js";

/** Metadata keys an instance command sets itself: the request's command_id, and the kind. */
const INSTANCE_METADATA_KEYS: ReadonlySet<string> = new Set([...SERVER_METADATA_KEYS, "kind"]);

/** Namespace of event ids derived from command ids (UUIDv5). */
export const COMMAND_EVENT_NAMESPACE = "6f1d7c1e-4c39-5b8e-9a55-2f1f0d1e7a10";

/** The address of an instance. */
export interface InstanceAddress {
  readonly database: string;
  readonly className: string;
  readonly instanceId: string;
}

/** A validated command with its envelope inputs. */
export interface InstanceCommandInput {
  readonly address: InstanceAddress;
  readonly command: InstanceCommand;
  /** Required for update and delete; 0 for create. */
  readonly expectedSeq: number;
  readonly commandId: string;
  readonly actor: string;
  readonly metadata: Readonly<Record<string, string>>;
}

/** The outcome of a command. */
export interface CommandOutcome {
  readonly eventId: string;
  readonly seq: number;
  readonly position: number;
  readonly replayed: boolean;
}

/** An instance as read. */
export interface InstanceView {
  readonly address: InstanceAddress;
  readonly state: Extract<InstanceState, { exists: true }>;
  readonly version: number;
}

/** Raw command fields as they arrive over gRPC. */
export interface RawInstanceCommand {
  readonly database: string;
  readonly className: string;
  readonly instanceId: string;
  readonly properties?: JsonObject | undefined;
  readonly expectedSeq?: bigint | undefined;
  readonly commandId: string;
  readonly actor: string;
  readonly metadata: Readonly<Record<string, string>>;
}

/** Validates the address fields; adds violations to `v`. */
export function checkAddress(v: Violations, raw: { database: string; className: string; instanceId: string }): InstanceAddress {
  v.add("database", checkInstancePart(raw.database));
  v.add("class_name", checkInstancePart(raw.className));
  v.add("instance_id", checkInstanceId(raw.instanceId));
  return { database: raw.database, className: raw.className, instanceId: raw.instanceId };
}

/** Validates a raw command of the given type; throws ValidationError naming every bad field. */
export function validateInstanceCommand(type: InstanceCommand["type"], raw: RawInstanceCommand, limits: Limits): InstanceCommandInput {
  const v = new Violations();
  const address = checkAddress(v, raw);
  v.add("command_id", checkEventId(raw.commandId) === undefined ? undefined : `${checkEventId(raw.commandId)} (a client-chosen id that makes retries safe)`);
  v.add("actor", checkActor(raw.actor));
  v.add("metadata", checkMetadata(raw.metadata, limits, INSTANCE_METADATA_KEYS));
  const properties = raw.properties ?? {};
  // The read model keeps properties in PostgreSQL jsonb, which cannot hold U+0000.
  if (type !== "delete") checkJson(v, "properties", properties, limits, true);
  let expectedSeq = 0;
  if (type === "create") {
    if (raw.expectedSeq !== undefined && raw.expectedSeq !== 0n) v.add("expected_seq", "must be 0 or unset for create");
  } else if (raw.expectedSeq === undefined) {
    v.add("expected_seq", `is required for ${type}: the version the command was decided against`);
  } else {
    v.add("expected_seq", checkSeq(raw.expectedSeq));
    expectedSeq = Number(raw.expectedSeq);
  }
  v.throwIfAny();
  const command: InstanceCommand =
    type === "create" ? { type, properties } : type === "update" ? { type, patch: properties } : { type };
  return { address, command, expectedSeq, commandId: raw.commandId, actor: raw.actor, metadata: raw.metadata };
}

/** Runs instance commands and reads over the event store. */
export class InstanceCommands {
  private readonly folder: InstanceFolder;

  constructor(
    private readonly store: EventStore,
    db: Kysely<WriteSideTables>,
    snapshots: Partial<SnapshotSettings> = {},
    log?: Logger,
    upcasters: Upcasters = Upcasters.NONE,
  ) {
    this.folder = new InstanceFolder({ db, load: (rows) => store.loadAll(rows), snapshots, upcasters, ...(log === undefined ? {} : { log }) });
  }

  /** Decides and appends one command; a retry with the same command_id returns the original result. */
  async execute(input: InstanceCommandInput, traceparent?: string): Promise<CommandOutcome> {
    const aggregateId = instanceAggregateId(input.address.database, input.address.className, input.address.instanceId);
    const eventId = uuidv5(`${input.command.type}\n${aggregateId}\n${input.commandId}`, COMMAND_EVENT_NAMESPACE);
    const metadata: Record<string, string> = { ...input.metadata, command_id: input.commandId, kind: kindLabel(EventKind.DOMAIN) };
    if (traceparent !== undefined && metadata["traceparent"] === undefined) metadata["traceparent"] = traceparent;

    // A retry of a command that already landed must not be judged against today's state; the
    // event id is looked up in the same query that starts the fold.
    const { state, version, existing: previous } = await this.folder.fold(aggregateId, eventId);
    let decided;
    let expectation: Expectation = { type: "any" };
    if (previous === undefined) {
      // Deletion is final: the id keeps its history and is never reused (docs/CONTRACT.md, Instances).
      if (input.command.type === "create" && state.exists && state.deleted) {
        throw new PreconditionError(`instance ${aggregateId} was deleted; the id of a deleted instance is not reused`);
      }
      // Create expects "no instance yet"; a stream holding only void slots still counts as none.
      const expected = input.command.type === "create" && !state.exists ? version : input.expectedSeq;
      if (version !== expected) throw new ConcurrencyError(INSTANCE_AGGREGATE_TYPE, aggregateId, input.expectedSeq, version);
      decided = decideInstance(state, input.command);
      expectation = { type: "exact", seq: expected };
    } else {
      // Same command again: rebuild the event it produced, not a new decision on today's state.
      decided = instanceEventOf(input.command);
    }
    const event: ProposedEventInput = {
      eventId,
      eventType: decided.eventType,
      data: decided.data,
      metadata,
      schemaVersion: 1,
      kind: EventKind.DOMAIN,
      contentHash: contentHash({
        eventType: decided.eventType,
        aggregateType: INSTANCE_AGGREGATE_TYPE,
        aggregateId,
        data: decided.data,
        metadata,
        schemaVersion: 1,
        kind: EventKind.DOMAIN,
      }),
    };
    if (previous !== undefined && previous.contentHash !== event.contentHash) {
      throw new IdempotencyError(eventId, previous.contentHash, event.contentHash, `(command_id ${input.commandId}) was used before for another command`);
    }
    const out = await this.store.append({
      aggregateType: INSTANCE_AGGREGATE_TYPE,
      aggregateId,
      expectation,
      events: [event],
      actor: input.actor,
    });
    const appended = out.events[0]!;
    return { eventId, seq: appended.seq, position: appended.position, replayed: out.replayed };
  }

  /** The instance folded from its stream; NotFoundError when it was never created. */
  async get(address: InstanceAddress): Promise<InstanceView> {
    const aggregateId = instanceAggregateId(address.database, address.className, address.instanceId);
    const { state, version } = await this.folder.fold(aggregateId);
    if (!state.exists) throw new NotFoundError(`instance ${aggregateId} does not exist`);
    return { address, state, version };
  }
}

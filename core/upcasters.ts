/**
 * Schema evolution on read (docs/CONTRACT.md E1–E3): an upcaster turns the data of one event type
 * at one `schema_version` into the next version's shape. Readers — the instance fold, ReadStream and
 * Subscribe asked for the latest schema, a handler's decode step — chain them up to the latest
 * version they know; the stored event never changes. A version a reader cannot bring up to date
 * is an {@link UpcastError}, never an event passed on in a shape the reader does not expect.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import type { EventEnvelope } from "../gen/tidemark/v1/envelope_pb.js";
import { PreconditionError } from "./errors.js";
import { checkEventType } from "./ids.js";
import { isJsonObject } from "./json-object.js";
import { isErased } from "./privacy.js";

/** What an upcaster is told about the event besides its data (read-only). */
export interface UpcastContext {
  readonly eventType: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly seq: number;
  /** The version of the data handed to this upcaster. */
  readonly schemaVersion: number;
  readonly metadata: Readonly<Record<string, string>>;
}

/**
 * Turns `eventType` data of `schema_version` `fromVersion` into version `fromVersion + 1`. `upcast`
 * gets a private copy of the data (it may change and return it) and must be a pure function of its
 * arguments: readers run it on every read, and a consumer dead-letters the event when it throws.
 */
export interface Upcaster {
  readonly eventType: string;
  readonly fromVersion: number;
  upcast(data: JsonObject, context: UpcastContext): JsonObject;
}

/** Reading an event needs an upcaster that is not registered, or one failed: FAILED_PRECONDITION. */
export class UpcastError extends PreconditionError {
  constructor(
    message: string,
    readonly eventType: string,
    readonly schemaVersion: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** True for an {@link UpcastError} (by shape, so it works across module copies). */
export function isUpcastError(e: unknown): e is UpcastError {
  return e instanceof Error && e.name === "UpcastError" && typeof (e as { schemaVersion?: unknown }).schemaVersion === "number";
}

/** Checks one upcaster's shape; throws naming what is wrong. `defineUpcaster({ eventType, fromVersion, upcast })`. */
export function defineUpcaster(upcaster: Upcaster): Upcaster {
  const what = `upcaster ${JSON.stringify(upcaster.eventType)} v${String(upcaster.fromVersion)}`;
  const typeProblem = typeof upcaster.eventType === "string" ? checkEventType(upcaster.eventType) : "must be a string";
  if (typeProblem !== undefined) throw new Error(`${what}: eventType ${typeProblem}`);
  if (!Number.isInteger(upcaster.fromVersion) || upcaster.fromVersion < 1 || upcaster.fromVersion >= 2 ** 32 - 1) {
    throw new Error(`${what}: fromVersion must be an integer from 1 to 2^32-2`);
  }
  if (typeof upcaster.upcast !== "function") throw new Error(`${what}: upcast must be a function`);
  return Object.freeze({ eventType: upcaster.eventType, fromVersion: upcaster.fromVersion, upcast: upcaster.upcast });
}

/** The result of {@link Upcasters.upcast}: the data in the latest shape and its version. */
export interface Upcasted {
  readonly data: JsonObject;
  readonly schemaVersion: number;
}

/**
 * The upcasters of one reader, keyed by `(event_type, schema_version)`. An event type's latest
 * version is one above its highest `fromVersion`; types without upcasters are read as stored.
 */
export class Upcasters {
  /** No upcasters: every event is read as stored. */
  static readonly NONE = new Upcasters([]);

  private readonly steps = new Map<string, Map<number, Upcaster>>();
  private readonly latest = new Map<string, number>();

  /** Throws when an upcaster is malformed or two share `(eventType, fromVersion)`. */
  constructor(upcasters: readonly Upcaster[]) {
    for (const given of upcasters) {
      const upcaster = defineUpcaster(given);
      const byVersion = this.steps.get(upcaster.eventType) ?? new Map<number, Upcaster>();
      if (byVersion.has(upcaster.fromVersion)) throw new Error(`two upcasters for (${upcaster.eventType}, ${upcaster.fromVersion})`);
      byVersion.set(upcaster.fromVersion, upcaster);
      this.steps.set(upcaster.eventType, byVersion);
      this.latest.set(upcaster.eventType, Math.max(this.latest.get(upcaster.eventType) ?? 0, upcaster.fromVersion + 1));
    }
  }

  /** Upcasters registered. */
  get size(): number {
    let n = 0;
    for (const byVersion of this.steps.values()) n += byVersion.size;
    return n;
  }

  /** The latest version of `eventType` these upcasters produce, or undefined when they have none for it. */
  latestVersion(eventType: string): number | undefined {
    return this.latest.get(eventType);
  }

  /**
   * The data of an event brought to its type's latest version, one upcaster after another
   * (v1 → v2 → v3). `data` itself is not changed. Throws {@link UpcastError} when a step is missing,
   * when the event is newer than the latest version known (a reader cannot read the future), or
   * when an upcaster throws or returns something other than a JSON object.
   */
  upcast(data: JsonObject, context: UpcastContext): Upcasted {
    const latest = this.latest.get(context.eventType);
    // Version 0 is proto3's "unset": the server stores 1 for it (server/validation.ts).
    const stored = context.schemaVersion === 0 ? 1 : context.schemaVersion;
    if (latest === undefined || stored === latest) return { data, schemaVersion: stored };
    const type = context.eventType;
    if (stored > latest) {
      throw new UpcastError(`${type} schema_version ${stored} is newer than this reader's latest (${latest}): upgrade the reader's upcasters`, type, stored);
    }
    const steps = this.steps.get(type)!;
    // A copy, so no upcaster can change the stored event (the server's cache shares it with every read).
    let current = JSON.parse(JSON.stringify(data)) as JsonObject;
    for (let version = stored; version < latest; version += 1) {
      const step = steps.get(version);
      if (step === undefined) {
        throw new UpcastError(`no upcaster for (${type}, ${version}): ${type} is read at schema_version ${latest}, and nothing brings version ${version} there`, type, version);
      }
      let next: unknown;
      try {
        next = step.upcast(current, { ...context, schemaVersion: version });
      } catch (e) {
        throw new UpcastError(`the upcaster (${type}, ${version}) failed: ${(e as Error).message}`, type, version, { cause: e });
      }
      if (!isJsonObject(next)) throw new UpcastError(`the upcaster (${type}, ${version}) returned ${next === null ? "null" : typeof next}, not a JSON object`, type, version);
      current = next;
    }
    return { data: current, schemaVersion: latest };
  }

  /**
   * The envelope with its data in the latest shape and `schema_version` set to it; the same object
   * when there is nothing to do — also for the erasure marker (T5), which is no data of its type:
   * open an envelope before upcasting it. Every other field — `content_hash` and `previous_hash`
   * included — is the stored event's.
   */
  upcastEnvelope(envelope: EventEnvelope): EventEnvelope {
    if (!this.latest.has(envelope.eventType) || isErased(envelope)) return envelope;
    const { data, schemaVersion } = this.upcast(envelope.data ?? {}, {
      eventType: envelope.eventType,
      aggregateType: envelope.aggregateType,
      aggregateId: envelope.aggregateId,
      seq: Number(envelope.sequenceNumber),
      schemaVersion: envelope.schemaVersion,
      metadata: envelope.metadata,
    });
    if (schemaVersion === envelope.schemaVersion && data === envelope.data) return envelope;
    return { ...envelope, data, schemaVersion };
  }
}

/**
 * The upcasters a module exports — `export const upcasters = [...]`, or a default export of the list
 * — for TIDEMARK_UPCASTERS and handler modules. Throws naming what is wrong; an empty list when the
 * module exports none and `required` is false.
 */
export function upcastersOfModule(mod: Record<string, unknown>, required: boolean): Upcaster[] {
  const exported = mod["upcasters"] ?? (Array.isArray(mod["default"]) ? mod["default"] : undefined);
  if (exported === undefined) {
    if (required) throw new Error("the module must export its upcasters: `export const upcasters = [{ eventType, fromVersion, upcast }]`");
    return [];
  }
  if (!Array.isArray(exported)) throw new Error("`upcasters` must be a list of { eventType, fromVersion, upcast }");
  return exported.map((u) => defineUpcaster(u as Upcaster));
}

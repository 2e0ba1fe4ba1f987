/**
 * Protobuf binary encoding for the gRPC wire that loses nothing a client sent and explains every
 * refusal. On top of protobuf-es it (1) keeps a leading U+FEFF in strings (the WHATWG decoder drops
 * it by default, which made `"\ufeffx"` and `"x"` one id), (2) checks the wire format field by field
 * first — wire types, lengths, UTF-8, nesting, enum values — so a malformed request is refused with
 * the field named instead of failing inside the decoder or being misread, and (3) decodes and
 * encodes `google.protobuf.Struct` values itself, so keys such as `__proto__` survive (protobuf-es
 * builds JSON objects by assignment, which turns that key into a prototype change).
 */
import {
  fromBinary,
  ScalarType,
  toBinary,
  type DescEnum,
  type DescField,
  type DescMessage,
  type JsonObject,
  type JsonValue,
  type MessageShape,
} from "@bufbuild/protobuf";
import { BinaryReader, BinaryWriter, configureTextEncoding, WireType } from "@bufbuild/protobuf/wire";
import { jsonPathStep, setOwn } from "./json-object.js";

const lenient = new TextDecoder("utf-8", { ignoreBOM: true });
const strict = new TextDecoder("utf-8", { ignoreBOM: true, fatal: true });
const encoder = new TextEncoder();

/** Decodes UTF-8 keeping a leading byte order mark; `fatal` throws on invalid sequences. */
function decodeUtf8(bytes: Uint8Array, fatal?: boolean): string {
  return (fatal === true ? strict : lenient).decode(bytes);
}

// Every protobuf-es decoder in the process keeps a leading U+FEFF: a string is what was sent.
configureTextEncoding({
  encodeUtf8: (text) => encoder.encode(text),
  decodeUtf8,
  checkUtf8(text) {
    try {
      encodeURIComponent(text);
      return true;
    } catch {
      return false;
    }
  },
});

/** Deepest JSON nesting the decoder accepts; the configured data depth limit is checked later. */
export const MAX_STRUCT_DEPTH = 300;
/** Nesting of messages (other than Struct values) the decoder accepts. */
const MAX_MESSAGE_DEPTH = 64;

/** Bytes that are not a valid encoding of the expected message. `field` is a path like `events[0].data.x`. */
export class DecodeError extends Error {
  override name = "DecodeError";
  readonly field: string;
  constructor(
    field: string,
    readonly reason: string,
  ) {
    // Paths into deeply nested data are long; the first steps say where.
    const shown = field.length > 160 ? `${field.slice(0, 160)}…` : field;
    super(shown === "" ? reason : `${shown}: ${reason}`);
    this.field = shown;
  }
}

/** Options of {@link decodeBinary}. */
export interface DecodeOptions {
  /**
   * Refuse enum numbers the schema does not define (requests: an unknown value must not be read as
   * the default). Off for responses, so a client keeps working against a newer server.
   */
  readonly strictEnums?: boolean;
}

const STRUCT = "google.protobuf.Struct";

/**
 * Decodes `bytes` as `schema`, or throws DecodeError naming the offending field. Struct fields hold
 * exactly the keys and values that were sent; map entries with the key `__proto__` are kept as own
 * properties (so validation can see and refuse them).
 */
export function decodeBinary<D extends DescMessage>(schema: D, bytes: Uint8Array, options: DecodeOptions = {}): MessageShape<D> {
  const patches: Patch[] = [];
  const scan = new Scan(bytes, options.strictEnums === true, patches);
  scan.message(schema, bytes.length, "", 0, "");
  let message: MessageShape<D>;
  try {
    // The scan bounded the nesting, so the decoder's own recursion limit only has to admit it.
    message = fromBinary(schema, bytes, { recursionLimit: 2 * MAX_STRUCT_DEPTH + 2 * MAX_MESSAGE_DEPTH });
  } catch (e) {
    throw new DecodeError("", `not a valid ${schema.typeName}: ${(e as Error).message}`);
  }
  for (const patch of patches) applyPatch(message as unknown as Record<string, unknown>, patch);
  return message;
}

/**
 * Encodes `message` as `schema`. Struct fields anywhere in the message are written by this module,
 * key for key; everything else by protobuf-es.
 */
export function encodeBinary<D extends DescMessage>(schema: D, message: MessageShape<D>): Uint8Array {
  const plan = structPlan(schema);
  if (plan.length === 0) return toBinary(schema, message);
  const writer = new BinaryWriter();
  writeMessageWithStructs(writer, schema, message as unknown as Record<string, unknown>, plan);
  return writer.finish();
}

// ---------------------------------------------------------------------------------------------
// Encoding

/** Fields of `desc` that are a Struct or lead to one, computed once per message type. */
const plans = new WeakMap<DescMessage, DescField[]>();

function structPlan(desc: DescMessage, visiting = new Set<DescMessage>()): DescField[] {
  const known = plans.get(desc);
  if (known !== undefined) return known;
  if (visiting.has(desc)) return [];
  visiting.add(desc);
  const out: DescField[] = [];
  for (const field of desc.fields) {
    const target = field.fieldKind === "message" || (field.fieldKind === "list" && field.listKind === "message") ? field.message : undefined;
    if (target === undefined) continue;
    if (target.typeName === STRUCT || structPlan(target, visiting).length > 0) out.push(field);
  }
  visiting.delete(desc);
  plans.set(desc, out);
  return out;
}

function writeMessageWithStructs(writer: BinaryWriter, desc: DescMessage, message: Record<string, unknown>, plan: readonly DescField[]): void {
  // Everything but the Struct-bearing fields goes through protobuf-es; those follow, field by
  // field (field order on the wire is free, and repeated elements keep their order).
  const rest: Record<string, unknown> = { ...message };
  const values: Array<{ field: DescField; value: unknown }> = [];
  for (const field of plan) {
    if (field.oneof !== undefined) {
      const group = message[field.oneof.localName] as { case?: string; value?: unknown } | undefined;
      if (group?.case !== field.localName) continue;
      rest[field.oneof.localName] = { case: undefined };
      values.push({ field, value: group.value });
    } else {
      const value = message[field.localName];
      rest[field.localName] = field.fieldKind === "list" ? [] : undefined;
      if (value !== undefined) values.push({ field, value });
    }
  }
  writer.raw(toBinary(desc, rest as MessageShape<DescMessage>));
  for (const { field, value } of values) {
    const elements = field.fieldKind === "list" ? (value as unknown[]) : [value];
    for (const element of elements) {
      writer.tag(field.number, WireType.LengthDelimited).fork();
      if (field.message!.typeName === STRUCT) writeStruct(writer, element as JsonObject);
      else writeMessageWithStructs(writer, field.message!, element as Record<string, unknown>, structPlan(field.message!));
      writer.join();
    }
  }
}

function writeStruct(writer: BinaryWriter, json: JsonObject): void {
  for (const key of Object.keys(json)) {
    const value = json[key];
    if (value === undefined) continue;
    writer.tag(1, WireType.LengthDelimited).fork();
    writer.tag(1, WireType.LengthDelimited).string(key);
    writer.tag(2, WireType.LengthDelimited).fork();
    writeValue(writer, value);
    writer.join();
    writer.join();
  }
}

function writeValue(writer: BinaryWriter, value: JsonValue): void {
  switch (typeof value) {
    case "number":
      writer.tag(2, WireType.Bit64).double(value);
      return;
    case "string":
      writer.tag(3, WireType.LengthDelimited).string(value);
      return;
    case "boolean":
      writer.tag(4, WireType.Varint).bool(value);
      return;
    default:
      if (value === null) {
        writer.tag(1, WireType.Varint).int32(0);
      } else if (Array.isArray(value)) {
        writer.tag(6, WireType.LengthDelimited).fork();
        for (const element of value) {
          writer.tag(1, WireType.LengthDelimited).fork();
          writeValue(writer, element);
          writer.join();
        }
        writer.join();
      } else {
        writer.tag(5, WireType.LengthDelimited).fork();
        writeStruct(writer, value);
        writer.join();
      }
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding: a scan of the wire format that checks it and collects what protobuf-es would lose

/** One step from a message to a field value: a list index or a map key where the field has them. */
interface Step {
  readonly field: DescField;
  readonly index?: number;
  readonly key?: string;
}

/** A value to put in place after protobuf-es decoded the message. */
interface Patch {
  readonly path: readonly Step[];
  readonly value: unknown;
}

/** Expected wire type of one scalar. */
function scalarWireType(type: ScalarType): WireType {
  switch (type) {
    case ScalarType.DOUBLE:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return WireType.Bit64;
    case ScalarType.FLOAT:
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
      return WireType.Bit32;
    case ScalarType.STRING:
    case ScalarType.BYTES:
      return WireType.LengthDelimited;
    default:
      return WireType.Varint;
  }
}

const WIRE_NAMES: Record<number, string> = { 0: "varint", 1: "64-bit", 2: "length-delimited", 3: "start-group", 4: "end-group", 5: "32-bit" };

class Scan {
  private readonly reader: BinaryReader;
  /** Elements seen so far per repeated field, keyed by the container's path and field number. */
  private readonly counts = new Map<string, number>();
  /** Scan path (as a key) → the patch path it corresponds to. */
  private readonly paths = new Map<string, Step[]>();

  constructor(
    private readonly bytes: Uint8Array,
    private readonly strictEnums: boolean,
    private readonly patches: Patch[],
  ) {
    this.reader = new BinaryReader(bytes, decodeUtf8);
  }

  /** Scans one message ending at `end`; `at` names it in errors, `id` identifies it for counters. */
  message(desc: DescMessage, end: number, at: string, depth: number, id: string, steps: Step[] = []): void {
    if (depth > MAX_MESSAGE_DEPTH) throw new DecodeError(at, `nests more than ${MAX_MESSAGE_DEPTH} messages deep`);
    const r = this.reader;
    while (r.pos < end) {
      const [number, wireType] = this.tag(at);
      const field = desc.fields.find((f) => f.number === number);
      if (field === undefined) {
        this.guard(at, () => r.skip(wireType, number, 8));
        this.bounds(end, at);
        continue;
      }
      const name = at === "" ? field.name : `${at}.${field.name}`;
      switch (field.fieldKind) {
        case "scalar":
          this.expect(wireType, scalarWireType(field.scalar), name);
          this.scalar(field.scalar, name);
          break;
        case "enum":
          this.expect(wireType, WireType.Varint, name);
          this.enumValue(field, name);
          break;
        case "message": {
          this.expect(wireType, WireType.LengthDelimited, name);
          this.nested(field, name, depth, id, [...steps, { field }]);
          break;
        }
        case "list": {
          const key = `${id}/${number}`;
          if (field.listKind === "message") {
            this.expect(wireType, WireType.LengthDelimited, name);
            const index = this.next(key);
            this.nested(field, `${name}[${index}]`, depth, `${key}[${index}]`, [...steps, { field, index }]);
          } else {
            const type = field.listKind === "enum" ? ScalarType.INT32 : field.scalar!;
            const element = scalarWireType(type);
            if (wireType === WireType.LengthDelimited && element !== WireType.LengthDelimited) {
              const packedEnd = this.length(name);
              while (r.pos < packedEnd) {
                const index = this.next(key);
                if (field.listKind === "enum") this.enumValue(field, `${name}[${index}]`);
                else this.scalar(type, `${name}[${index}]`);
              }
              this.bounds(packedEnd, name);
            } else {
              this.expect(wireType, element, name);
              const index = this.next(key);
              if (field.listKind === "enum") this.enumValue(field, `${name}[${index}]`);
              else this.scalar(type, `${name}[${index}]`);
            }
          }
          break;
        }
        case "map":
          this.expect(wireType, WireType.LengthDelimited, name);
          this.mapEntry(field, name, depth, id, steps);
          break;
      }
      this.bounds(end, name);
    }
    if (r.pos !== end) throw new DecodeError(at, "is truncated");
  }

  private nested(field: DescField, name: string, depth: number, id: string, steps: Step[]): void {
    const end = this.length(name);
    const desc = field.message!;
    if (desc.typeName === STRUCT) {
      const json = this.struct(end, name, 1);
      const key = JSON.stringify(steps.map((s) => [s.field.number, s.index ?? s.key ?? null]));
      // A singular message field that occurs twice is merged; for a Struct that means its keys.
      const known = this.paths.get(key);
      if (known === undefined) {
        this.paths.set(key, steps);
        this.patches.push({ path: steps, value: json });
      } else {
        const patch = this.patches.find((p) => p.path === known)!;
        for (const k of Object.keys(json)) setOwn(patch.value as Record<string, unknown>, k, json[k]);
      }
    } else {
      this.message(desc, end, name, depth + 1, `${id}/${field.number}`, steps);
    }
    this.bounds(end, name);
  }

  private mapEntry(field: DescField & { fieldKind: "map" }, name: string, depth: number, id: string, steps: Step[]): void {
    const r = this.reader;
    const end = this.length(name);
    let key: unknown;
    let value: unknown;
    let valueBytes: Uint8Array | undefined;
    while (r.pos < end) {
      const [number, wireType] = this.tag(name);
      if (number === 1) {
        this.expect(wireType, scalarWireType(field.mapKey), `${name} key`);
        key = this.scalar(field.mapKey, `${name} key`);
      } else if (number === 2) {
        const at = key === undefined ? `${name} value` : `${name}[${JSON.stringify(String(key))}]`;
        if (field.mapKind === "message") {
          this.expect(wireType, WireType.LengthDelimited, at);
          const valueEnd = this.length(at);
          const bodyStart = r.pos;
          if (field.message.typeName === STRUCT) value = this.struct(valueEnd, at, 1);
          else this.message(field.message, valueEnd, at, depth + 1, `${id}/${field.number}{}`);
          valueBytes = this.bytes.subarray(bodyStart, valueEnd);
        } else if (field.mapKind === "enum") {
          this.expect(wireType, WireType.Varint, at);
          value = this.enumValue(field, at);
        } else {
          this.expect(wireType, scalarWireType(field.scalar), at);
          value = this.scalar(field.scalar, at);
        }
      } else {
        this.guard(name, () => r.skip(wireType, number, 8));
      }
      this.bounds(end, name);
    }
    if (r.pos !== end) throw new DecodeError(name, "map entry is truncated");
    const isStruct = field.mapKind === "message" && field.message.typeName === STRUCT;
    // protobuf-es stores maps in plain objects, where the key `__proto__` is lost, and builds Struct
    // values by assignment. (Maps of other messages that hold Structs are not patched: no Tidemark
    // message has one.)
    if (key !== "__proto__" && !isStruct) return;
    let kept = value;
    if (field.mapKind === "message" && !isStruct) {
      kept = decodeBinary(field.message, valueBytes ?? new Uint8Array(), { strictEnums: this.strictEnums });
    } else if (value === undefined) {
      kept = field.mapKind === "message" ? {} : field.mapKind === "enum" ? 0 : defaultScalar(field.scalar);
    }
    this.patches.push({ path: [...steps, { field, key: String(key ?? defaultScalar(field.mapKey)) }], value: kept });
  }

  /** Decodes a Struct body ending at `end`; `depth` is its JSON nesting level. */
  private struct(end: number, at: string, depth: number): JsonObject {
    if (depth > MAX_STRUCT_DEPTH) throw new DecodeError(at, `nests more than ${MAX_STRUCT_DEPTH} levels deep`);
    const r = this.reader;
    const out: JsonObject = {};
    while (r.pos < end) {
      const [number, wireType] = this.tag(at);
      if (number !== 1) {
        this.guard(at, () => r.skip(wireType, number, 8));
        this.bounds(end, at);
        continue;
      }
      this.expect(wireType, WireType.LengthDelimited, at);
      const entryEnd = this.length(at);
      let key = "";
      let value: JsonValue | undefined;
      while (r.pos < entryEnd) {
        const [n, w] = this.tag(at);
        if (n === 1) {
          this.expect(w, WireType.LengthDelimited, `${at} key`);
          key = this.string(`${at} key`);
        } else if (n === 2) {
          this.expect(w, WireType.LengthDelimited, `${at}${jsonPathStep(key)}`);
          const valueEnd = this.length(at);
          value = this.value(valueEnd, `${at}${jsonPathStep(key)}`, depth);
        } else {
          this.guard(at, () => r.skip(w, n, 8));
        }
        this.bounds(entryEnd, at);
      }
      if (r.pos !== entryEnd) throw new DecodeError(at, "is truncated");
      if (value === undefined) throw new DecodeError(`${at}${jsonPathStep(key)}`, "has no value (a google.protobuf.Value must set one kind)");
      setOwn(out, key, value);
      this.bounds(end, at);
    }
    return out;
  }

  private value(end: number, at: string, depth: number): JsonValue {
    const r = this.reader;
    let value: JsonValue | undefined;
    while (r.pos < end) {
      const [number, wireType] = this.tag(at);
      switch (number) {
        case 1:
          this.expect(wireType, WireType.Varint, at);
          this.guard(at, () => r.int32());
          value = null;
          break;
        case 2:
          this.expect(wireType, WireType.Bit64, at);
          value = this.guard(at, () => r.double());
          break;
        case 3:
          this.expect(wireType, WireType.LengthDelimited, at);
          value = this.string(at);
          break;
        case 4:
          this.expect(wireType, WireType.Varint, at);
          value = this.guard(at, () => r.bool());
          break;
        case 5: {
          this.expect(wireType, WireType.LengthDelimited, at);
          const structEnd = this.length(at);
          value = this.struct(structEnd, at, depth + 1);
          break;
        }
        case 6: {
          this.expect(wireType, WireType.LengthDelimited, at);
          const listEnd = this.length(at);
          value = this.list(listEnd, at, depth + 1);
          break;
        }
        default:
          this.guard(at, () => r.skip(wireType, number, 8));
      }
      this.bounds(end, at);
    }
    if (r.pos !== end) throw new DecodeError(at, "is truncated");
    if (value === undefined) throw new DecodeError(at, "has no value (a google.protobuf.Value must set one kind)");
    return value;
  }

  private list(end: number, at: string, depth: number): JsonValue[] {
    if (depth > MAX_STRUCT_DEPTH) throw new DecodeError(at, `nests more than ${MAX_STRUCT_DEPTH} levels deep`);
    const r = this.reader;
    const out: JsonValue[] = [];
    while (r.pos < end) {
      const [number, wireType] = this.tag(at);
      if (number !== 1) {
        this.guard(at, () => r.skip(wireType, number, 8));
      } else {
        this.expect(wireType, WireType.LengthDelimited, `${at}[${out.length}]`);
        const valueEnd = this.length(at);
        out.push(this.value(valueEnd, `${at}[${out.length}]`, depth));
      }
      this.bounds(end, at);
    }
    if (r.pos !== end) throw new DecodeError(at, "is truncated");
    return out;
  }

  private scalar(type: ScalarType, at: string): unknown {
    const r = this.reader;
    switch (type) {
      case ScalarType.STRING:
        return this.string(at);
      case ScalarType.BYTES:
        return this.guard(at, () => r.bytes());
      case ScalarType.DOUBLE:
        return this.guard(at, () => r.double());
      case ScalarType.FLOAT:
        return this.guard(at, () => r.float());
      case ScalarType.FIXED64:
        return this.guard(at, () => r.fixed64());
      case ScalarType.SFIXED64:
        return this.guard(at, () => r.sfixed64());
      case ScalarType.FIXED32:
        return this.guard(at, () => r.fixed32());
      case ScalarType.SFIXED32:
        return this.guard(at, () => r.sfixed32());
      case ScalarType.BOOL:
        return this.guard(at, () => r.bool());
      case ScalarType.INT64:
        return this.guard(at, () => r.int64());
      case ScalarType.UINT64:
        return this.guard(at, () => r.uint64());
      case ScalarType.SINT64:
        return this.guard(at, () => r.sint64());
      case ScalarType.SINT32:
        return this.guard(at, () => r.sint32());
      case ScalarType.UINT32:
        return this.guard(at, () => r.uint32());
      default:
        return this.guard(at, () => r.int32());
    }
  }

  private enumValue(field: DescField, at: string): number {
    const value = this.guard(at, () => this.reader.int32());
    const type = (field as { enum?: DescEnum }).enum;
    if (this.strictEnums && type !== undefined && !type.values.some((v) => v.number === value)) {
      throw new DecodeError(at, `unknown enum value ${value}`);
    }
    return value;
  }

  private string(at: string): string {
    const bytes = this.guard(at, () => this.reader.bytes());
    try {
      return decodeUtf8(bytes, true);
    } catch {
      throw new DecodeError(at, "is not valid UTF-8");
    }
  }

  private tag(at: string): [number, WireType] {
    return this.guard(at, () => this.reader.tag());
  }

  /** Reads a length prefix; returns where the delimited value ends. */
  private length(at: string): number {
    const r = this.reader;
    const length = this.guard(at, () => r.uint32());
    const end = r.pos + length;
    if (end > r.len) throw new DecodeError(at, "is truncated (length beyond the end of the message)");
    return end;
  }

  private expect(actual: WireType, expected: WireType, at: string): void {
    if (actual !== expected) throw new DecodeError(at, `has wire type ${WIRE_NAMES[actual]}, expected ${WIRE_NAMES[expected]}`);
  }

  private bounds(end: number, at: string): void {
    if (this.reader.pos > end) throw new DecodeError(at, "is truncated");
  }

  private next(key: string): number {
    const index = this.counts.get(key) ?? 0;
    this.counts.set(key, index + 1);
    return index;
  }

  private guard<T>(at: string, read: () => T): T {
    try {
      const value = read();
      if (this.reader.pos > this.reader.len) throw new RangeError("premature EOF");
      return value;
    } catch (e) {
      if (e instanceof DecodeError) throw e;
      throw new DecodeError(at, `is malformed (${(e as Error).message})`);
    }
  }
}

function defaultScalar(type: ScalarType): unknown {
  switch (type) {
    case ScalarType.STRING:
      return "";
    case ScalarType.BOOL:
      return false;
    case ScalarType.BYTES:
      return new Uint8Array();
    case ScalarType.INT64:
    case ScalarType.UINT64:
    case ScalarType.SINT64:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return 0n;
    default:
      return 0;
  }
}

/** Puts a patch's value in place; skipped when a later oneof member replaced the path. */
function applyPatch(root: Record<string, unknown>, patch: Patch): void {
  let container: Record<string, unknown> = root;
  const { path } = patch;
  for (let i = 0; i < path.length; i++) {
    const step = path[i]!;
    const last = i === path.length - 1;
    const field = step.field;
    if (field.oneof !== undefined) {
      const group = container[field.oneof.localName] as { case?: string; value?: unknown } | undefined;
      if (group?.case !== field.localName) return;
      if (last) {
        group.value = patch.value;
        return;
      }
      container = group.value as Record<string, unknown>;
      continue;
    }
    if (step.key !== undefined) {
      // A map whose `__proto__` entry was read by assignment may have had its prototype replaced.
      let map = container[field.localName] as Record<string, unknown>;
      if (Object.getPrototypeOf(map) !== Object.prototype) {
        const fresh: Record<string, unknown> = {};
        for (const k of Object.keys(map)) fresh[k] = map[k];
        container[field.localName] = fresh;
        map = fresh;
      }
      if (last) {
        setOwn(map, step.key, patch.value);
        return;
      }
      container = map[step.key] as Record<string, unknown>;
      continue;
    }
    if (step.index !== undefined) {
      const list = container[field.localName] as unknown[];
      if (last) {
        list[step.index] = patch.value;
        return;
      }
      container = list[step.index] as Record<string, unknown>;
      continue;
    }
    if (last) {
      container[field.localName] = patch.value;
      return;
    }
    container = container[field.localName] as Record<string, unknown>;
  }
}

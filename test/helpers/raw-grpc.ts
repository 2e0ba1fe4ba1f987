/**
 * Sends hand-made bytes to a gRPC method, as a client in another language (or a hostile one) can:
 * nothing of Tidemark's own encoding is involved. Plus a small protobuf writer for building those
 * bytes field by field, written apart from core/proto-binary.ts so the tests do not check the codec
 * with itself.
 */
import { grpc } from "../../server/grpc/client.js";

/** The outcome of a raw unary call. */
export interface RawOutcome {
  readonly code: grpc.status;
  readonly details: string;
  readonly error: grpc.ServiceError | undefined;
  readonly response: Buffer | undefined;
}

/** Calls `path` (`/package.Service/Method`) on `address` with `body` as the request bytes. */
export function rawUnary(address: string, path: string, body: Uint8Array): Promise<RawOutcome> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.from(body),
      new grpc.Metadata(),
      { deadline: Date.now() + 20_000 },
      (error: grpc.ServiceError | null, response?: Buffer) => {
        client.close();
        resolve({ code: error?.code ?? grpc.status.OK, details: error?.details ?? "", error: error ?? undefined, response });
      },
    );
  });
}

/** Calls a server-streaming `path` with `body`; collects the raw response messages or the error. */
export function rawStream(address: string, path: string, body: Uint8Array, limit = Number.POSITIVE_INFINITY): Promise<{ code: grpc.status; messages: Buffer[]; error: grpc.ServiceError | undefined }> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    const messages: Buffer[] = [];
    const call = client.makeServerStreamRequest(path, (b: Buffer) => b, (b: Buffer) => b, Buffer.from(body), new grpc.Metadata(), { deadline: Date.now() + 20_000 });
    let settled = false;
    const finish = (code: grpc.status, error?: grpc.ServiceError) => {
      if (settled) return;
      settled = true;
      client.close();
      resolve({ code, messages, error });
    };
    call.on("data", (m: Buffer) => {
      messages.push(m);
      if (messages.length >= limit) {
        call.cancel();
        finish(grpc.status.OK);
      }
    });
    call.on("error", (e: grpc.ServiceError) => finish(e.code, e));
    call.on("end", () => finish(grpc.status.OK));
  });
}

// ------------------------------------------------------------------------- a hand protobuf writer

/** Bytes of one varint. */
export function varint(value: number | bigint): number[] {
  let v = BigInt.asUintN(64, BigInt(value));
  const out: number[] = [];
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) byte |= 0x80;
    out.push(byte);
  } while (v > 0n);
  return out;
}

const tag = (field: number, wire: number) => varint((field << 3) | wire);

/** A length-delimited field holding `body`. */
export function lenField(field: number, body: Uint8Array | number[]): number[] {
  const bytes = [...body];
  return [...tag(field, 2), ...varint(bytes.length), ...bytes];
}

/** A string field (UTF-8). */
export function strField(field: number, text: string): number[] {
  return lenField(field, [...Buffer.from(text, "utf8")]);
}

/** A varint field. */
export function varintField(field: number, value: number | bigint): number[] {
  return [...tag(field, 0), ...varint(value)];
}

/** A double (64-bit) field. */
export function doubleField(field: number, value: number): number[] {
  const b = Buffer.alloc(8);
  b.writeDoubleLE(value);
  return [...tag(field, 1), ...b];
}

/** A JSON-ish value to encode as google.protobuf.Value, with its object keys in the given order. */
export type WireJson = null | number | string | boolean | WireJson[] | { readonly entries: ReadonlyArray<readonly [string, WireJson]> };

/** google.protobuf.Value bytes. */
export function valueBytes(value: WireJson): number[] {
  if (value === null) return varintField(1, 0);
  if (typeof value === "number") return doubleField(2, value);
  if (typeof value === "string") return strField(3, value);
  if (typeof value === "boolean") return varintField(4, value ? 1 : 0);
  if (Array.isArray(value)) return lenField(6, value.flatMap((v) => lenField(1, valueBytes(v))));
  return lenField(5, structBytes((value as { entries: ReadonlyArray<readonly [string, WireJson]> }).entries));
}

/** google.protobuf.Struct bytes from entries in wire order. */
export function structBytes(entries: ReadonlyArray<readonly [string, WireJson]>): number[] {
  return entries.flatMap(([k, v]) => lenField(1, [...strField(1, k), ...lenField(2, valueBytes(v))]));
}

/** An object for {@link WireJson}. */
export const obj = (...entries: Array<readonly [string, WireJson]>): WireJson => ({ entries });

/** A map<string, string> entry. */
export function mapEntry(field: number, key: string, value: string): number[] {
  return lenField(field, [...strField(1, key), ...strField(2, value)]);
}

/** Concatenates parts into one message body. */
export function message(...parts: number[][]): Uint8Array {
  return new Uint8Array(parts.flat());
}

/**
 * A typed gRPC client for any generated service, over grpc-js: unary methods return promises,
 * server-streaming methods async iterables. Used by tests, benchmarks and the CLI.
 */
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { anyUnpack, type Any } from "@bufbuild/protobuf/wkt";
import { StatusSchema } from "../../gen/google/rpc/status_pb.js";
import { serviceDefinition } from "./bridge.js";

/** Per-call options. */
export interface CallOptions {
  readonly deadlineMs?: number;
  readonly metadata?: Readonly<Record<string, string>>;
  readonly signal?: AbortSignal;
}

/** The client of a generated service. */
export type Client<S extends GenServiceMethods> = {
  [K in keyof S]: S[K]["methodKind"] extends "unary"
    ? (request: MessageInitShape<S[K]["input"]>, options?: CallOptions) => Promise<MessageShape<S[K]["output"]>>
    : S[K]["methodKind"] extends "server_streaming"
      ? (request: MessageInitShape<S[K]["input"]>, options?: CallOptions) => AsyncIterable<MessageShape<S[K]["output"]>>
      : never;
} & { close(): void };

/** How a client connects: TLS (server CA, optional client certificate for mTLS) and a bearer token. */
export interface ClientOptions {
  /** Talk TLS. `ca`: PEM of the CA that signed the server's certificate (default: the system's roots). */
  readonly tls?: { readonly ca?: Buffer; readonly cert?: Buffer; readonly key?: Buffer; readonly serverName?: string };
  /** Sent as `authorization: Bearer <token>` on every call. */
  readonly token?: string;
}

/** Creates a client of `service` at `address` (host:port; plain text unless `options.tls`). */
export function createClient<S extends GenServiceMethods>(service: GenService<S>, address: string, options: ClientOptions = {}): Client<S> {
  const Ctor = grpc.makeGenericClientConstructor(serviceDefinition(service), service.typeName);
  const tls = options.tls;
  const credentials = tls === undefined ? grpc.credentials.createInsecure() : grpc.credentials.createSsl(tls.ca ?? null, tls.key ?? null, tls.cert ?? null);
  const channelOptions = tls?.serverName === undefined ? {} : { "grpc.ssl_target_name_override": tls.serverName };
  const raw = new Ctor(address, credentials, channelOptions) as unknown as Record<string, (...args: unknown[]) => unknown> & grpc.Client;
  const auth: Readonly<Record<string, string>> = options.token === undefined ? {} : { authorization: `Bearer ${options.token}` };
  const toMetadata = (call: CallOptions): grpc.Metadata => {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries({ ...auth, ...(call.metadata ?? {}) })) md.set(k, v);
    return md;
  };
  const client: Record<string, unknown> = { close: () => raw.close() };
  for (const method of service.methods) {
    const call = raw[method.name]!.bind(raw);
    if (method.methodKind === "unary") {
      client[method.localName] = (request: MessageInitShape<DescMessage>, options: CallOptions = {}) =>
        new Promise((resolve, reject) => {
          const c = call(create(method.input, request), toMetadata(options), callOptions(options), (e: grpc.ServiceError | null, out: unknown) =>
            e ? reject(e) : resolve(out),
          ) as grpc.ClientUnaryCall;
          options.signal?.addEventListener("abort", () => c.cancel(), { once: true });
        });
    } else if (method.methodKind === "server_streaming") {
      client[method.localName] = (request: MessageInitShape<DescMessage>, options: CallOptions = {}) => {
        const stream = call(create(method.input, request), toMetadata(options), callOptions(options)) as grpc.ClientReadableStream<unknown>;
        options.signal?.addEventListener("abort", () => stream.cancel(), { once: true });
        return stream as AsyncIterable<unknown>;
      };
    }
  }
  return client as Client<S>;
}

function callOptions(options: CallOptions): grpc.CallOptions {
  return options.deadlineMs === undefined ? {} : { deadline: Date.now() + options.deadlineMs };
}

/** The `google.rpc.Status` details of a failed call, or an empty list. */
export function statusDetails(error: unknown): Any[] {
  const md = (error as { metadata?: grpc.Metadata }).metadata;
  const bin = md?.get("grpc-status-details-bin")[0];
  if (!(bin instanceof Buffer)) return [];
  return fromBinary(StatusSchema, bin).details;
}

/** The first detail of the given type in a failed call, if any. */
export function findDetail<D extends DescMessage>(error: unknown, schema: D): MessageShape<D> | undefined {
  for (const any of statusDetails(error)) {
    const out = anyUnpack(any, schema);
    if (out !== undefined) return out;
  }
  return undefined;
}

export { grpc };

/** The client type of a generated service constant, e.g. `ClientOf<typeof EventStoreService>`. */
export type ClientOf<T> = T extends GenService<infer S extends GenServiceMethods> ? Client<S> : never;

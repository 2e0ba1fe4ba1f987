/**
 * Turns protobuf-es service descriptors into grpc-js service definitions with typed handlers, so
 * the rest of the server never sees grpc-js. Errors thrown by handlers become gRPC statuses through
 * {@link toServiceError}, the one place where domain errors meet status codes.
 */
import * as grpc from "@grpc/grpc-js";
import {
  create,
  type DescMessage,
  type DescService,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { activeTraceparent, decodeBinary, DecodeError, encodeBinary, type Logger, type Principal, ValidationError } from "../../core/client.js";
import { toServiceError } from "./status.js";

/** What a handler knows about its call. */
export interface CallContext {
  /** Aborted when the client cancels or the deadline passes. */
  readonly signal: AbortSignal;
  /**
   * Request metadata (text values only), lower-case keys. With tracing on, `traceparent` names the
   * call's own span (a child of the client's, same trace), which events store as their trace context.
   */
  readonly metadata: Readonly<Record<string, string>>;
  /** `/package.Service/Method`. */
  readonly path: string;
  /** The authenticated caller; undefined when authentication is off (TIDEMARK_AUTH=off). */
  readonly principal: Principal | undefined;
}

/**
 * Authenticates a call from its metadata before its handler runs: the principal, undefined when
 * authentication is off, or a thrown UnauthenticatedError.
 */
export type Authenticate = (metadata: Readonly<Record<string, string>>, path: string) => Promise<Principal | undefined>;

type Unary<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  context: CallContext,
) => Promise<MessageInitShape<O>>;
type ServerStreaming<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  context: CallContext,
) => AsyncIterable<MessageInitShape<O>>;

/** The handlers of a generated service, one per method, typed by its descriptor. */
export type ServiceHandlers<S extends GenServiceMethods> = {
  [K in keyof S]: S[K]["methodKind"] extends "unary"
    ? Unary<S[K]["input"], S[K]["output"]>
    : S[K]["methodKind"] extends "server_streaming"
      ? ServerStreaming<S[K]["input"], S[K]["output"]>
      : never;
};

/** Observes every finished call (metrics, logs). */
export type CallObserver = (path: string, code: grpc.status, seconds: number) => void;

/** A service ready for `server.addService`. */
export interface BoundService {
  readonly definition: grpc.ServiceDefinition;
  readonly implementation: grpc.UntypedServiceImplementation;
}

/**
 * What the server's request deserializer returns for bytes that are not the expected message: grpc-js
 * would answer INTERNAL for a throw, so the failure travels to the handler, which refuses the call
 * with INVALID_ARGUMENT naming the field.
 */
class UndecodableRequest {
  constructor(readonly error: DecodeError) {}
}

function decodeRequest(method: DescService["methods"][number], bytes: Buffer): MessageShape<DescMessage> | UndecodableRequest {
  try {
    return decodeBinary(method.input, bytes, { strictEnums: true });
  } catch (e) {
    return new UndecodableRequest(e instanceof DecodeError ? e : new DecodeError("", (e as Error).message));
  }
}

function decodeFailure(request: unknown): ValidationError | undefined {
  if (!(request instanceof UndecodableRequest)) return undefined;
  return new ValidationError([{ field: request.error.field === "" ? "request" : request.error.field, description: request.error.reason }]);
}

/**
 * The grpc-js definition of a protobuf-es service (also usable with makeGenericClientConstructor).
 * Messages go through core/proto-binary.ts, which keeps every key and BOM a client sent.
 */
export function serviceDefinition(service: DescService): grpc.ServiceDefinition {
  const definition: Record<string, grpc.MethodDefinition<MessageShape<DescMessage>, MessageShape<DescMessage>>> = {};
  for (const method of service.methods) {
    const responseStream = method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming";
    const encode = (value: MessageShape<DescMessage>) => Buffer.from(encodeBinary(method.output, value));
    definition[method.name] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream,
      requestSerialize: (value: MessageShape<DescMessage>) => Buffer.from(encodeBinary(method.input, value)),
      requestDeserialize: (bytes: Buffer) => decodeRequest(method, bytes) as MessageShape<DescMessage>,
      responseSerialize: responseStream ? encodeOnce(encode) : encode,
      responseDeserialize: (bytes: Buffer) => decodeBinary(method.output, bytes),
      originalName: method.localName,
    };
  }
  return definition;
}

/**
 * Bytes of streamed response objects, kept weakly for as long as the object lives: see
 * {@link encodeOnce} and {@link encodedAs}.
 */
const streamedBytes = new WeakMap<object, Buffer>();

/**
 * A streamed response object written to many calls (Subscribe's fan-out hands every subscriber the
 * same message) is encoded once: the bytes are kept, weakly, for as long as the object lives. So a
 * handler must not change a message after yielding it.
 */
function encodeOnce(encode: (value: MessageShape<DescMessage>) => Buffer): (value: MessageShape<DescMessage>) => Buffer {
  return (value) => {
    let bytes = streamedBytes.get(value);
    if (bytes === undefined) {
      bytes = encode(value);
      streamedBytes.set(value, bytes);
    }
    return bytes;
  };
}

/**
 * Gives a streamed response message the bytes it is to be written as, which the handler built
 * itself (Subscribe assembles a batch from the shared encodings of its events). They must be an
 * encoding of exactly `message`; the message must not change afterwards. Returns the message.
 */
export function encodedAs<M extends object>(message: M, bytes: Buffer): M {
  streamedBytes.set(message, bytes);
  return message;
}

/** Binds typed handlers to a generated service. */
export function bindService<S extends GenServiceMethods>(
  service: GenService<S>,
  handlers: ServiceHandlers<S>,
  log: Logger,
  observe: CallObserver = () => {},
  authenticate?: Authenticate,
): BoundService {
  const definition = serviceDefinition(service);
  const implementation: grpc.UntypedServiceImplementation = {};
  for (const method of service.methods) {
    const handler = (handlers as Record<string, unknown>)[method.localName];
    if (typeof handler !== "function") throw new Error(`no handler for ${service.typeName}.${method.name}`);
    const path = `/${service.typeName}/${method.name}`;
    if (method.methodKind === "unary") {
      implementation[method.name] = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const started = performance.now();
        const { context, dispose } = callContext(call, path);
        const run = () => {
          const refused = decodeFailure(call.request);
          return refused === undefined ? (handler as Unary<DescMessage, DescMessage>)(call.request as MessageShape<DescMessage>, context) : Promise.reject(refused);
        };
        // Authentication comes first: an unauthenticated caller learns nothing, not even that its request is malformed.
        const result =
          authenticate === undefined
            ? run()
            : authenticate(context.metadata, path).then((principal) => {
                context.principal = principal;
                return run();
              });
        result.then(
          (out) => {
            dispose();
            observe(path, grpc.status.OK, (performance.now() - started) / 1000);
            callback(null, create(method.output, out));
          },
          (e: unknown) => {
            dispose();
            const error = toServiceError(e, log, path);
            observe(path, error.code, (performance.now() - started) / 1000);
            callback(error);
          },
        );
      };
    } else if (method.methodKind === "server_streaming") {
      implementation[method.name] = (call: grpc.ServerWritableStream<unknown, unknown>) => {
        const started = performance.now();
        const { context, dispose } = callContext(call, path);
        void (async () => {
          try {
            if (authenticate !== undefined) context.principal = await authenticate(context.metadata, path);
            const refused = decodeFailure(call.request);
            if (refused !== undefined) throw refused;
            for await (const out of (handler as ServerStreaming<DescMessage, DescMessage>)(
              call.request as MessageShape<DescMessage>,
              context,
            )) {
              if (context.signal.aborted) break;
              // Back-pressure: a slow client stops the producer instead of growing a buffer.
              if (!call.write(create(method.output, out))) await waitForDrain(call, context.signal);
            }
            if (!context.signal.aborted) call.end();
            observe(path, context.signal.aborted ? grpc.status.CANCELLED : grpc.status.OK, (performance.now() - started) / 1000);
          } catch (e) {
            const error = toServiceError(e, log, path);
            observe(path, error.code, (performance.now() - started) / 1000);
            if (!context.signal.aborted) call.emit("error", error);
          } finally {
            dispose();
          }
        })();
      };
    } else {
      throw new Error(`${method.methodKind} methods are not supported (${path})`);
    }
  }
  return { definition, implementation };
}

type AnyServerCall = grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>;

function callContext(call: AnyServerCall, path: string): { context: { -readonly [K in keyof CallContext]: CallContext[K] }; dispose: () => void } {
  const controller = new AbortController();
  const onCancel = () => controller.abort(new Error("call cancelled"));
  call.on("cancelled", onCancel);
  const metadata: Record<string, string> = {};
  for (const [key, value] of Object.entries(call.metadata.getMap())) {
    if (typeof value === "string") metadata[key] = value;
  }
  const traced = activeTraceparent();
  if (traced !== undefined) metadata["traceparent"] = traced;
  const deadline = call.getDeadline();
  const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
  let timer: NodeJS.Timeout | undefined;
  if (Number.isFinite(deadlineMs) && deadlineMs > 0) {
    timer = setTimeout(() => controller.abort(new Error("deadline exceeded")), Math.max(0, deadlineMs - Date.now()));
    timer.unref();
  }
  return {
    context: { signal: controller.signal, metadata, path, principal: undefined },
    dispose: () => {
      call.removeListener("cancelled", onCancel);
      if (timer !== undefined) clearTimeout(timer);
    },
  };
}

function waitForDrain(call: grpc.ServerWritableStream<unknown, unknown>, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.removeListener("drain", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    call.once("drain", done);
    signal.addEventListener("abort", done, { once: true });
  });
}

/** The handler map of a generated service constant, e.g. `HandlersOf<typeof EventStoreService>`. */
export type HandlersOf<T> = T extends GenService<infer S> ? ServiceHandlers<S> : never;

/**
 * The chaos run's own gRPC client: grpc-js and the generated descriptors of gen/, nothing of
 * Tidemark's code, so the checker reads the store the way any user's client does. Errors keep
 * grpc-js's status code; {@link conflictOf} reads the `ConcurrencyConflict` detail (W3).
 */
import { create, fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import type { DescMethodServerStreaming, DescMethodUnary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { StatusSchema } from "../gen/google/rpc/status_pb.js";
import { ConcurrencyConflictSchema, type ConcurrencyConflict } from "../gen/tidemark/v1/errors_pb.js";

export { grpc };

/** A connection to one server address. */
export class GrpcClient {
  private readonly raw: grpc.Client;

  constructor(readonly address: string) {
    this.raw = new grpc.Client(address, grpc.credentials.createInsecure(), {
      // Reconnect quickly after a server restart or a healed partition; the call deadline bounds the rest.
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 1000,
      "grpc.min_reconnect_backoff_ms": 100,
      "grpc.max_receive_message_length": 64 * 1024 * 1024,
    });
  }

  /** Calls a unary method; rejects with the grpc-js `ServiceError`. */
  unary<I extends DescMessage, O extends DescMessage>(method: DescMethodUnary<I, O>, request: MessageInitShape<I>, deadlineMs: number): Promise<MessageShape<O>> {
    const c = call(method, request, deadlineMs);
    return new Promise((resolve, reject) => {
      this.raw.makeUnaryRequest(c.path, c.serialize, c.deserialize, c.message, c.metadata, c.options, (e, out) => (e ? reject(e) : resolve(out!)));
    });
  }

  /** Calls a server-streaming method and collects every message. */
  async collect<I extends DescMessage, O extends DescMessage>(method: DescMethodServerStreaming<I, O>, request: MessageInitShape<I>, deadlineMs: number): Promise<MessageShape<O>[]> {
    const c = call(method, request, deadlineMs);
    const stream = this.raw.makeServerStreamRequest(c.path, c.serialize, c.deserialize, c.message, c.metadata, c.options);
    const out: MessageShape<O>[] = [];
    for await (const message of stream as AsyncIterable<MessageShape<O>>) out.push(message);
    return out;
  }

  close(): void {
    this.raw.close();
  }
}

/** What grpc-js needs for one call of a generated method: path, codec, message, deadline. */
function call<I extends DescMessage, O extends DescMessage>(method: DescMethodUnary<I, O> | DescMethodServerStreaming<I, O>, request: MessageInitShape<I>, deadlineMs: number) {
  return {
    path: `/${method.parent.typeName}/${method.name}`,
    serialize: (m: MessageShape<I>) => Buffer.from(toBinary(method.input, m)),
    deserialize: (b: Buffer) => fromBinary(method.output, b),
    message: create(method.input, request),
    metadata: new grpc.Metadata(),
    options: { deadline: Date.now() + deadlineMs },
  };
}

/** The gRPC status code of a failed call, or undefined for an error that is not a gRPC status. */
export function codeOf(error: unknown): grpc.status | undefined {
  const code = (error as { code?: unknown }).code;
  return typeof code === "number" ? (code as grpc.status) : undefined;
}

/** The `tidemark.v1.ConcurrencyConflict` detail of an `ABORTED` answer, if it carries one. */
export function conflictOf(error: unknown): ConcurrencyConflict | undefined {
  const bin = (error as { metadata?: grpc.Metadata }).metadata?.get("grpc-status-details-bin")[0];
  if (!(bin instanceof Buffer)) return undefined;
  for (const any of fromBinary(StatusSchema, bin).details) {
    const detail = anyUnpack(any, ConcurrencyConflictSchema);
    if (detail !== undefined) return detail;
  }
  return undefined;
}

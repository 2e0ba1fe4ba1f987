import * as grpc from "@grpc/grpc-js";
import type { BoundService } from "./bridge.js";

/** A listening gRPC server with a graceful stop. */
export interface GrpcServer {
  readonly port: number;
  /** Stops taking calls, waits for in-flight calls up to `graceMs`, then cancels the rest; once. */
  shutdown(graceMs: number, onForce: () => void): Promise<void>;
}

/** Creates a grpc-js server with the given services and binds it to `addr` (plain text unless `credentials` say TLS). */
export async function listenGrpc(
  addr: string,
  services: readonly BoundService[],
  options: { maxReceiveBytes: number; configure?: (server: grpc.Server) => void; credentials?: grpc.ServerCredentials },
): Promise<GrpcServer> {
  const server = new grpc.Server({
    "grpc.max_receive_message_length": options.maxReceiveBytes,
    "grpc.max_send_message_length": 64 * 1024 * 1024,
    "grpc.keepalive_permit_without_calls": 1,
  });
  for (const bound of services) server.addService(bound.definition, bound.implementation);
  options.configure?.(server);
  let shutdown: Promise<void> | undefined;
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(addr, options.credentials ?? grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  return {
    port,
    // Once: a second call (a failed start's cleanup after a graceful stop) waits for the first.
    shutdown: (graceMs, onForce) =>
      (shutdown ??= new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          onForce();
          server.forceShutdown();
          resolve();
        }, graceMs);
        timer.unref();
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      })),
  };
}

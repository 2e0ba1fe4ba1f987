import { create } from "@bufbuild/protobuf";
import {
  Health,
  HealthCheckResponse_ServingStatus as ServingStatus,
  HealthCheckResponseSchema,
} from "../../gen/grpc/health/v1/health_pb.js";
import { NotFoundError } from "../../core/index.js";
import type { HandlersOf } from "./bridge.js";

export { ServingStatus };

/**
 * Serving status per service name for the standard `grpc.health.v1.Health` service; the empty
 * name is the whole server, other names are its services and the parts of its process (e.g.
 * `tidemark.relay`). Watchers get every change.
 */
export class HealthState {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly watchers = new Set<() => void>();
  private down = false;

  /** Sets the status of `service` (adding the name); ignored after {@link shutdown}. */
  set(service: string, status: ServingStatus): void {
    // A part that comes up while the process shuts down must not report SERVING again.
    if (this.down) return;
    if (this.statuses.get(service) === status) return;
    this.statuses.set(service, status);
    for (const wake of this.watchers) wake();
  }

  /** Marks every known service NOT_SERVING for good (graceful shutdown). */
  shutdown(): void {
    this.down = true;
    for (const name of this.statuses.keys()) this.statuses.set(name, ServingStatus.NOT_SERVING);
    for (const wake of this.watchers) wake();
  }

  /** The status of `service`, or undefined when the name is not known. */
  get(service: string): ServingStatus | undefined {
    return this.statuses.get(service);
  }

  /** Check and Watch over these statuses; Check of an unknown name is NOT_FOUND. */
  handlers(): HandlersOf<typeof Health> {
    return {
      check: async (request) => {
        const status = this.get(request.service);
        if (status === undefined) throw new NotFoundError(`unknown service ${JSON.stringify(request.service)}`);
        return create(HealthCheckResponseSchema, { status });
      },
      watch: (request, context) => this.watch(request.service, context.signal),
    };
  }

  private async *watch(service: string, signal: AbortSignal) {
    let last: ServingStatus | undefined;
    while (!signal.aborted) {
      const status = this.get(service) ?? ServingStatus.SERVICE_UNKNOWN;
      if (status !== last) {
        last = status;
        yield { status };
        // Look again before waiting: a change made while the stream was suspended woke nobody.
        continue;
      }
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.watchers.delete(wake);
          signal.removeEventListener("abort", wake);
          resolve();
        };
        this.watchers.add(wake);
        signal.addEventListener("abort", wake, { once: true });
      });
    }
  }
}

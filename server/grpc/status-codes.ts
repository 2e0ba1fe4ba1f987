import { status } from "@grpc/grpc-js";

/** ABORTED, for code outside server/grpc/ that must recognise conflicts. */
export const ABORTED = status.ABORTED;

/** INTERNAL: what only Tidemark's own bugs answer, counted apart in the metrics. */
export const INTERNAL = status.INTERNAL;

/** The name of a gRPC status code, e.g. "NOT_FOUND". */
export function name(code: number): string {
  return status[code] ?? String(code);
}

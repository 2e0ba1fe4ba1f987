import { status } from "@grpc/grpc-js";

/** ABORTED, for code outside server/grpc/ that must recognise conflicts. */
export const ABORTED = status.ABORTED;

/** The name of a gRPC status code, e.g. "NOT_FOUND". */
export function name(code: number): string {
  return status[code] ?? String(code);
}

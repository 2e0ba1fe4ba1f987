import { expect } from "vitest";
import { grpc, findDetail } from "../../server/grpc/client.js";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";

export { findDetail, grpc };

/** Awaits a call that must fail with `code`; returns the error for further checks. */
export async function expectStatus(call: Promise<unknown>, code: grpc.status): Promise<grpc.ServiceError> {
  let error: grpc.ServiceError | undefined;
  try {
    await call;
  } catch (e) {
    error = e as grpc.ServiceError;
  }
  expect(error, `expected ${grpc.status[code]}`).toBeDefined();
  expect(grpc.status[error!.code]).toBe(grpc.status[code]);
  return error!;
}

/** The field names of an INVALID_ARGUMENT error's BadRequest detail. */
export function badFields(error: unknown): string[] {
  return findDetail(error, BadRequestSchema)?.fieldViolations.map((v) => v.field) ?? [];
}

/** Collects a server stream into an array. */
export async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of stream) out.push(item);
  return out;
}

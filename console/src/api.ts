/**
 * How the console talks to the server: gRPC-Web on its own origin, the generated descriptors of the
 * public API, and the caller's token as `authorization: Bearer …` — the same calls, checks and
 * answers as any gRPC client (docs/CONSOLE.md). The token lives in this tab's sessionStorage only.
 */
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { EventStoreService } from "../../gen/tidemark/v1/event_store_pb.js";
import { InspectionService } from "../../gen/tidemark/v1/inspection_pb.js";
import { InstanceService } from "../../gen/tidemark/v1/instance_pb.js";
import { ProcessingService } from "../../gen/tidemark/v1/processing_pb.js";

const TOKEN_KEY = "tidemark.console.token";

/** The token this tab sends ("" = none). */
export function currentToken(): string {
  return sessionStorage.getItem(TOKEN_KEY) ?? "";
}

/** Keeps `token` for this tab ("" forgets it). */
export function setToken(token: string): void {
  if (token === "") sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, token);
}

const authorization: Interceptor = (next) => (request) => {
  const token = currentToken();
  if (token !== "") request.header.set("authorization", `Bearer ${token}`);
  return next(request);
};

const transport = createGrpcWebTransport({ baseUrl: location.origin, useBinaryFormat: true, interceptors: [authorization] });

export const eventStore = createClient(EventStoreService, transport);
export const inspection = createClient(InspectionService, transport);
export const instances = createClient(InstanceService, transport);
export const processing = createClient(ProcessingService, transport);

/** True when `e` says the call needs a (valid) token. */
export function needsToken(e: unknown): boolean {
  return e instanceof ConnectError && e.code === Code.Unauthenticated;
}

/** A one-line account of a failed call: its status and the server's message. */
export function describeError(e: unknown): string {
  if (e instanceof ConnectError) return `${Code[e.code]}: ${e.rawMessage}`;
  return e instanceof Error ? e.message : String(e);
}

/** A timestamp as ISO 8601, or "" when unset. */
export function when(t: Timestamp | undefined): string {
  return t === undefined ? "" : timestampDate(t).toISOString();
}

/** Part of a `#/…` link: every value of a path segment is URI-encoded. */
export function link(...parts: readonly string[]): string {
  return `#/${parts.map((p) => encodeURIComponent(p)).join("/")}`;
}

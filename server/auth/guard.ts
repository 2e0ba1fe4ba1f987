/**
 * Authorization of every RPC (docs/SECURITY.md, docs/CONTRACT.md T2, T3, T4): each service's handlers
 * wrapped with what the call needs — a scope, the database its aggregate belongs to, the
 * aggregate-type prefix — checked before the handler runs, so a refused call reads and writes
 * nothing. Listings and streams that span databases (Subscribe, GetProcessingStatus) filter at their
 * source with the principal the bridge put in the call context. With authentication off (no
 * principal) every check passes.
 */
import {
  type AccessNeed,
  checkAccess,
  databaseOf,
  INSTANCE_AGGREGATE_TYPE,
  isUnauthenticatedError,
  type Logger,
  PermissionDeniedError,
  reachesDatabase,
  ValidationError,
} from "../../core/index.js";
import type { EventStoreService } from "../../gen/tidemark/v1/event_store_pb.js";
import type { InspectionService } from "../../gen/tidemark/v1/inspection_pb.js";
import type { InstanceService } from "../../gen/tidemark/v1/instance_pb.js";
import type { PrivacyService } from "../../gen/tidemark/v1/privacy_pb.js";
import type { ProcessingService } from "../../gen/tidemark/v1/processing_pb.js";
import type { CallContext, HandlersOf } from "../grpc/bridge.js";
import { checkStatedDatabase as statedDatabaseProblem } from "../validation.js";
import type { AuthFailures } from "./authenticator.js";

/** What the guards need: the failure counter, and how to re-check an open stream's token. */
export interface GuardDeps {
  readonly failures: AuthFailures;
  /** Authenticates the call's metadata again (throws UnauthenticatedError when revoked or expired). */
  readonly reauthenticate: (context: CallContext) => Promise<unknown>;
  /** How often an open Subscribe re-checks its token. */
  readonly recheckMs: number;
  readonly log: Logger;
}

function demand(deps: GuardDeps, context: CallContext, need: AccessNeed): void {
  if (context.principal === undefined) return;
  const refused = checkAccess(context.principal, need);
  if (refused === undefined) return;
  deps.failures.count(context.path, "PERMISSION_DENIED", `missing_${refused.missing}`);
  throw refused;
}

/** What each unary RPC of a service needs, from its request: one entry per method. */
type NeedsOf<H> = { [K in keyof H]: H[K] extends (request: infer I, context: CallContext) => Promise<unknown> ? (request: I) => AccessNeed : never };

/**
 * `inner` with each method's need demanded before it runs: for services whose every RPC is unary and
 * needs only that check (no actor, no stated database), so the table is the service's policy.
 */
function demandEach<H extends object>(inner: H, deps: GuardDeps, needs: NeedsOf<H>): H {
  const handlers = inner as Record<string, (request: unknown, context: CallContext) => Promise<unknown>>;
  const out: Record<string, unknown> = {};
  for (const [name, need] of Object.entries(needs) as Array<[string, (request: unknown) => AccessNeed]>) {
    const handler = handlers[name]!;
    out[name] = async (request: unknown, context: CallContext) => {
      demand(deps, context, need(request));
      return handler(request, context);
    };
  }
  return out as H;
}

/**
 * The actor of a write (S4): with a principal, the principal. A different client-supplied actor is
 * refused rather than recorded beside it, because consumers that read `actor` must be able to trust
 * it without knowing which of two fields the server vouches for.
 */
function actorOf(deps: GuardDeps, context: CallContext, requested: string): string {
  const principal = context.principal;
  if (principal === undefined) return requested;
  if (requested !== "" && requested !== principal.name) {
    deps.failures.count(context.path, "PERMISSION_DENIED", "missing_actor");
    throw new PermissionDeniedError(`actor ${JSON.stringify(requested)}: a token writes only as its own principal (leave actor empty)`, "actor", requested);
  }
  return principal.name;
}

/** `database`, when a single-stream request sets it, must be the aggregate's database (its id's first part). */
function checkStatedDatabase(stated: string, aggregateId: string): void {
  const problem = statedDatabaseProblem(stated, aggregateId);
  if (problem !== undefined) throw new ValidationError([{ field: "database", description: problem }]);
}

/** EventStoreService with its checks. */
export function guardEventStore(inner: HandlersOf<typeof EventStoreService>, deps: GuardDeps): HandlersOf<typeof EventStoreService> {
  return {
    async appendEvents(request, context) {
      demand(deps, context, { scope: "write", database: databaseOf(request.aggregateId), aggregateType: request.aggregateType, aggregateId: request.aggregateId });
      checkStatedDatabase(request.database, request.aggregateId);
      request.actor = actorOf(deps, context, request.actor);
      return inner.appendEvents(request, context);
    },
    readStream(request, context) {
      demand(deps, context, { scope: "read", database: databaseOf(request.aggregateId), aggregateType: request.aggregateType, aggregateId: request.aggregateId });
      checkStatedDatabase(request.database, request.aggregateId);
      return inner.readStream(request, context);
    },
    async getStreamHead(request, context) {
      demand(deps, context, { scope: "read", database: databaseOf(request.aggregateId), aggregateType: request.aggregateType, aggregateId: request.aggregateId });
      checkStatedDatabase(request.database, request.aggregateId);
      return inner.getStreamHead(request, context);
    },
    subscribe(request, context) {
      demand(deps, context, { scope: "subscribe" });
      const principal = context.principal;
      if (principal === undefined) return inner.subscribe(request, context);
      for (const database of request.databases) {
        if (!reachesDatabase(principal, database)) demand(deps, context, { scope: "subscribe", database });
      }
      return revocable(inner.subscribe, request, context, deps);
    },
    async appendToStreams(request, context) {
      // Every aggregate of the call, before anything is reserved: written ones need the write
      // scope, checked ones the read scope (their heads are read), each with its database.
      for (const stream of request.streams) {
        demand(deps, context, { scope: "write", database: databaseOf(stream.aggregateId), aggregateType: stream.aggregateType, aggregateId: stream.aggregateId });
      }
      for (const check of request.consistencyChecks) {
        demand(deps, context, { scope: "read", database: databaseOf(check.aggregateId), aggregateType: check.aggregateType, aggregateId: check.aggregateId });
      }
      request.actor = actorOf(deps, context, request.actor);
      return inner.appendToStreams(request, context);
    },
  };
}

/**
 * A Subscribe stream that ends with UNAUTHENTICATED once its token is revoked or expires: the token
 * is re-checked every `recheckMs` while the stream is open.
 */
function revocable<I, O>(handler: (request: I, context: CallContext) => AsyncIterable<O>, request: I, context: CallContext, deps: GuardDeps): AsyncIterable<O> {
  const stop = new AbortController();
  let refused: unknown;
  const timer = setInterval(() => {
    deps.reauthenticate(context).catch((e: unknown) => {
      if (isUnauthenticatedError(e)) {
        refused = e;
        stop.abort(e);
      } else deps.log.warn({ err: e, path: context.path }, "could not re-check an open stream's token; checking again later");
    });
  }, deps.recheckMs);
  timer.unref();
  const source = handler(request, { ...context, signal: AbortSignal.any([context.signal, stop.signal]) })[Symbol.asyncIterator]();
  const end = () => clearInterval(timer);
  const iterator: AsyncIterator<O, undefined> = {
    next: () =>
      source.next().then(
        (r) => {
          if (refused !== undefined) {
            end();
            throw refused;
          }
          if (r.done === true) end();
          return r.done === true ? { done: true, value: undefined } : r;
        },
        (e: unknown) => {
          end();
          throw refused ?? e;
        },
      ),
    return: async () => {
      end();
      await source.return?.();
      return { done: true, value: undefined };
    },
  };
  return { [Symbol.asyncIterator]: () => iterator };
}

/** InstanceService with its checks: the request's database, aggregate type `Instance`. */
export function guardInstances(inner: HandlersOf<typeof InstanceService>, deps: GuardDeps): HandlersOf<typeof InstanceService> {
  // An empty database is left to validation (INVALID_ARGUMENT), which names the field.
  const need = (scope: "read" | "write", database: string): AccessNeed => ({ scope, aggregateType: INSTANCE_AGGREGATE_TYPE, ...(database === "" ? {} : { database }) });
  return {
    async createInstance(request, context) {
      demand(deps, context, need("write", request.database));
      request.actor = actorOf(deps, context, request.actor);
      return inner.createInstance(request, context);
    },
    async updateInstance(request, context) {
      demand(deps, context, need("write", request.database));
      request.actor = actorOf(deps, context, request.actor);
      return inner.updateInstance(request, context);
    },
    async deleteInstance(request, context) {
      demand(deps, context, need("write", request.database));
      request.actor = actorOf(deps, context, request.actor);
      return inner.deleteInstance(request, context);
    },
    async getInstance(request, context) {
      demand(deps, context, need("read", request.database));
      return inner.getInstance(request, context);
    },
    async listInstances(request, context) {
      demand(deps, context, need("read", request.database));
      return inner.listInstances(request, context);
    },
  };
}

/**
 * ProcessingService with its checks: the read scope to look, the admin scope to redrive (replay or
 * discard); the handlers filter by the principal's databases, so another tenant's event is NOT_FOUND.
 */
export function guardProcessing(inner: HandlersOf<typeof ProcessingService>, deps: GuardDeps): HandlersOf<typeof ProcessingService> {
  return demandEach(inner, deps, {
    getProcessingStatus: () => ({ scope: "read" }),
    listDeadLetters: () => ({ scope: "read" }),
    getDeadLetter: () => ({ scope: "read" }),
    replayDeadLetters: () => ({ scope: "admin" }),
    discardDeadLetters: () => ({ scope: "admin" }),
  });
}

/**
 * InspectionService with its checks: the read scope, and the database a listing names (the handlers
 * filter what spans databases by the principal); the relay's store-wide figures need admin.
 */
export function guardInspection(inner: HandlersOf<typeof InspectionService>, deps: GuardDeps): HandlersOf<typeof InspectionService> {
  return demandEach(inner, deps, {
    listDatabases: () => ({ scope: "read" }),
    listAggregateTypes: (request) => ({ scope: "read", database: request.database }),
    listStreams: (request) => ({ scope: "read", database: request.database, aggregateType: request.aggregateType }),
    getEvent: () => ({ scope: "read" }),
    getRelayStatus: () => ({ scope: "admin" }),
    listHandlers: () => ({ scope: "read" }),
  });
}

/**
 * PrivacyService with its checks: ForgetSubject needs the admin scope on the subject's database,
 * GetSubjectKey the read scope there (whoever may read the events may read their data). An empty
 * database is left to validation (INVALID_ARGUMENT), which names the field.
 */
export function guardPrivacy(inner: HandlersOf<typeof PrivacyService>, deps: GuardDeps): HandlersOf<typeof PrivacyService> {
  const need = (scope: "read" | "admin", database: string): AccessNeed => ({ scope, ...(database === "" ? {} : { database }) });
  return {
    async forgetSubject(request, context) {
      demand(deps, context, need("admin", request.database));
      request.actor = actorOf(deps, context, request.actor);
      return inner.forgetSubject(request, context);
    },
    async getSubjectKey(request, context) {
      demand(deps, context, need("read", request.database));
      return inner.getSubjectKey(request, context);
    },
  };
}

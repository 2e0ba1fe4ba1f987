/**
 * gRPC handlers of tidemark.v1.InspectionService: read-only views of the store for operators and
 * the web console (docs/CONSOLE.md). The guard (server/auth/guard.ts) demands the scope and the
 * database a request names; these handlers filter what spans databases by the caller's principal,
 * in the query, so a listing never holds what the token may not read (docs/CONTRACT.md T3).
 */
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Kysely } from "kysely";
import {
  ALL_DATABASES,
  asWriteSide,
  checkAggregateId,
  checkAggregateType,
  checkEventId,
  type ConsumerDatabase,
  findLiveSlot,
  handlerCounts,
  lastPosition,
  listAggregateTypes,
  listDatabases,
  listDatabaseStreams,
  locationOf,
  NotFoundError,
  type Principal,
  type RecordScope,
  relayStatus,
  type RelayTables,
  Violations,
  visibleTo,
} from "../../core/index.js";
import type { InspectionService } from "../../gen/tidemark/v1/inspection_pb.js";
import type { EventStore } from "../event-store.js";
import type { HandlersOf } from "../grpc/bridge.js";
import type { SubjectKeys } from "../privacy.js";

const DEFAULT_PAGE_SIZE = 100;
const MAX_PAGE_SIZE = 1000;

/** What the inspection handlers read: the store (envelopes), its database, and the bucket's name. */
export interface InspectionDeps {
  readonly store: EventStore;
  /** Opens an event's sealed data as ReadStream does (T5): the data, or the erasure marker. */
  readonly keys: SubjectKeys;
  readonly db: Kysely<ConsumerDatabase>;
  readonly bucket: string;
}

/** What a principal may see of rows that span databases; undefined (everything) without authentication. */
export function scopeOf(principal: Principal | undefined): RecordScope | undefined {
  if (principal === undefined) return undefined;
  return { databases: principal.databases.includes(ALL_DATABASES) ? "all" : principal.databases, aggregateTypePrefix: principal.aggregateTypePrefix };
}

/** A database a request names: "" (aggregates of no database) or an id's first part (no `/`). */
function checkDatabase(value: string): string | undefined {
  if (value === "") return undefined;
  if (value.includes("/")) return "must not contain '/' (a database is the part of an aggregate id before its first '/')";
  return checkAggregateId(value);
}

/** Handlers of InspectionService. */
export function inspectionHandlers(deps: InspectionDeps): HandlersOf<typeof InspectionService> {
  const writeSide = asWriteSide(deps.db);
  return {
    async listDatabases(_request, context) {
      const rows = await listDatabases(writeSide, scopeOf(context.principal));
      return { databases: rows.map((r) => ({ database: r.database, streams: BigInt(r.streams) })) };
    },

    async listAggregateTypes(request, context) {
      const v = new Violations();
      v.add("database", checkDatabase(request.database));
      v.throwIfAny();
      const rows = await listAggregateTypes(writeSide, request.database, scopeOf(context.principal));
      return { aggregateTypes: rows.map((r) => ({ aggregateType: r.aggregateType, streams: BigInt(r.streams) })) };
    },

    async listStreams(request) {
      const v = new Violations();
      v.add("database", checkDatabase(request.database));
      v.add("aggregate_type", checkAggregateType(request.aggregateType));
      if (request.idPrefix !== "") v.add("id_prefix", checkAggregateId(request.idPrefix));
      if (request.pageSize > MAX_PAGE_SIZE) v.add("page_size", `must be at most ${MAX_PAGE_SIZE}`);
      const base = request.database === "" ? "" : `${request.database}/`;
      const prefix = request.idPrefix.startsWith(base) ? request.idPrefix : `${base}${request.idPrefix}`;
      let after = "";
      if (request.pageToken !== "") {
        // A token is the base64url of the last aggregate id listed: anything else was not made here.
        after = Buffer.from(request.pageToken, "base64url").toString("utf8");
        const canonical = Buffer.from(after, "utf8").toString("base64url") === request.pageToken;
        if (!canonical || !after.startsWith(prefix) || checkAggregateId(after) !== undefined) v.add("page_token", "is not a token of this listing");
      }
      v.throwIfAny();
      const pageSize = request.pageSize === 0 ? DEFAULT_PAGE_SIZE : request.pageSize;
      const rows = await listDatabaseStreams(writeSide, { database: request.database, aggregateType: request.aggregateType, prefix, after, limit: pageSize + 1 });
      const page = rows.slice(0, pageSize);
      const last = rows.length > pageSize ? page[page.length - 1]!.aggregateId : "";
      return {
        streams: page.map((r) => ({ aggregateType: r.aggregateType, aggregateId: r.aggregateId, head: BigInt(r.head), updatedAt: timestampFromDate(r.updatedAt) })),
        nextPageToken: last === "" ? "" : Buffer.from(last, "utf8").toString("base64url"),
      };
    },

    async getEvent(request, context) {
      const v = new Violations();
      v.add("event_id", checkEventId(request.eventId));
      v.throwIfAny();
      const row = await findLiveSlot(writeSide, request.eventId);
      const principal = context.principal;
      // Another tenant's event is unknown to the caller: the same NOT_FOUND as an id that never existed.
      if (row === undefined || row.state !== "committed" || (principal !== undefined && !visibleTo(principal)(row.aggregateType, row.aggregateId))) {
        throw new NotFoundError(`event ${request.eventId} is not a committed event`);
      }
      const where = locationOf(row);
      const event = await deps.keys.open(await deps.store.load(row));
      return {
        event,
        location: { bucket: deps.bucket, key: where.key, segment: BigInt(where.segment), offset: BigInt(where.start), length: BigInt(where.length) },
        ...(row.committedAt === null ? {} : { committedAt: timestampFromDate(row.committedAt) }),
        chainHash: row.chainHash ?? "",
      };
    },

    async getRelayStatus() {
      const status = await relayStatus(deps.db as unknown as Kysely<RelayTables>);
      return {
        headPosition: BigInt(status.head),
        checkpoints: status.checkpoints.map((c) => ({
          name: c.name,
          position: BigInt(c.position),
          lagPositions: BigInt(c.lagPositions),
          ...(c.oldestPendingAt === null ? {} : { oldestPendingAt: timestampFromDate(c.oldestPendingAt) }),
          updatedAt: timestampFromDate(c.updatedAt),
          leaseHolder: c.leaseHolder ?? "",
          ...(c.leaseExpiresAt === null ? {} : { leaseExpiresAt: timestampFromDate(c.leaseExpiresAt) }),
        })),
      };
    },

    async listHandlers(_request, context) {
      const scope = scopeOf(context.principal);
      const rows = await handlerCounts(deps.db, scope);
      const head = scope === undefined || scope.databases === "all" ? await lastPosition(writeSide) : 0;
      return {
        headPosition: BigInt(head),
        handlers: rows.map((r) => ({
          handler: r.handler,
          processing: BigInt(r.processing),
          retryScheduled: BigInt(r.retryScheduled),
          deadLettered: BigInt(r.deadLettered),
          done: BigInt(r.done),
          skippedStale: BigInt(r.skippedStale),
          parked: BigInt(r.parked),
          replayRequested: BigInt(r.replayRequested),
          discarded: BigInt(r.discarded),
          appliedPosition: BigInt(r.appliedPosition),
          ...(r.lastUpdatedAt === null ? {} : { lastUpdatedAt: timestampFromDate(r.lastUpdatedAt) }),
        })),
      };
    },
  };
}

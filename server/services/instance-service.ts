import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  checkInstanceId,
  checkInstancePart,
  inSpan,
  INSTANCE_AGGREGATE_TYPE,
  instanceAggregateId,
  listStreams,
  NotFoundError,
  type ReadModelInstance,
  UnavailableError,
  Violations,
  type WriteSideTables,
} from "../../core/index.js";
import { InstanceService, ReadConsistency, type InstanceSchema } from "../../gen/tidemark/v1/instance_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Kysely } from "kysely";
import type { HandlersOf } from "../grpc/bridge.js";
import {
  checkAddress,
  validateInstanceCommand,
  type CommandOutcome,
  type InstanceCommands,
  type InstanceView,
} from "../instances/instance-commands.js";
import type { Limits } from "../limits.js";

const DEFAULT_PAGE_SIZE = 100;
const MAX_PAGE_SIZE = 1000;

/**
 * The port to the instances read model that EVENTUAL and AT_LEAST_POSITION reads use (implemented
 * by consumers/read-model.ts). Without one, every read folds the stream, which satisfies every
 * consistency level.
 */
export interface InstanceReadModel {
  /** One instance, deleted ones included; undefined when the model has none. */
  get(database: string, className: string, instanceId: string): Promise<ReadModelInstance | undefined>;
  /** Instances of a class after `afterInstanceId` in id order, at most `limit`. */
  list(database: string, className: string, afterInstanceId: string, limit: number, includeDeleted: boolean): Promise<ReadModelInstance[]>;
  /** True once the model reflects every event up to `position`; false when it gave up waiting. */
  waitForPosition(position: number, signal: AbortSignal): Promise<boolean>;
}

/**
 * Whether a read goes to the read model: EVENTUAL, or AT_LEAST_POSITION once the model reached
 * `min_position` (UNAVAILABLE when it does not in time). Unspecified and STRONG fold the stream.
 */
async function useReadModel(
  readModel: InstanceReadModel | undefined,
  request: { consistency: ReadConsistency; minPosition: bigint },
  signal: AbortSignal,
): Promise<InstanceReadModel | undefined> {
  if (readModel === undefined) return undefined;
  if (request.consistency === ReadConsistency.EVENTUAL) return readModel;
  if (request.consistency !== ReadConsistency.AT_LEAST_POSITION) return undefined;
  const v = new Violations();
  if (request.minPosition === 0n) v.add("min_position", "is required for READ_CONSISTENCY_AT_LEAST_POSITION");
  if (request.minPosition > BigInt(Number.MAX_SAFE_INTEGER)) v.add("min_position", "exceeds 2^53");
  v.throwIfAny();
  if (!(await readModel.waitForPosition(Number(request.minPosition), signal))) {
    throw new UnavailableError(`the read model has not reached position ${request.minPosition} yet; retry or read with READ_CONSISTENCY_STRONG`);
  }
  return readModel;
}

/** gRPC handlers of tidemark.v1.InstanceService; `readModel` serves EVENTUAL and AT_LEAST_POSITION reads. */
export function instanceHandlers(
  commands: InstanceCommands,
  db: Kysely<WriteSideTables>,
  limits: Limits,
  readModel?: InstanceReadModel,
): HandlersOf<typeof InstanceService> {
  return {
    async createInstance(request, context) {
      const input = await inSpan("tidemark.validate", async () => validateInstanceCommand("create", request, limits));
      return { result: toResult(await commands.execute(input, context.metadata["traceparent"])) };
    },
    async updateInstance(request, context) {
      const input = await inSpan("tidemark.validate", async () => validateInstanceCommand("update", request, limits));
      return { result: toResult(await commands.execute(input, context.metadata["traceparent"])) };
    },
    async deleteInstance(request, context) {
      const input = await inSpan("tidemark.validate", async () => validateInstanceCommand("delete", request, limits));
      return { result: toResult(await commands.execute(input, context.metadata["traceparent"])) };
    },
    async getInstance(request, context) {
      const v = new Violations();
      const address = checkAddress(v, request);
      v.throwIfAny();
      const model = await useReadModel(readModel, request, context.signal);
      if (model === undefined) return { instance: toInstance(await commands.get(address)) };
      const found = await model.get(address.database, address.className, address.instanceId);
      if (found === undefined) throw new NotFoundError(`instance ${instanceAggregateId(address.database, address.className, address.instanceId)} does not exist in the read model`);
      return { instance: fromReadModel(found) };
    },
    async listInstances(request, context) {
      const v = new Violations();
      v.add("database", checkInstancePart(request.database));
      v.add("class_name", checkInstancePart(request.className));
      if (request.pageSize > MAX_PAGE_SIZE) v.add("page_size", `must be at most ${MAX_PAGE_SIZE}`);
      let after = "";
      if (request.pageToken !== "") {
        after = Buffer.from(request.pageToken, "base64url").toString("utf8");
        // A token is the base64url of the last aggregate id listed: anything else (other bytes,
        // invalid UTF-8, an id no instance can have) was not made by this server.
        const prefix = instanceAggregateId(request.database, request.className, "");
        const canonical = Buffer.from(after, "utf8").toString("base64url") === request.pageToken;
        if (!canonical || !after.startsWith(prefix) || checkInstanceId(after.slice(prefix.length)) !== undefined) {
          v.add("page_token", "is not a token of this listing");
        }
      }
      v.throwIfAny();
      const pageSize = request.pageSize === 0 ? DEFAULT_PAGE_SIZE : request.pageSize;
      const prefix = instanceAggregateId(request.database, request.className, "");
      const model = await useReadModel(readModel, request, context.signal);
      if (model !== undefined) {
        // Same page token as the strong listing (the last aggregate id), so pages can mix consistencies.
        const rows = await model.list(request.database, request.className, after.slice(prefix.length), pageSize + 1, request.includeDeleted);
        const page = rows.slice(0, pageSize);
        const token = rows.length > pageSize ? instanceAggregateId(request.database, request.className, page[page.length - 1]!.instanceId) : "";
        return { instances: page.map(fromReadModel), nextPageToken: token === "" ? "" : Buffer.from(token, "utf8").toString("base64url") };
      }
      const instances: Array<MessageInitShape<typeof InstanceSchema>> = [];
      let cursor = after;
      let more = true;
      while (instances.length < pageSize && more) {
        const ids = await listStreams(db, INSTANCE_AGGREGATE_TYPE, prefix, cursor, pageSize);
        more = ids.length === pageSize;
        for (const id of ids) {
          cursor = id;
          const address = { database: request.database, className: request.className, instanceId: id.slice(prefix.length) };
          try {
            const view = await commands.get(address);
            if (request.includeDeleted || !view.state.deleted) instances.push(toInstance(view));
          } catch (e) {
            if ((e as { kind?: string }).kind !== "not-found") throw e;
          }
          if (instances.length === pageSize) break;
        }
      }
      const last = instances.length === pageSize && (more || cursor !== "") ? cursor : "";
      return { instances, nextPageToken: last === "" ? "" : Buffer.from(last, "utf8").toString("base64url") };
    },
  };
}

function toResult(outcome: CommandOutcome) {
  return {
    eventId: outcome.eventId,
    sequenceNumber: BigInt(outcome.seq),
    globalPosition: BigInt(outcome.position),
    replayed: outcome.replayed,
  };
}

function toInstance(view: InstanceView): MessageInitShape<typeof InstanceSchema> {
  return {
    database: view.address.database,
    className: view.address.className,
    instanceId: view.address.instanceId,
    properties: view.state.properties,
    version: BigInt(view.version),
    deleted: view.state.deleted,
    createdAt: timestampFromDate(view.state.createdAt),
    updatedAt: timestampFromDate(view.state.updatedAt),
    globalPosition: BigInt(view.state.globalPosition),
  };
}

function fromReadModel(row: ReadModelInstance): MessageInitShape<typeof InstanceSchema> {
  return {
    database: row.database,
    className: row.className,
    instanceId: row.instanceId,
    properties: row.properties,
    version: BigInt(row.version),
    deleted: row.deleted,
    createdAt: timestampFromDate(row.createdAt),
    updatedAt: timestampFromDate(row.updatedAt),
    globalPosition: BigInt(row.globalPosition),
  };
}

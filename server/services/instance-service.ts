import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Violations } from "../../core/errors.js";
import { INSTANCE_AGGREGATE_TYPE } from "../../core/domain/instance.js";
import { listStreams } from "../../core/event-log.js";
import { instanceAggregateId } from "../../core/ids.js";
import { InstanceService, type InstanceSchema } from "../../gen/tidemark/v1/instance_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Kysely } from "kysely";
import type { WriteSideTables } from "../../core/db/schema.js";
import type { HandlersOf } from "../grpc/bridge.js";
import {
  checkAddress,
  validateInstanceCommand,
  type CommandOutcome,
  type InstanceCommands,
  type InstanceView,
} from "../instances/instance-commands.js";
import type { Limits } from "../limits.js";
import { checkInstancePart } from "../../core/ids.js";

const DEFAULT_PAGE_SIZE = 100;
const MAX_PAGE_SIZE = 1000;

/** gRPC handlers of tidemark.v1.InstanceService. */
export function instanceHandlers(
  commands: InstanceCommands,
  db: Kysely<WriteSideTables>,
  limits: Limits,
): HandlersOf<typeof InstanceService> {
  return {
    async createInstance(request, context) {
      const input = validateInstanceCommand("create", request, limits);
      return { result: toResult(await commands.execute(input, context.metadata["traceparent"])) };
    },
    async updateInstance(request, context) {
      const input = validateInstanceCommand("update", request, limits);
      return { result: toResult(await commands.execute(input, context.metadata["traceparent"])) };
    },
    async deleteInstance(request, context) {
      const input = validateInstanceCommand("delete", request, limits);
      return { result: toResult(await commands.execute(input, context.metadata["traceparent"])) };
    },
    async getInstance(request) {
      const v = new Violations();
      const address = checkAddress(v, request);
      v.throwIfAny();
      return { instance: toInstance(await commands.get(address)) };
    },
    async listInstances(request) {
      const v = new Violations();
      v.add("database", checkInstancePart(request.database));
      v.add("class_name", checkInstancePart(request.className));
      if (request.pageSize > MAX_PAGE_SIZE) v.add("page_size", `must be at most ${MAX_PAGE_SIZE}`);
      let after = "";
      if (request.pageToken !== "") {
        after = Buffer.from(request.pageToken, "base64url").toString("utf8");
        if (!after.startsWith(instanceAggregateId(request.database, request.className, ""))) {
          v.add("page_token", "is not a token of this listing");
        }
      }
      v.throwIfAny();
      const pageSize = request.pageSize === 0 ? DEFAULT_PAGE_SIZE : request.pageSize;
      const prefix = instanceAggregateId(request.database, request.className, "");
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

/**
 * gRPC handlers of tidemark.v1.ProcessingService: what each handler did with an event, from the
 * registry, completed by the watermarks for rows already pruned (docs/CONTRACT.md C7) and for events a
 * handler has not reached yet.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Kysely } from "kysely";
import {
  asWriteSide,
  checkEventId,
  type ConsumerDatabase,
  findLiveSlot,
  findRecords,
  NotFoundError,
  type ProcessingRecord,
  type Principal,
  type ProcessingState as RowState,
  type RecordScope,
  UnavailableError,
  Violations,
  visibleTo,
  ALL_DATABASES,
  watermarksOf,
} from "../../core/index.js";
import {
  ProcessingService,
  ProcessingState,
  type EventProcessingStatusSchema,
  type HandlerStatusSchema,
} from "../../gen/tidemark/v1/processing_pb.js";
import type { HandlersOf } from "../grpc/bridge.js";

const STATES: Record<RowState, ProcessingState> = {
  processing: ProcessingState.PROCESSING,
  done: ProcessingState.DONE,
  retry_scheduled: ProcessingState.RETRY_SCHEDULED,
  dead_lettered: ProcessingState.DEAD_LETTERED,
  skipped_stale: ProcessingState.SKIPPED_STALE,
};

/** Handlers of ProcessingService over the registry in `db`. */
export function processingHandlers(db: Kysely<ConsumerDatabase>): HandlersOf<typeof ProcessingService> {
  return {
    async getProcessingStatus(request, context) {
      const v = new Violations();
      const key = request.key;
      if (key.case === undefined) v.add("key", "event_id or command_id is required");
      else if (key.case === "eventId") v.add("event_id", checkEventId(key.value));
      else v.add("command_id", checkEventId(key.value));
      v.throwIfAny();
      // With a token, another database's events are filtered out in the queries: to its caller such
      // an event is unknown (NOT_FOUND, the same message), and a command's list omits it.
      const principal = context.principal;
      if (key.case === "eventId") return { events: [await eventStatus(db, key.value, principal)] };
      const records = await findRecords(db, { commandId: key.value! }, principal === undefined ? undefined : scopeOf(principal));
      const byEvent = new Map<string, ProcessingRecord[]>();
      for (const record of records) {
        const list = byEvent.get(record.eventId);
        if (list === undefined) byEvent.set(record.eventId, [record]);
        else list.push(record);
      }
      return { events: [...byEvent.values()].map((list) => toStatus(list[0]!, list.map(toHandlerStatus))) };
    },
    async listDeadLetters() {
      throw new UnavailableError("ListDeadLetters is not built yet");
    },
    async getDeadLetter() {
      throw new UnavailableError("GetDeadLetter is not built yet");
    },
    async replayDeadLetters() {
      throw new UnavailableError("ReplayDeadLetters is not built yet");
    },
    async discardDeadLetters() {
      throw new UnavailableError("DiscardDeadLetters is not built yet");
    },
  };
}

function scopeOf(principal: Principal): RecordScope {
  return { databases: principal.databases.includes(ALL_DATABASES) ? "all" : principal.databases, aggregateTypePrefix: principal.aggregateTypePrefix };
}

async function eventStatus(db: Kysely<ConsumerDatabase>, eventId: string, principal: Principal | undefined): Promise<MessageInitShape<typeof EventProcessingStatusSchema>> {
  const records = await findRecords(db, { eventId }, principal === undefined ? undefined : scopeOf(principal));
  const found = await findLiveSlot(asWriteSide(db), eventId);
  const slot = found === undefined || principal === undefined || visibleTo(principal)(found.aggregateType, found.aggregateId) ? found : undefined;
  if (records.length === 0 && slot === undefined) throw new NotFoundError(`event ${eventId} is unknown to the store and to every handler`);
  const handlers = records.map(toHandlerStatus);
  const event = slot === undefined
    ? records[0]!
    : { eventId, eventType: slot.eventType, aggregateType: slot.aggregateType, aggregateId: slot.aggregateId, seq: slot.seq, globalPosition: slot.globalPosition };
  // Handlers without a row: pruned (their watermark passed the event) or not there yet.
  const seen = new Set(records.map((r) => r.handler));
  for (const [handler, applied] of await watermarksOf(db, event.aggregateType, event.aggregateId)) {
    if (seen.has(handler)) continue;
    handlers.push({ handler, state: applied >= event.seq ? ProcessingState.PRUNED : ProcessingState.PENDING });
  }
  handlers.sort((a, b) => (a.handler! < b.handler! ? -1 : a.handler! > b.handler! ? 1 : 0));
  return toStatus(event, handlers);
}

function toStatus(
  event: { eventId: string; eventType: string; aggregateType: string; aggregateId: string; seq: number; globalPosition: number | null },
  handlers: Array<MessageInitShape<typeof HandlerStatusSchema>>,
): MessageInitShape<typeof EventProcessingStatusSchema> {
  return {
    eventId: event.eventId,
    eventType: event.eventType,
    aggregateType: event.aggregateType,
    aggregateId: event.aggregateId,
    sequenceNumber: BigInt(event.seq),
    globalPosition: BigInt(event.globalPosition ?? 0),
    handlers,
  };
}

function toHandlerStatus(record: ProcessingRecord): MessageInitShape<typeof HandlerStatusSchema> {
  return {
    handler: record.handler,
    state: STATES[record.state],
    attempts: record.attempts,
    lastError: record.lastError ?? "",
    updatedAt: timestampFromDate(record.updatedAt),
    ...(record.nextAttemptAt === null ? {} : { nextAttemptAt: timestampFromDate(record.nextAttemptAt) }),
    ...(record.leaseExpiresAt === null ? {} : { leaseExpiresAt: timestampFromDate(record.leaseExpiresAt) }),
  };
}

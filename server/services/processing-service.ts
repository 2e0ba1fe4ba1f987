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
  checkHandlerName,
  type ConsumerDatabase,
  findLiveSlot,
  findRecords,
  NotFoundError,
  type ProcessingRecord,
  type Principal,
  type ProcessingState as RowState,
  Violations,
  type DeadLetterCursor,
  type DeadLetterRecord,
  type DeadLetterTarget,
  discardDeadLetters,
  getDeadLetter,
  listDeadLetters,
  requestReplay,
  requireKnownHandler,
  waitingCounts,
  type WaitingCounts,
  visibleTo,
  watermarksOf,
} from "../../core/index.js";
import {
  ProcessingService,
  ProcessingState,
  type DeadLetterCountsSchema,
  type DeadLetterSchema,
  type DeadLetterSelection,
  type EventProcessingStatusSchema,
  type HandlerStatusSchema,
} from "../../gen/tidemark/v1/processing_pb.js";
import type { HandlersOf } from "../grpc/bridge.js";
import { scopeOf } from "./inspection-service.js";

const STATES: Record<RowState, ProcessingState> = {
  processing: ProcessingState.PROCESSING,
  done: ProcessingState.DONE,
  retry_scheduled: ProcessingState.RETRY_SCHEDULED,
  dead_lettered: ProcessingState.DEAD_LETTERED,
  skipped_stale: ProcessingState.SKIPPED_STALE,
  parked: ProcessingState.PARKED,
  replay_requested: ProcessingState.REPLAY_REQUESTED,
  discarded: ProcessingState.DISCARDED,
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
      const scope = scopeOf(principal);
      const withCounts = async (events: Array<MessageInitShape<typeof EventProcessingStatusSchema>>) => {
        const handlers = [...new Set(events.flatMap((e) => (e.handlers ?? []).map((h) => h.handler ?? "")))].sort();
        return { events, handlerCounts: (await waitingCounts(db, handlers, scope)).map(toCounts) };
      };
      if (key.case === "eventId") return withCounts([await eventStatus(db, key.value, principal)]);
      const records = await findRecords(db, { commandId: key.value! }, scope);
      const byEvent = new Map<string, ProcessingRecord[]>();
      for (const record of records) {
        const list = byEvent.get(record.eventId);
        if (list === undefined) byEvent.set(record.eventId, [record]);
        else list.push(record);
      }
      return withCounts([...byEvent.values()].map((list) => toStatus(list[0]!, list.map(toHandlerStatus))));
    },
    async listDeadLetters(request, context) {
      const v = new Violations();
      if (request.handler !== "") v.add("handler", checkHandlerName(request.handler));
      const aggregate = request.aggregate;
      if (aggregate !== undefined) {
        v.add("aggregate.aggregate_type", aggregate.aggregateType === "" ? "is required with aggregate" : undefined);
        v.add("aggregate.aggregate_id", aggregate.aggregateId === "" ? "is required with aggregate" : undefined);
      }
      if (request.pageSize > MAX_PAGE) v.add("page_size", `must be at most ${MAX_PAGE}`);
      const after = request.pageToken === "" ? undefined : decodeCursor(request.pageToken);
      if (after === null) v.add("page_token", "is not a page token this call returned");
      v.throwIfAny();
      if (request.handler !== "") await requireKnownHandler(db, request.handler);
      const scope = scopeOf(context.principal);
      const limit = request.pageSize === 0 ? DEFAULT_PAGE : request.pageSize;
      const records = await listDeadLetters(
        db,
        {
          handler: request.handler === "" ? undefined : request.handler,
          aggregate: aggregate === undefined ? undefined : { aggregateType: aggregate.aggregateType, aggregateId: aggregate.aggregateId },
          limit: limit + 1,
          after: after ?? undefined,
          includeReplaying: request.includeReplaying,
        },
        scope,
      );
      const page = records.slice(0, limit);
      const last = page[page.length - 1];
      const handlers = request.handler === "" ? [...new Set(page.map((r) => r.handler))].sort() : [request.handler];
      return {
        deadLetters: page.map(toDeadLetter),
        nextPageToken: records.length > limit && last !== undefined ? encodeCursor(last) : "",
        counts: (await waitingCounts(db, handlers, scope)).map(toCounts),
      };
    },
    async getDeadLetter(request, context) {
      const v = new Violations();
      v.add("handler", checkHandlerName(request.handler));
      v.add("event_id", checkEventIdOrKey(request.eventId));
      v.throwIfAny();
      await requireKnownHandler(db, request.handler);
      const { record, message } = await getDeadLetter(db, request.handler, request.eventId, scopeOf(context.principal));
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(message?.headers ?? {})) headers[name] = Buffer.from(value, "base64").toString("utf8");
      return {
        deadLetter: toDeadLetter(record),
        messageValue: message?.value === null || message === null ? new Uint8Array() : new Uint8Array(Buffer.from(message.value, "base64")),
        messageHeaders: headers,
      };
    },
    async replayDeadLetters(request, context) {
      const { handler, target } = checkSelection(request.selection, new Violations());
      await requireKnownHandler(db, handler);
      const who = context.principal?.name ?? "";
      return { eventIds: await requestReplay(db, handler, target, who, scopeOf(context.principal)) };
    },
    async discardDeadLetters(request, context) {
      const v = new Violations();
      const reason = request.reason.trim();
      v.add("reason", reason === "" ? "is required: say why the events are resolved without being applied" : reason.length > 2000 ? "must be at most 2000 characters" : undefined);
      const { handler, target } = checkSelection(request.selection, v);
      await requireKnownHandler(db, handler);
      const who = context.principal?.name ?? "";
      return { eventIds: await discardDeadLetters(db, handler, target, who, reason, scopeOf(context.principal)) };
    },
  };
}

const DEFAULT_PAGE = 100;
const MAX_PAGE = 1000;

/** Registry keys are event ids, or `kafka:topic:partition:offset` for an undecodable message. */
function checkEventIdOrKey(eventId: string): string | undefined {
  if (eventId === "") return "is required";
  if (eventId.startsWith("kafka:") && eventId.length <= 512) return undefined;
  return checkEventId(eventId);
}

/** Validates a DeadLetterSelection (every problem named with its field) and returns it typed. */
function checkSelection(selection: DeadLetterSelection | undefined, v: Violations): { handler: string; target: DeadLetterTarget } {
  let target: DeadLetterTarget | undefined;
  if (selection === undefined) v.add("selection", "is required");
  else {
    v.add("selection.handler", checkHandlerName(selection.handler));
    const t = selection.target;
    if (t.case === undefined) v.add("selection.target", "event_id, aggregate or all is required");
    else if (t.case === "eventId") {
      v.add("selection.event_id", checkEventIdOrKey(t.value));
      target = { type: "event", eventId: t.value };
    } else if (t.case === "aggregate") {
      v.add("selection.aggregate.aggregate_type", t.value.aggregateType === "" ? "is required" : undefined);
      v.add("selection.aggregate.aggregate_id", t.value.aggregateId === "" ? "is required" : undefined);
      target = { type: "aggregate", aggregateType: t.value.aggregateType, aggregateId: t.value.aggregateId };
    } else {
      v.add("selection.all", t.value ? undefined : "must be true to select every event of the handler");
      target = { type: "all" };
    }
  }
  v.throwIfAny();
  return { handler: selection!.handler, target: target! };
}

function encodeCursor(r: DeadLetterRecord): string {
  return Buffer.from(JSON.stringify([r.handler, r.aggregateType, r.aggregateId, r.seq, r.eventId])).toString("base64url");
}

/** The cursor of a page token, or null when the token is not one this service made. */
function decodeCursor(token: string): DeadLetterCursor | null {
  try {
    const [handler, aggregateType, aggregateId, seq, eventId] = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as unknown[];
    if (typeof handler !== "string" || typeof aggregateType !== "string" || typeof aggregateId !== "string" || typeof seq !== "number" || typeof eventId !== "string") return null;
    return { handler, aggregateType, aggregateId, seq, eventId };
  } catch {
    return null;
  }
}

function toCounts(c: WaitingCounts): MessageInitShape<typeof DeadLetterCountsSchema> {
  return { handler: c.handler, deadLettered: BigInt(c.deadLettered), parked: BigInt(c.parked), replayRequested: BigInt(c.replayRequested) };
}

function toDeadLetter(r: DeadLetterRecord): MessageInitShape<typeof DeadLetterSchema> {
  const time = (d: Date | null) => (d === null ? undefined : timestampFromDate(d));
  return {
    handler: r.handler,
    eventId: r.eventId,
    eventType: r.eventType,
    aggregateType: r.aggregateType,
    aggregateId: r.aggregateId,
    sequenceNumber: BigInt(r.seq),
    globalPosition: BigInt(r.globalPosition ?? 0),
    state: STATES[r.state],
    cause: r.cause ?? "",
    attempts: r.attempts,
    firstFailedAt: time(r.firstFailedAt),
    lastFailedAt: time(r.lastFailedAt),
    parkedBehind: r.parkedBehind ?? "",
    replays: r.replays,
    replayRequestedBy: r.replayRequestedBy ?? "",
    replayRequestedAt: time(r.replayRequestedAt),
    resolvedBy: r.resolvedBy ?? "",
    resolutionReason: r.resolutionReason ?? "",
    resolvedAt: time(r.resolvedAt),
    updatedAt: timestampFromDate(r.updatedAt),
  };
}

async function eventStatus(db: Kysely<ConsumerDatabase>, eventId: string, principal: Principal | undefined): Promise<MessageInitShape<typeof EventProcessingStatusSchema>> {
  const records = await findRecords(db, { eventId }, scopeOf(principal));
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

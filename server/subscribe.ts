/**
 * EventStoreService.Subscribe: catch-up from a global position, a caught-up marker, then live
 * events as they commit. A thin layer over the process's shared {@link LogTail}, which reads the
 * commit log once for every subscriber and hands each one its events in position order (R1).
 */
import { create } from "@bufbuild/protobuf";
import { checkAggregateType, checkInstancePart, databaseOf, type EventEnvelope, isErased, type LogTail, type SlotRow, type TailItem, Upcasters, Violations, visibleTo } from "../core/index.js";
import { SubscribeResponseSchema, type SubscribeRequest, type SubscribeResponse } from "../gen/tidemark/v1/event_store_pb.js";
import type { CallContext } from "./grpc/bridge.js";
import type { SubjectKeys } from "./privacy.js";
import { checkSeq } from "./validation.js";

export type { SubscribeResponse };

/**
 * Builds the Subscribe handler over `tail`. `shutdown` aborts at server shutdown: live
 * subscriptions then end cleanly (OK) so the server can stop.
 */
export function subscribeHandler(tail: LogTail, shutdown: AbortSignal, keys: SubjectKeys, upcasters: Upcasters = Upcasters.NONE) {
  // Every live subscriber gets the same envelope object from the tail, so they share one response
  // message, and the bridge encodes it once (encoding a 1 KiB event costs ~45 µs: per subscriber,
  // it was most of what a subscriber cost the server). Subscribers asking for the latest schema
  // share the upcasted one the same way (E2).
  const stored = new WeakMap<EventEnvelope, SubscribeResponse>();
  const latest = new WeakMap<EventEnvelope, SubscribeResponse>();
  const message = (event: EventEnvelope, item: TailItem & { kind: "event" }) => create(SubscribeResponseSchema, { message: { case: "event", value: event }, position: BigInt(item.position) });
  const toResponse = (item: TailItem, latestSchema: boolean): SubscribeResponse | Promise<SubscribeResponse> => {
    if (item.kind === "caught-up") return create(SubscribeResponseSchema, { message: { case: "caughtUp", value: {} }, position: BigInt(item.position) });
    // An event naming a subject is opened for each message, never shared or kept opened: once the
    // subject is forgotten, the next message carries the erasure marker (T5). It is upcast after
    // opening; the erasure marker is never upcast.
    if (item.event.subject !== "") {
      return keys.open(item.event).then((event) => message(latestSchema && !isErased(event) ? upcasters.upcastEnvelope(event) : event, item));
    }
    const responses = latestSchema ? latest : stored;
    let response = responses.get(item.event);
    if (response === undefined) {
      // An event the upcasters cannot bring up to date fails the call (FAILED_PRECONDITION).
      const event = latestSchema ? upcasters.upcastEnvelope(item.event) : item.event;
      response = message(event, item);
      responses.set(item.event, response);
    }
    return response;
  };
  return function subscribe(request: SubscribeRequest, context: CallContext): AsyncIterable<SubscribeResponse> {
    const v = new Violations();
    request.aggregateTypes.forEach((t, i) => v.add(`aggregate_types[${i}]`, checkAggregateType(t)));
    request.databases.forEach((d, i) => v.add(`databases[${i}]`, checkInstancePart(d)));
    if (request.eventTypePrefix.length > 128) v.add("event_type_prefix", "must be at most 128 characters");
    if (request.start.case === undefined) v.add("start", "is required: set after_position or from_end");
    if (request.start.case === "afterPosition") v.add("after_position", checkSeq(request.start.value));
    v.throwIfAny();

    const types = new Set(request.aggregateTypes);
    const prefix = request.eventTypePrefix;
    const databases = new Set(request.databases);
    // With a token, the tail itself skips what the principal may not see (docs/CONTRACT.md T3):
    // another database's events are never encoded for this call, let alone sent.
    const visible = context.principal === undefined ? undefined : visibleTo(context.principal);
    const filter =
      types.size === 0 && prefix === "" && databases.size === 0 && visible === undefined
        ? undefined
        : (row: SlotRow) =>
            (types.size === 0 || types.has(row.aggregateType)) &&
            row.eventType.startsWith(prefix) &&
            (databases.size === 0 || databases.has(databaseOf(row.aggregateId))) &&
            (visible === undefined || visible(row.aggregateType, row.aggregateId));
    const subscription = tail.subscribe({
      after: request.start.case === "afterPosition" ? Number(request.start.value) : "end",
      ...(filter === undefined ? {} : { filter }),
      signal: AbortSignal.any([context.signal, shutdown]),
    });
    // A plain mapping iterator rather than an async generator: one promise per message fewer, on a
    // path that runs once per event and subscriber. Ending the iteration closes the subscription.
    const iterator: AsyncIterator<SubscribeResponse, undefined> = {
      next: () =>
        subscription.next().then((r) => {
          if (r.done) return r;
          const value = toResponse(r.value, request.latestSchema);
          return value instanceof Promise ? value.then((opened) => ({ done: false as const, value: opened })) : { done: false as const, value };
        }),
      return: async () => {
        subscription.close();
        return { done: true, value: undefined };
      },
    };
    return { [Symbol.asyncIterator]: () => iterator };
  };
}

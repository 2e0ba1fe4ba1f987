/**
 * EventStoreService.Subscribe: catch-up from a global position, a caught-up marker, then live
 * events as they commit. A thin layer over the process's shared {@link LogTail}, which reads the
 * commit log once for every subscriber and hands each one its events in position order (R1).
 * Filters (docs/CONTRACT.md A3) become a {@link LogFilter} that the tail pushes down into its
 * reads of the commit log, narrowed by what the token may see (T3); the kind, which the commit log
 * does not hold, is tested on the loaded event.
 */
import { create } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { ALL_DATABASES, checkAggregateType, checkEventType, checkInstancePart, encodeBinary, type EventEnvelope, type LogFilter, type LogTail, type TailItem, Upcasters, Violations } from "../core/index.js";
import { EventKind } from "../gen/tidemark/v1/envelope_pb.js";
import { EventBatchSchema, SubscribeResponseSchema, type SubscribeRequest, type SubscribeResponse } from "../gen/tidemark/v1/event_store_pb.js";
import { type CallContext, encodedAs } from "./grpc/bridge.js";
import type { Limits } from "./limits.js";
import type { SubjectKeys } from "./privacy.js";
import { checkSeq } from "./validation.js";

export type { SubscribeResponse };

/**
 * Builds the Subscribe handler over `tail`. `shutdown` aborts at server shutdown: live
 * subscriptions then end cleanly (OK) so the server can stop. `limits.maxSubscribeFilterEntries`
 * bounds each list of a filter. Events naming a subject are opened with `keys` (T5); with
 * `latest_schema`, events are upcast with `upcasters` (E2).
 */
export function subscribeHandler(tail: LogTail, shutdown: AbortSignal, limits: Pick<Limits, "maxSubscribeFilterEntries">, keys: SubjectKeys, upcasters: Upcasters = Upcasters.NONE) {
  // Every live subscriber gets the same envelope object from the tail, so they share one response
  // message, and the bridge encodes it once (encoding a 1 KiB event costs ~45 µs: per subscriber,
  // it was most of what a subscriber cost the server). Subscribers asking for the latest schema
  // share the upcast envelope the same way (E2). A batch is different for each subscriber, so it is
  // assembled from the shared encoding of each of its events instead.
  const upcast = new WeakMap<EventEnvelope, EventEnvelope>();
  const single = new WeakMap<EventEnvelope, SubscribeResponse>();
  const inBatch = new WeakMap<EventEnvelope, Uint8Array>();
  const marker = (item: Exclude<TailItem, { kind: "event" }>): SubscribeResponse =>
    item.kind === "caught-up"
      ? create(SubscribeResponseSchema, { message: { case: "caughtUp", value: {} }, position: BigInt(item.position) })
      : create(SubscribeResponseSchema, { message: { case: "checkpoint", value: {} }, position: BigInt(item.position) });
  /**
   * The event as it is sent. One naming a subject is opened for each message, never shared or kept
   * opened: once the subject is forgotten, the next message carries the erasure marker (T5). It is
   * upcast after opening; the erasure marker is never upcast. An event the upcasters cannot bring up
   * to date fails the call (FAILED_PRECONDITION).
   */
  const eventOf = (event: EventEnvelope, latestSchema: boolean): EventEnvelope | Promise<EventEnvelope> => {
    if (event.subject !== "") return keys.open(event).then((opened) => (latestSchema ? upcasters.upcastEnvelope(opened) : opened));
    if (!latestSchema) return event;
    let latest = upcast.get(event);
    if (latest === undefined) {
      latest = upcasters.upcastEnvelope(event);
      upcast.set(event, latest);
    }
    return latest;
  };
  /** The one-event message of `event` (as sent), shared by every subscriber that sends it. */
  const singleMessage = (event: EventEnvelope, position: number): SubscribeResponse => {
    let response = single.get(event);
    if (response === undefined) {
      response = create(SubscribeResponseSchema, { message: { case: "event", value: event }, position: BigInt(position) });
      // An opened event is a new object each time: keeping it would keep nothing.
      if (event.subject === "") single.set(event, response);
    }
    return response;
  };
  const toResponse = (item: Extract<TailItem, { kind: "event" }>, latestSchema: boolean): SubscribeResponse | Promise<SubscribeResponse> => {
    const event = eventOf(item.event, latestSchema);
    return event instanceof Promise ? event.then((opened) => singleMessage(opened, item.position)) : singleMessage(event, item.position);
  };
  /** The encoding of a one-event batch: a part of every batch message that holds the event. */
  const partOf = (event: EventEnvelope): Uint8Array => {
    let bytes = inBatch.get(event);
    if (bytes === undefined) {
      bytes = encodeBinary(EventBatchSchema, create(EventBatchSchema, { events: [event] }));
      if (event.subject === "") inBatch.set(event, bytes);
    }
    return bytes;
  };
  const batchMessage = (events: EventEnvelope[], position: number): SubscribeResponse => {
    const parts = new Array<Uint8Array>(events.length);
    for (let i = 0; i < events.length; i++) parts[i] = partOf(events[i]!);
    const response = create(SubscribeResponseSchema, { message: { case: "events", value: { events } }, position: BigInt(position) });
    return encodedAs(response, batchBytes(parts, position));
  };
  /** The batch of `first` and `rest` (events taken after it), at the last one's position. */
  const toBatch = (first: TailItem, rest: readonly TailItem[], latestSchema: boolean): SubscribeResponse | Promise<SubscribeResponse> => {
    const position = rest.length === 0 ? first.position : rest[rest.length - 1]!.position;
    const events = new Array<EventEnvelope | Promise<EventEnvelope>>(rest.length + 1);
    let opening = false;
    for (let i = 0; i <= rest.length; i++) {
      const item = (i === 0 ? first : rest[i - 1]!) as Extract<TailItem, { kind: "event" }>;
      const event = eventOf(item.event, latestSchema);
      if (event instanceof Promise) opening = true;
      events[i] = event;
    }
    return opening ? Promise.all(events).then((ready) => batchMessage(ready, position)) : batchMessage(events as EventEnvelope[], position);
  };
  return function subscribe(request: SubscribeRequest, context: CallContext): AsyncIterable<SubscribeResponse> {
    const kinds = checkSubscribeRequest(request, limits.maxSubscribeFilterEntries);
    const subscription = tail.subscribe({
      after: request.start.case === "afterPosition" ? Number(request.start.value) : "end",
      query: subscribeFilter(request, context),
      ...(kinds === undefined ? {} : { acceptEvent: (event: EventEnvelope) => kinds.has(event.kind) }),
      checkpoints: request.checkpoints,
      signal: AbortSignal.any([context.signal, shutdown]),
    });
    const maxBatch = Math.max(1, request.maxBatch);
    const { latestSchema } = request;
    let ended = false;
    const result = (value: SubscribeResponse | Promise<SubscribeResponse>): IteratorResult<SubscribeResponse, undefined> | Promise<IteratorResult<SubscribeResponse, undefined>> =>
      value instanceof Promise ? value.then((ready) => ({ done: false as const, value: ready })) : { done: false as const, value };
    // A plain mapping iterator rather than an async generator: one promise per message fewer, on a
    // path that runs once per event and subscriber. Ending the iteration closes the subscription.
    const iterator: AsyncIterator<SubscribeResponse, undefined> = {
      next: () => {
        if (ended) {
          subscription.close();
          return Promise.resolve({ done: true, value: undefined });
        }
        return subscription.next().then((r) => {
          if (r.done) return r;
          const item = r.value;
          // stop_at_caught_up: the marker is the last message; the call then ends with OK (A3).
          if (item.kind === "caught-up" && request.stopAtCaughtUp) ended = true;
          if (item.kind !== "event") return { done: false as const, value: marker(item) };
          if (maxBatch === 1) return result(toResponse(item, latestSchema));
          // The first event waited for the tail; the rest of the batch is whatever is ready now.
          const more = subscription.takeEvents(maxBatch - 1);
          return more instanceof Promise ? more.then((rest) => result(toBatch(item, rest, latestSchema))) : result(toBatch(item, more, latestSchema));
        });
      },
      return: async () => {
        subscription.close();
        return { done: true, value: undefined };
      },
    };
    return { [Symbol.asyncIterator]: () => iterator };
  };
}

/**
 * The encoding of a SubscribeResponse at `position` whose `events` batch is made of the encoded
 * single-event batches `parts` (the encodings of a repeated field concatenate): the bytes the
 * encoder writes for that message (position first, as it orders fields by number), without
 * encoding any event again.
 */
export function batchBytes(parts: readonly Uint8Array[], position: number): Buffer {
  let length = 0;
  for (const part of parts) length += part.length;
  const writer = new BinaryWriter();
  if (position !== 0) writer.tag(3, WireType.Varint).uint64(position);
  const head = writer.tag(5, WireType.LengthDelimited).uint32(length).finish();
  return Buffer.concat([head, ...parts], head.length + length);
}

/** Most events one Subscribe message may carry (SubscribeRequest.max_batch). */
export const MAX_BATCH = 1000;

/**
 * Checks a Subscribe request (A2: INVALID_ARGUMENT naming every bad field) and returns the kinds
 * it wants, or undefined for every kind.
 */
export function checkSubscribeRequest(request: SubscribeRequest, maxEntries: number): ReadonlySet<EventKind> | undefined {
  const v = new Violations();
  const lists = { aggregate_types: request.aggregateTypes, databases: request.databases, event_types: request.eventTypes, kinds: request.kinds };
  for (const [field, list] of Object.entries(lists)) {
    if (list.length > maxEntries) v.add(field, `must contain at most ${maxEntries} entries, got ${list.length}`);
  }
  request.aggregateTypes.slice(0, maxEntries).forEach((t, i) => v.add(`aggregate_types[${i}]`, checkAggregateType(t)));
  request.databases.slice(0, maxEntries).forEach((d, i) => v.add(`databases[${i}]`, checkInstancePart(d)));
  request.eventTypes.slice(0, maxEntries).forEach((t, i) => v.add(`event_types[${i}]`, checkEventType(t)));
  request.kinds.slice(0, maxEntries).forEach((k, i) => {
    if (k !== EventKind.DOMAIN && k !== EventKind.COMMAND) v.add(`kinds[${i}]`, `unknown kind ${k}: must be EVENT_KIND_DOMAIN or EVENT_KIND_COMMAND`);
  });
  if (request.aggregateTypePrefix !== "") v.add("aggregate_type_prefix", checkAggregateType(request.aggregateTypePrefix));
  if (request.eventTypePrefix.length > 128) v.add("event_type_prefix", "must be at most 128 characters");
  if (request.start.case === undefined) v.add("start", "is required: set after_position or from_end");
  if (request.start.case === "afterPosition") v.add("after_position", checkSeq(request.start.value));
  if (request.maxBatch > MAX_BATCH) v.add("max_batch", `must be at most ${MAX_BATCH}, got ${request.maxBatch}`);
  v.throwIfAny();
  const kinds = new Set(request.kinds);
  return kinds.size === 0 || kinds.size === 2 ? undefined : kinds;
}

/**
 * The request's filter, narrowed by the caller's token (T3): with a token, only its databases
 * (the guard has refused a requested database it does not reach) and aggregate types under its
 * prefix, so the tail never even loads another tenant's event.
 */
function subscribeFilter(request: SubscribeRequest, context: CallContext): LogFilter {
  const principal = context.principal;
  let databases: readonly string[] | undefined = request.databases.length > 0 ? request.databases : undefined;
  if (databases === undefined && principal !== undefined && !principal.databases.includes(ALL_DATABASES)) databases = principal.databases;
  return {
    ...(databases === undefined ? {} : { databases }),
    ...(request.aggregateTypes.length > 0 ? { aggregateTypes: request.aggregateTypes } : {}),
    aggregateTypePrefixes: [request.aggregateTypePrefix, principal?.aggregateTypePrefix ?? ""],
    ...(request.eventTypes.length > 0 ? { eventTypes: request.eventTypes } : {}),
    eventTypePrefix: request.eventTypePrefix,
  };
}

import { create } from "@bufbuild/protobuf";
import { checkAggregateId, checkAggregateType, inSpan, Upcasters, Violations } from "../../core/index.js";
import { EventStoreService, ReadStreamResponseSchema } from "../../gen/tidemark/v1/event_store_pb.js";
import type { EventStore } from "../event-store.js";
import type { HandlersOf } from "../grpc/bridge.js";
import type { Limits } from "../limits.js";
import type { SubjectKeys } from "../privacy.js";
import { checkSeq, validateAppend, validateAppendToStreams } from "../validation.js";

/** The Subscribe handler (server/subscribe.ts): a layer over the process's shared log tail. */
export type SubscribeHandler = HandlersOf<typeof EventStoreService>["subscribe"];

/** gRPC handlers of tidemark.v1.EventStoreService. */
export function eventStoreHandlers(
  store: EventStore,
  limits: Limits,
  subscribe: SubscribeHandler,
  keys: SubjectKeys,
  upcasters: Upcasters = Upcasters.NONE,
): HandlersOf<typeof EventStoreService> {
  return {
    async appendEvents(request, context) {
      const input = await keys.seal(await inSpan("tidemark.validate", async () => validateAppend(request, limits, context.metadata["traceparent"])));
      const out = await store.append(input);
      return {
        replayed: out.replayed,
        events: out.events.map((e) => ({
          eventId: e.eventId,
          sequenceNumber: BigInt(e.seq),
          globalPosition: BigInt(e.position),
        })),
      };
    },

    async *readStream(request) {
      const v = new Violations();
      v.add("aggregate_type", checkAggregateType(request.aggregateType));
      v.add("aggregate_id", checkAggregateId(request.aggregateId));
      v.add("from_seq", checkSeq(request.fromSeq));
      v.throwIfAny();
      // NOT_FOUND for a stream that never existed, before the first message.
      await store.head(request.aggregateType, request.aggregateId);
      for await (const event of store.read(request.aggregateType, request.aggregateId, Number(request.fromSeq), request.maxCount)) {
        // The stored event is never changed: opening and upcasting make a new envelope for this
        // response (T5, E2); the erasure marker is never upcast.
        const opened = await keys.open(event);
        yield create(ReadStreamResponseSchema, { event: request.latestSchema ? upcasters.upcastEnvelope(opened) : opened });
      }
    },

    async getStreamHead(request) {
      const v = new Violations();
      v.add("aggregate_type", checkAggregateType(request.aggregateType));
      v.add("aggregate_id", checkAggregateId(request.aggregateId));
      v.throwIfAny();
      const state = await store.head(request.aggregateType, request.aggregateId);
      return {
        head: BigInt(state.resolved),
        allocated: BigInt(state.allocated),
        globalPosition: BigInt(state.globalPosition),
      };
    },

    subscribe,

    async appendToStreams(request, context) {
      const validated = await inSpan("tidemark.validate", async () => validateAppendToStreams(request, limits, context.metadata["traceparent"]));
      // Each stream's events naming a subject are sealed as AppendEvents seals them (T5).
      const streams = await Promise.all(validated.streams.map((stream, i) => keys.seal(stream, `streams[${i}].events`)));
      const input = { ...validated, streams };
      const out = await store.appendToStreams(input);
      return {
        replayed: out.replayed,
        streams: out.streams.map((events, i) => ({
          aggregateType: input.streams[i]!.aggregateType,
          aggregateId: input.streams[i]!.aggregateId,
          events: events.map((e) => ({ eventId: e.eventId, sequenceNumber: BigInt(e.seq), globalPosition: BigInt(e.position) })),
        })),
      };
    },
  };
}

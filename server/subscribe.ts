/**
 * EventStoreService.Subscribe: catch-up from a global position, a caught-up marker, then live
 * events as they commit. Positions are assigned in commit order under the commit counter's lock,
 * so reading "position > p" in order never skips an event that becomes visible later (R1).
 */
import type { Kysely } from "kysely";
import type { CommitListener } from "../core/commit-listener.js";
import type { WriteSideTables } from "../core/db/schema.js";
import { Violations } from "../core/errors.js";
import { committedAfter, lastPosition } from "../core/event-log.js";
import { checkAggregateType } from "../core/ids.js";
import type { SubscribeRequest, SubscribeResponse } from "../gen/tidemark/v1/event_store_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { SubscribeResponseSchema } from "../gen/tidemark/v1/event_store_pb.js";
import type { CallContext } from "./grpc/bridge.js";
import type { EventStore } from "./event-store.js";
import { checkSeq } from "./validation.js";

const PAGE = 256;
/** Longest wait for a notification before looking anyway (the polling fallback). */
const POLL_MS = 1000;

export type { SubscribeResponse };

/** Builds the Subscribe handler. */
export function subscribeHandler(
  db: Kysely<WriteSideTables>,
  store: EventStore,
  listener: CommitListener,
  /** Aborted at shutdown: live subscriptions then end cleanly so the server can stop. */
  shutdown: AbortSignal,
) {
  return async function* subscribe(
    request: SubscribeRequest,
    context: CallContext,
  ): AsyncGenerator<MessageInitShape<typeof SubscribeResponseSchema>> {
    const v = new Violations();
    request.aggregateTypes.forEach((t, i) => v.add(`aggregate_types[${i}]`, checkAggregateType(t)));
    if (request.eventTypePrefix.length > 128) v.add("event_type_prefix", "must be at most 128 characters");
    if (request.start.case === undefined) v.add("start", "is required: set after_position or from_end");
    if (request.start.case === "afterPosition") v.add("after_position", checkSeq(request.start.value));
    v.throwIfAny();

    const types = new Set(request.aggregateTypes);
    const prefix = request.eventTypePrefix;
    let position = request.start.case === "afterPosition" ? Number(request.start.value) : await lastPosition(db);
    let caughtUp = false;
    const stop = AbortSignal.any([context.signal, shutdown]);
    while (!stop.aborted) {
      const rows = await committedAfter(db, position, PAGE);
      for (const row of rows) {
        position = row.globalPosition!;
        if (types.size > 0 && !types.has(row.aggregateType)) continue;
        if (!row.eventType.startsWith(prefix)) continue;
        const event = await store.load(row);
        yield { message: { case: "event", value: event }, position: BigInt(position) };
      }
      if (rows.length === PAGE) continue;
      if (!caughtUp) {
        caughtUp = true;
        yield { message: { case: "caughtUp", value: {} }, position: BigInt(position) };
      }
      await listener.wait(POLL_MS, stop);
    }
  };
}

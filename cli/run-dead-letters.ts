/**
 * `tidemark dead-letters list|show|replay|discard`: an operator's view of dead-lettered and parked
 * events over ProcessingService (docs/CONSUMERS.md "Dead letters, parking and redrive"). A replay
 * returns once the events are marked; `--wait` then watches them until the handler's consumer has
 * recorded an outcome for each.
 */
import { toJsonString } from "@bufbuild/protobuf";
import {
  type DeadLetter,
  type DeadLetterSelection,
  GetDeadLetterResponseSchema,
  ListDeadLettersResponseSchema,
  ProcessingService,
  ProcessingState,
} from "../gen/tidemark/v1/processing_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { DeadLetterSelectionSchema } from "../gen/tidemark/v1/processing_pb.js";
import { createClient } from "../server/client.js";
import { UsageError, type ParsedCommand } from "./args.js";
import type { Io } from "./io.js";
import { clientOptions, grpcFailure, iso, serverAddress } from "./run-client.js";

/** States a replay is still under way in. */
const REPLAYING = new Set([ProcessingState.REPLAY_REQUESTED, ProcessingState.PROCESSING, ProcessingState.RETRY_SCHEDULED]);

/** `tidemark dead-letters <action> ...`. */
export async function runDeadLetters(cmd: ParsedCommand, io: Io): Promise<number> {
  const [action, handler, eventId] = cmd.positionals as [string, string | undefined, string | undefined];
  if (!["list", "show", "replay", "discard"].includes(action)) throw new UsageError(`unknown action ${JSON.stringify(action)}: list, show, replay or discard`);
  const address = serverAddress(cmd);
  const client = createClient(ProcessingService, address, clientOptions(cmd));
  const json = cmd.values["json"] === true;
  try {
    switch (action) {
      case "list": {
        const aggregate = aggregateOf(cmd);
        let pageToken = "";
        for (;;) {
          const page = await client.listDeadLetters({ handler: handler ?? "", ...(aggregate === undefined ? {} : { aggregate }), pageToken, includeReplaying: cmd.values["replaying"] === true });
          if (json) io.out(`${toJsonString(ListDeadLettersResponseSchema, page, { useProtoFieldName: true })}\n`);
          else {
            if (pageToken === "") for (const c of page.counts) io.out(`${c.handler}: ${c.deadLettered} dead-lettered, ${c.parked} parked, ${c.replayRequested} replay requested\n`);
            for (const d of page.deadLetters) io.out(`${line(d)}\n`);
          }
          if (page.nextPageToken === "") return 0;
          pageToken = page.nextPageToken;
        }
      }
      case "show": {
        if (handler === undefined || eventId === undefined) throw new UsageError("show needs <handler> <event_id>");
        const shown = await client.getDeadLetter({ handler, eventId });
        if (json) {
          io.out(`${toJsonString(GetDeadLetterResponseSchema, shown, { useProtoFieldName: true })}\n`);
          return 0;
        }
        const d = shown.deadLetter!;
        io.out(`${line(d)}\n`);
        if (d.firstFailedAt !== undefined) io.out(`  first failure ${iso(d.firstFailedAt)}  last failure ${d.lastFailedAt === undefined ? "-" : iso(d.lastFailedAt)}\n`);
        if (d.parkedBehind !== "") io.out(`  parked behind ${d.parkedBehind}\n`);
        if (d.replays > 0) io.out(`  replays ${d.replays}, last requested by ${d.replayRequestedBy || "-"} at ${d.replayRequestedAt === undefined ? "-" : iso(d.replayRequestedAt)}\n`);
        if (d.resolvedAt !== undefined) io.out(`  discarded by ${d.resolvedBy || "-"} at ${iso(d.resolvedAt)}: ${d.resolutionReason}\n`);
        if (d.cause !== "") io.out(`  cause: ${d.cause}\n`);
        if (shown.messageValue.length > 0) io.out(`  message: ${Buffer.from(shown.messageValue).toString("utf8")}\n`);
        return 0;
      }
      case "replay": {
        const selection = selectionOf(cmd, handler, eventId);
        const { eventIds } = await client.replayDeadLetters({ selection });
        io.err(`replay requested for ${eventIds.length} event(s) of ${selection.handler}\n`);
        for (const id of eventIds) io.out(`${id}\n`);
        if (cmd.values["wait"] !== true) return 0;
        // Watch until the handler's consumer recorded an outcome for every event (it may dead-letter again).
        let failed = 0;
        for (const id of eventIds) {
          for (;;) {
            const { deadLetter } = await client.getDeadLetter({ handler: selection.handler!, eventId: id });
            if (!REPLAYING.has(deadLetter!.state)) {
              if (deadLetter!.state !== ProcessingState.DONE && deadLetter!.state !== ProcessingState.SKIPPED_STALE) failed += 1;
              io.err(`${id}: ${stateName(deadLetter!.state)}\n`);
              break;
            }
            await new Promise((resolve) => setTimeout(resolve, 250));
          }
        }
        return failed === 0 ? 0 : 1;
      }
      default: {
        const reason = typeof cmd.values["reason"] === "string" ? cmd.values["reason"] : "";
        const { eventIds } = await client.discardDeadLetters({ selection: selectionOf(cmd, handler, eventId), reason });
        io.err(`discarded ${eventIds.length} event(s)\n`);
        for (const id of eventIds) io.out(`${id}\n`);
        return 0;
      }
    }
  } catch (e) {
    if (e instanceof UsageError) throw e;
    return grpcFailure(e, address, io);
  } finally {
    client.close();
  }
}

function aggregateOf(cmd: ParsedCommand): { aggregateType: string; aggregateId: string } | undefined {
  const type = cmd.values["type"];
  const id = cmd.values["aggregate"];
  if (type === undefined && id === undefined) return undefined;
  if (typeof type !== "string" || typeof id !== "string") throw new UsageError("--type and --aggregate go together");
  return { aggregateType: type, aggregateId: id };
}

function selectionOf(cmd: ParsedCommand, handler: string | undefined, eventId: string | undefined): MessageInitShape<typeof DeadLetterSelectionSchema> & Pick<DeadLetterSelection, "handler"> {
  if (handler === undefined) throw new UsageError("missing <handler>");
  const aggregate = aggregateOf(cmd);
  const all = cmd.values["all"] === true;
  if ([eventId !== undefined, aggregate !== undefined, all].filter(Boolean).length !== 1) throw new UsageError("name exactly one of <event_id>, --type/--aggregate or --all");
  if (eventId !== undefined) return { handler, target: { case: "eventId", value: eventId } };
  if (aggregate !== undefined) return { handler, target: { case: "aggregate", value: aggregate } };
  return { handler, target: { case: "all", value: true } };
}

function stateName(state: ProcessingState): string {
  return (ProcessingState[state] ?? String(state)).toLowerCase();
}

function line(d: DeadLetter): string {
  return [
    d.handler,
    `${d.aggregateType}/${d.aggregateId}#${d.sequenceNumber}`,
    stateName(d.state).padEnd(16),
    `attempts ${d.attempts}`,
    d.lastFailedAt === undefined ? "" : `last failure ${iso(d.lastFailedAt)}`,
    `event_id=${d.eventId}`,
    d.cause === "" ? "" : `cause: ${d.cause.split("\n")[0]}`,
  ].filter((p) => p !== "").join("  ");
}

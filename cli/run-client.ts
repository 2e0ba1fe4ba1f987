/**
 * The client commands: `stream`, `tail` and `status` talk gRPC to a running server (an embedded
 * data directory cannot be opened by a second process), with the typed client of server/grpc.
 */
import { toJsonString } from "@bufbuild/protobuf";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { encodeEnvelope, type EventEnvelope, parse } from "../core/client.js";
import { EventKind } from "../gen/tidemark/v1/envelope_pb.js";
import { EventStoreService } from "../gen/tidemark/v1/event_store_pb.js";
import { GetProcessingStatusResponseSchema, ProcessingService, ProcessingState, type GetProcessingStatusResponse } from "../gen/tidemark/v1/processing_pb.js";
import { readFileSync } from "node:fs";
import { type ClientOptions, createClient, grpc } from "../server/client.js";
import { nameFlags, UsageError, type ParsedCommand } from "./args.js";
import type { Io } from "./io.js";

const DEFAULT_ADDR = "127.0.0.1:50051";

/** The server address from --addr / TIDEMARK_GRPC_ADDR, validated. */
export function serverAddress(cmd: ParsedCommand): string {
  const raw = cmd.env["TIDEMARK_GRPC_ADDR"] ?? "";
  if (raw === "") return DEFAULT_ADDR;
  try {
    return parse.hostPort(raw);
  } catch (e) {
    throw new UsageError(nameFlags(`TIDEMARK_GRPC_ADDR: ${(e as Error).message}`, cmd.flagOf));
  }
}

/**
 * TLS and the token from --tls-ca/--tls-cert/--tls-key/--token (TIDEMARK_TLS_CA, TIDEMARK_TLS_CERT,
 * TIDEMARK_TLS_KEY, TIDEMARK_TOKEN): TLS when a CA or a client certificate is given.
 */
export function clientOptions(cmd: ParsedCommand): ClientOptions {
  const file = (variable: string): Buffer | undefined => {
    const path = cmd.env[variable] ?? "";
    if (path === "") return undefined;
    try {
      return readFileSync(path);
    } catch (e) {
      throw new UsageError(nameFlags(`${variable}: cannot read ${path}: ${(e as Error).message}`, cmd.flagOf));
    }
  };
  const ca = file("TIDEMARK_TLS_CA");
  const cert = file("TIDEMARK_TLS_CERT");
  const key = file("TIDEMARK_TLS_KEY");
  if ((cert === undefined) !== (key === undefined)) throw new UsageError(nameFlags("TIDEMARK_TLS_CERT: a client certificate needs its key (TIDEMARK_TLS_KEY), and the other way round", cmd.flagOf));
  const token = cmd.env["TIDEMARK_TOKEN"] ?? "";
  const tls = ca === undefined && cert === undefined ? undefined : { ...(ca === undefined ? {} : { ca }), ...(cert === undefined ? {} : { cert, key: key! }) };
  return { ...(tls === undefined ? {} : { tls }), ...(token === "" ? {} : { token }) };
}

function count(cmd: ParsedCommand, option: string, min: number): number | undefined {
  const raw = cmd.values[option];
  if (typeof raw !== "string") return undefined;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`--${option} must be an integer of at least ${min}, got ${JSON.stringify(raw)}`);
  return n;
}

/** `tidemark stream <aggregate_type> <aggregate_id>`. */
export async function runStream(cmd: ParsedCommand, io: Io): Promise<number> {
  const [aggregateType, aggregateId] = cmd.positionals as [string, string];
  const fromSeq = count(cmd, "from", 0) ?? 0;
  const maxCount = count(cmd, "max", 1) ?? 0;
  const address = serverAddress(cmd);
  const client = createClient(EventStoreService, address, clientOptions(cmd));
  try {
    let n = 0;
    for await (const response of client.readStream({ aggregateType, aggregateId, fromSeq: BigInt(fromSeq), maxCount })) {
      const event = response.event!;
      n += 1;
      io.out(cmd.values["json"] === true ? `${encodeEnvelope(event)}\n` : `${streamLine(event)}\n`);
    }
    if (n === 0 && cmd.values["json"] !== true) io.err(`no events in ${aggregateType}/${aggregateId} from seq ${Math.max(1, fromSeq)}\n`);
    return 0;
  } catch (e) {
    return grpcFailure(e, address, io);
  } finally {
    client.close();
  }
}

/** Most events per Subscribe message `tidemark tail` asks for. */
const TAIL_BATCH = 100;

/** `tidemark tail`. */
export async function runTail(cmd: ParsedCommand, io: Io): Promise<number> {
  const after = count(cmd, "after", 0);
  const limit = count(cmd, "limit", 1);
  const request = tailRequest(cmd);
  const address = serverAddress(cmd);
  const client = createClient(EventStoreService, address, clientOptions(cmd));
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  // Every message carries a resumable position (checkpoints too): the last one is where to resume,
  // or, for a batch, the last event printed from it.
  let reached: bigint | undefined;
  try {
    let n = 0;
    const stream = client.subscribe(
      {
        ...request,
        checkpoints: true,
        // Batches: a long replay takes one message per up to 100 events (about half the time).
        maxBatch: TAIL_BATCH,
        start: after === undefined ? { case: "fromEnd", value: {} } : { case: "afterPosition", value: BigInt(after) },
      },
      { signal: stop.signal },
    );
    for await (const response of stream) {
      if (response.message.case !== "events") reached = response.position;
      if (response.message.case === "caughtUp") {
        io.err(
          request.stopAtCaughtUp
            ? `-- caught up at position ${response.position}; stopping (resume with --after ${response.position})\n`
            : `-- caught up at position ${response.position}; following new commits (Ctrl-C to stop)\n`,
        );
        continue;
      }
      const events = response.message.case === "event" ? [response.message.value] : response.message.case === "events" ? response.message.value.events : [];
      const full = limit !== undefined && n + events.length >= limit;
      for (const event of full ? events.slice(0, limit - n) : events) {
        io.out(cmd.values["json"] === true ? `${encodeEnvelope(event)}\n` : `${tailLine(event)}\n`);
        reached = event.globalPosition;
      }
      n += events.length;
      if (full) {
        stop.abort();
        break;
      }
    }
    return 0;
  } catch (e) {
    if (stop.signal.aborted) return 0;
    return grpcFailure(e, address, io);
  } finally {
    if (stop.signal.aborted && reached !== undefined) io.err(`-- stopped at position ${reached} (resume with --after ${reached})\n`);
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    client.close();
  }
}

/** What `tidemark tail` asks Subscribe for, beside where to start. */
export interface TailFilter {
  readonly aggregateTypes: string[];
  readonly eventTypePrefix: string;
  readonly databases: string[];
  readonly aggregateTypePrefix: string;
  readonly eventTypes: string[];
  readonly kinds: EventKind[];
  readonly stopAtCaughtUp: boolean;
}

const KINDS: Readonly<Record<string, EventKind>> = { domain: EventKind.DOMAIN, command: EventKind.COMMAND };

/** The filter of `tidemark tail`'s flags (pure; the server checks the values, A3). */
export function tailRequest(cmd: ParsedCommand): TailFilter {
  const list = (option: string) => (cmd.values[option] as string[] | undefined) ?? [];
  const kinds = list("kind").map((k) => {
    const kind = KINDS[k];
    if (kind === undefined) throw new UsageError(`--kind must be domain or command, got ${JSON.stringify(k)}`);
    return kind;
  });
  return {
    aggregateTypes: list("type"),
    eventTypePrefix: (cmd.values["prefix"] as string | undefined) ?? "",
    databases: list("database"),
    aggregateTypePrefix: (cmd.values["type-prefix"] as string | undefined) ?? "",
    eventTypes: list("event-type"),
    kinds,
    stopAtCaughtUp: cmd.values["stop-at-caught-up"] === true,
  };
}

/** `tidemark status <id>`. */
export async function runStatus(cmd: ParsedCommand, io: Io): Promise<number> {
  const [id] = cmd.positionals as [string];
  if (cmd.values["event"] === true && cmd.values["command"] === true) throw new UsageError("--event and --command exclude each other");
  const address = serverAddress(cmd);
  const client = createClient(ProcessingService, address, clientOptions(cmd));
  try {
    let response: GetProcessingStatusResponse | undefined;
    if (cmd.values["command"] !== true) {
      try {
        response = await client.getProcessingStatus({ key: { case: "eventId", value: id } });
      } catch (e) {
        // Not an event id the store or any handler knows: it may be a command id.
        if (cmd.values["event"] === true || (e as { code?: number }).code !== grpc.status.NOT_FOUND) throw e;
      }
    }
    response ??= await client.getProcessingStatus({ key: { case: "commandId", value: id } });
    if (cmd.values["json"] === true) {
      io.out(`${toJsonString(GetProcessingStatusResponseSchema, response, { useProtoFieldName: true })}\n`);
      return response.events.length === 0 ? 1 : 0;
    }
    if (response.events.length === 0) {
      io.err(`nothing known about ${JSON.stringify(id)}: not an event id of the store, and no handler has seen events of a command with that id (yet)\n`);
      return 1;
    }
    for (const event of response.events) {
      io.out(`event ${event.eventId}  ${event.eventType}  ${event.aggregateType}/${event.aggregateId}  seq ${event.sequenceNumber}  position ${event.globalPosition}\n`);
      if (event.handlers.length === 0) io.out("  (no handler has seen it yet)\n");
      for (const h of event.handlers) {
        const parts = [`  ${h.handler.padEnd(24)} ${(ProcessingState[h.state] ?? String(h.state)).padEnd(15)}`, `attempts ${h.attempts}`];
        if (h.updatedAt !== undefined) parts.push(`updated ${iso(h.updatedAt)}`);
        if (h.nextAttemptAt !== undefined) parts.push(`next attempt ${iso(h.nextAttemptAt)}`);
        if (h.leaseExpiresAt !== undefined) parts.push(`lease until ${iso(h.leaseExpiresAt)}`);
        if (h.lastError !== "") parts.push(`last error: ${h.lastError}`);
        io.out(`${parts.join("  ")}\n`);
      }
    }
    for (const c of response.handlerCounts) {
      if (c.deadLettered + c.parked + c.replayRequested > 0n) io.out(`${c.handler}: ${c.deadLettered} dead-lettered, ${c.parked} parked, ${c.replayRequested} replay requested (tidemark dead-letters list ${c.handler})\n`);
    }
    return 0;
  } catch (e) {
    return grpcFailure(e, address, io);
  } finally {
    client.close();
  }
}

export function iso(ts: Timestamp): string {
  return timestampDate(ts).toISOString();
}

function occurred(event: EventEnvelope): string {
  return event.occurredAt === undefined ? "-" : iso(event.occurredAt);
}

function streamLine(event: EventEnvelope): string {
  const command = event.metadata["command_id"];
  return [
    `#${event.sequenceNumber}`,
    `@${event.globalPosition}`,
    occurred(event),
    event.eventType,
    JSON.stringify(event.data ?? {}),
    `event_id=${event.eventId}${command === undefined ? "" : ` command_id=${command}`}`,
  ].join("  ");
}

function tailLine(event: EventEnvelope): string {
  return [`@${event.globalPosition}`, `${event.aggregateType}/${event.aggregateId}#${event.sequenceNumber}`, occurred(event), event.eventType, JSON.stringify(event.data ?? {})].join("  ");
}

/** Prints a failed call as `CODE: message` (with a hint when no server answers); exit code 1. */
export function grpcFailure(e: unknown, address: string, io: Io): number {
  const error = e as { code?: number; details?: string; message?: string };
  if (typeof error.code !== "number") throw e;
  const code = grpc.status[error.code] ?? String(error.code);
  if (error.code === grpc.status.UNAVAILABLE && /connect|No connection|ECONNREFUSED/i.test(error.details ?? "")) {
    io.err(`tidemark: no server answers at ${address} (${code}): start one with \`tidemark start\`, or point --addr / TIDEMARK_GRPC_ADDR at it\n`);
  } else {
    io.err(`tidemark: ${code}: ${error.details ?? error.message}\n`);
  }
  return 1;
}

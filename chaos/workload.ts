/**
 * The writers: many clients over overlapping aggregates through the real gRPC API. Each appends
 * small batches with an exact `expected_seq` (W3, W7) or runs instance commands (create, update
 * with the version it saw), and retries an attempt that may have landed — a timeout, a lost
 * connection, `UNAVAILABLE` — with the same event ids or command id (W4), recording every attempt.
 */
import { EventStoreService } from "../gen/tidemark/v1/event_store_pb.js";
import { InstanceService } from "../gen/tidemark/v1/instance_pb.js";
import { delay } from "./child.js";
import { codeOf, conflictOf, grpc, GrpcClient } from "./grpc-client.js";
import type { Attempt, History, Landed, Op, Outcome } from "./history.js";
import type { Random } from "./random.js";

/** The aggregate type of the generic appends. */
export const CHAOS_TYPE = "ChaosAccount";
/** The database and class of the instances. */
export const INSTANCE_DATABASE = "chaos";
export const INSTANCE_CLASS = "Item";

/** How the writers run. */
export interface WorkloadOptions {
  /** The server's gRPC address, as the clients reach it (through their fault proxy). */
  readonly address: string;
  readonly writers: number;
  /** Generic aggregates the writers share. */
  readonly aggregates: number;
  /** Instances the writers share. */
  readonly instances: number;
  /** Share of operations that are instance commands. */
  readonly instanceShare: number;
  /** Deadline of one attempt. */
  readonly deadlineMs: number;
  /** Unique per run: event ids and command ids start with it. */
  readonly runId: string;
  readonly random: Random;
}

/** The generic aggregate ids of a run. */
export function aggregateIds(options: Pick<WorkloadOptions, "aggregates">): string[] {
  return Array.from({ length: options.aggregates }, (_, i) => `acct-${i}`);
}

/** The instance ids of a run. */
export function instanceIds(options: Pick<WorkloadOptions, "instances">): string[] {
  return Array.from({ length: options.instances }, (_, i) => `item-${i}`);
}

/** The instance aggregate id, `{database}/{class}/{id}`. */
export function instanceAggregateId(instanceId: string): string {
  return `${INSTANCE_DATABASE}/${INSTANCE_CLASS}/${instanceId}`;
}

/** Classifies a failed attempt: definite refusals, and everything that may have landed. */
export function classifyError(error: unknown): { outcome: Outcome; code: string } {
  const code = codeOf(error);
  if (code === undefined) return { outcome: "indeterminate", code: "CLIENT_ERROR" };
  const name = grpc.status[code] ?? String(code);
  // ABORTED, INVALID_ARGUMENT, FAILED_PRECONDITION and NOT_FOUND are answered before anything is
  // reserved (W3, A2). ALREADY_EXISTS cannot happen with unchanged content; should it, the
  // original may exist, so it is not a refusal of what was sent.
  const definite = code === grpc.status.ABORTED || code === grpc.status.INVALID_ARGUMENT || code === grpc.status.FAILED_PRECONDITION || code === grpc.status.NOT_FOUND;
  return { outcome: definite ? "fail" : "indeterminate", code: name };
}

/** Runs the writers of one round and records into `history`. */
export class Workload {
  private readonly client: GrpcClient;
  // One cache of heads for all writers, as in one client application: conflicts then come from
  // true races between writers, not from every writer's own stale view.
  private readonly beliefs = new Map<string, number>();
  private counter = 0;

  constructor(
    private readonly options: WorkloadOptions,
    private readonly history: History,
  ) {
    this.client = new GrpcClient(options.address);
  }

  /**
   * Runs every writer until `stopAt`, then lets operations in flight retry until `finishBy`
   * (after the heal) so that as many as possible end definitely.
   */
  async run(round: number, stopAt: number, finishBy: number): Promise<void> {
    await Promise.all(Array.from({ length: this.options.writers }, (_, w) => this.writer(round, w, stopAt, finishBy)));
  }

  close(): void {
    this.client.close();
  }

  private async writer(round: number, w: number, stopAt: number, finishBy: number): Promise<void> {
    const random = this.options.random.fork(`writer-${round}-${w}`);
    const beliefs = this.beliefs;
    const aggregates = aggregateIds(this.options);
    const instances = instanceIds(this.options);
    while (Date.now() < stopAt) {
      const instance = random.chance(this.options.instanceShare);
      const id = instance ? instanceAggregateId(random.pick(instances)) : random.pick(aggregates);
      // Like a real client, a refused write is made again against the head the refusal reported
      // (a new operation: new event ids), a few times before the writer moves on.
      for (let tries = 0; tries < 3 && Date.now() < stopAt; tries++) {
        const k = ++this.counter;
        const last = instance ? await this.instanceCommand(round, w, k, id, beliefs, random, finishBy) : await this.append(round, w, k, id, beliefs, random, finishBy);
        if (last?.code !== "ABORTED") break;
      }
    }
  }

  private async append(round: number, w: number, k: number, aggregateId: string, beliefs: Map<string, number>, random: Random, finishBy: number): Promise<Attempt | undefined> {
    const expected = beliefs.get(aggregateId) ?? 0;
    const size = random.int(1, 5);
    const eventIds = Array.from({ length: size }, (_, i) => `${this.options.runId}-w${w}-${k}-${i}`);
    const op: Op = { id: eventIds[0]!, kind: "append", round, writer: w, aggregateType: CHAOS_TYPE, aggregateId, expected, eventIds };
    this.history.ops.push(op);
    const request = {
      aggregateType: CHAOS_TYPE,
      aggregateId,
      expectation: { case: "expectedSeq" as const, value: BigInt(expected) },
      actor: `chaos-w${w}`,
      events: eventIds.map((eventId, i) => ({ eventId, eventType: "ChaosNoted", data: { writer: w, op: k, index: i, round } })),
    };
    const last = await this.attempts(op, random, finishBy, async () => {
      const out = await this.client.unary(EventStoreService.method.appendEvents, request, this.options.deadlineMs);
      return { landed: out.events.map((e) => ({ eventId: e.eventId, seq: Number(e.sequenceNumber), position: Number(e.globalPosition) })), replayed: out.replayed };
    });
    if (last?.outcome === "ok") beliefs.set(aggregateId, last.landed!.at(-1)!.seq);
    else if (last?.actual !== undefined) beliefs.set(aggregateId, last.actual);
    return last;
  }

  private async instanceCommand(round: number, w: number, k: number, aggregateId: string, beliefs: Map<string, number>, random: Random, finishBy: number): Promise<Attempt | undefined> {
    const instanceId = aggregateId.slice(`${INSTANCE_DATABASE}/${INSTANCE_CLASS}/`.length);
    const expected = beliefs.get(aggregateId) ?? 0;
    const commandId = `${this.options.runId}-w${w}-${k}`;
    // Now and then a create of an instance that exists, as a client that lost track would send:
    // it must be refused (W3: a create expects 0), never appended after the first creation.
    const kind = expected === 0 || random.chance(0.1) ? "create" : "update";
    const op: Op = { id: commandId, kind, round, writer: w, aggregateType: "Instance", aggregateId, expected: kind === "create" ? 0 : expected, eventIds: [], commandId };
    this.history.ops.push(op);
    const base = { database: INSTANCE_DATABASE, className: INSTANCE_CLASS, instanceId, commandId, actor: `chaos-w${w}` };
    const last = await this.attempts(op, random, finishBy, async () => {
      const out =
        kind === "create"
          ? await this.client.unary(InstanceService.method.createInstance, { ...base, properties: { writer: w, op: k, round } }, this.options.deadlineMs)
          : await this.client.unary(InstanceService.method.updateInstance, { ...base, expectedSeq: BigInt(expected), properties: { writer: w, op: k, round } }, this.options.deadlineMs);
      const r = out.result!;
      return { landed: [{ eventId: r.eventId, seq: Number(r.sequenceNumber), position: Number(r.globalPosition) }], replayed: r.replayed };
    });
    if (last?.outcome === "ok") beliefs.set(aggregateId, last.landed![0]!.seq);
    else if (last?.actual !== undefined) beliefs.set(aggregateId, last.actual);
    return last;
  }

  /** Sends until a definite answer or `finishBy`, recording each attempt; returns the last. */
  private async attempts(op: Op, random: Random, finishBy: number, send: () => Promise<{ landed: Landed[]; replayed: boolean }>): Promise<Attempt | undefined> {
    let last: Attempt | undefined;
    for (let n = 1; ; n++) {
      const sentAt = Date.now();
      try {
        const { landed, replayed } = await send();
        last = { op: op.id, attempt: n, sentAt, answeredAt: Date.now(), outcome: "ok", landed, replayed };
      } catch (e) {
        const { outcome, code } = classifyError(e);
        const actual = conflictOf(e)?.actualSeq;
        last = {
          op: op.id,
          attempt: n,
          sentAt,
          answeredAt: Date.now(),
          outcome,
          code,
          message: String((e as Error).message ?? e).slice(0, 300),
          ...(actual === undefined ? {} : { actual: Number(actual) }),
        };
      }
      this.history.attempts.push(last);
      if (last.outcome !== "indeterminate" || Date.now() >= finishBy) return last;
      // Back off before the retry: the fault that ate this attempt is usually still there.
      await delay(Math.min(finishBy - Date.now(), random.int(50, 200) * Math.min(n, 5)));
    }
  }
}

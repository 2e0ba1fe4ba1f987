/**
 * A message source held in memory, for driving the consumer runtime without Kafka or the relay:
 * hand-made messages in ordered partitions with offsets from 0, delivered in batches one at a time
 * per partition as the MessageSource port promises, redelivering what a batch left unresolved.
 * It records what the runtime did with it — every commit, pause and resume, and every batch with
 * how far it was resolved — so tests can check offsets (C5) and back-pressure.
 */
import { encodeEnvelope, type EventEnvelope } from "../../core/envelope.js";
import type { MessageSource, SourceEvents, SourceMessage } from "../../core/index.js";

/** One thing the runtime did with the source, in order. */
export type SourceAction =
  | { readonly type: "commit"; readonly partition: number; readonly offset: number }
  | { readonly type: "pause" | "resume"; readonly partition: number };

/** One batch handed to the runtime: its first offset, its length, and how many it took. */
export interface Delivery {
  readonly partition: number;
  readonly from: number;
  readonly count: number;
  readonly resolved: number;
}

interface Partition {
  readonly messages: SourceMessage[];
  /** Index of the next message to deliver (the last resolved offset + 1). */
  position: number;
  paused: boolean;
  /** "Next offset to read", as committed. */
  committed: number | undefined;
}

/** What a test may tune. */
export interface InMemorySourceOptions {
  readonly topic?: string;
  /** Messages per batch (default 100). */
  readonly batchSize?: number;
  /** Runs before each commit is recorded, e.g. to check what the registry holds at that moment. */
  readonly beforeCommit?: (partition: number, offset: number) => Promise<void>;
}

/** A {@link MessageSource} over partitions held in memory. */
export class InMemorySource implements MessageSource {
  readonly description = "in-memory source";
  readonly topic: string;
  readonly actions: SourceAction[] = [];
  readonly deliveries: Delivery[] = [];
  private readonly partitions = new Map<number, Partition>();
  private readonly wakers = new Set<() => void>();
  private events: SourceEvents | undefined;
  private loops: Array<Promise<void>> = [];
  private stopped = false;

  constructor(private readonly options: InMemorySourceOptions = {}) {
    this.topic = options.topic ?? "test.events";
  }

  /** Appends envelopes (as the relay encodes them) to a partition; returns their offsets. */
  add(partition: number, envelopes: readonly EventEnvelope[]): number[] {
    return this.addRaw(partition, envelopes.map((e) => ({ value: Buffer.from(encodeEnvelope(e), "utf8"), headers: { event_id: e.eventId } })));
  }

  /** Appends messages as given (any value, e.g. one that does not decode); returns their offsets. */
  addRaw(partition: number, messages: ReadonlyArray<Omit<SourceMessage, "offset">>): number[] {
    const p = this.partition(partition);
    const offsets = messages.map((m) => {
      const offset = p.messages.length;
      p.messages.push({ ...m, offset: String(offset) });
      return offset;
    });
    if (this.events !== undefined && this.loops.length < this.partitions.size) this.startLoops();
    this.wake();
    return offsets;
  }

  /** The committed "next offset to read" of a partition, if any commit came. */
  committed(partition: number): number | undefined {
    return this.partitions.get(partition)?.committed;
  }

  /** How many actions of `type` the runtime took on `partition`. */
  count(type: SourceAction["type"], partition: number): number {
    return this.actions.filter((a) => a.type === type && a.partition === partition).length;
  }

  async start(events: SourceEvents): Promise<void> {
    this.events = events;
    this.startLoops();
  }

  async commit(topic: string, partition: number, offset: string): Promise<void> {
    if (topic !== this.topic) throw new Error(`commit to unknown topic ${topic}`);
    await this.options.beforeCommit?.(partition, Number(offset));
    const p = this.partition(partition);
    p.committed = Math.max(p.committed ?? 0, Number(offset));
    this.actions.push({ type: "commit", partition, offset: Number(offset) });
  }

  pause(_topic: string, partition: number): void {
    this.partition(partition).paused = true;
    this.actions.push({ type: "pause", partition });
  }

  resume(_topic: string, partition: number): void {
    this.partition(partition).paused = false;
    this.actions.push({ type: "resume", partition });
    this.wake();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake();
    await Promise.all(this.loops);
  }

  private partition(number: number): Partition {
    let p = this.partitions.get(number);
    if (p === undefined) {
      p = { messages: [], position: 0, paused: false, committed: undefined };
      this.partitions.set(number, p);
    }
    return p;
  }

  private startLoops(): void {
    for (const number of [...this.partitions.keys()].slice(this.loops.length)) this.loops.push(this.deliver(number));
  }

  /** Delivers one partition's batches, one at a time, as a consumer group does. */
  private async deliver(number: number): Promise<void> {
    const p = this.partition(number);
    const batchSize = this.options.batchSize ?? 100;
    while (!this.stopped) {
      if (p.paused || p.position >= p.messages.length) {
        await new Promise<void>((resolve) => this.wakers.add(resolve));
        continue;
      }
      const from = p.position;
      const messages = p.messages.slice(from, from + batchSize);
      let resolved = from;
      await this.events!.onBatch({
        topic: this.topic,
        partition: number,
        messages,
        resolveOffset: (offset) => {
          resolved = Math.max(resolved, Number(offset) + 1);
        },
        isRunning: () => !this.stopped,
        isStale: () => false,
      });
      this.deliveries.push({ partition: number, from, count: messages.length, resolved: resolved - from });
      // What the runtime did not take (it paused mid-batch) is delivered again after resume.
      p.position = resolved;
      // Took nothing without pausing (it is stopping): deliver again only once something changes.
      if (resolved === from && !p.paused) await new Promise<void>((resolve) => this.wakers.add(resolve));
    }
  }

  private wake(): void {
    const wakers = [...this.wakers];
    this.wakers.clear();
    for (const wake of wakers) wake();
  }
}

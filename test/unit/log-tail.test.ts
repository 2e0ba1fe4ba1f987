/**
 * The shared log tail (core/log-tail.ts) over an in-memory commit log: one read per commit for
 * every attached subscriber, catch-up alone then a join, each hand-over (from the history, ahead of
 * a lagging tail, onto an idle tail) without gap or repeat, detaching a subscriber that does not
 * keep up and its return, per-subscriber filters, one shared envelope per event, and ending.
 */
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { EventEnvelopeSchema, type EventEnvelope } from "../../core/envelope.js";
import type { SlotRow } from "../../core/event-log.js";
import { createLogger } from "../../core/log.js";
import { sleepUntilWoken } from "../../core/sleep.js";
import type { CommitWake as TailWake } from "../../core/commit-log-reader.js";
import { rowMatcher, type LogFilter } from "../../core/log-filter.js";
import { LogTail, type LogTailSettings, type TailItem, type TailSource, type TailSubscription } from "../../core/log-tail.js";
import { waitFor } from "../helpers/wait-for.js";

/** A commit log in memory; a test may hold the next read at a gate. */
class MemoryLog implements TailSource {
  readonly rows: SlotRow[] = [];
  reads = 0;
  loads = 0;
  /** The next read waits for this (then it is cleared). */
  gate: Promise<void> | undefined;
  /** Resolved when a read reaches the gate. */
  atGate: (() => void) | undefined;
  failLoadAt: number | undefined;
  failReads = 0;

  append(count: number, aggregateType = "A", eventType = "E"): number {
    for (let i = 0; i < count; i++) {
      const position = this.rows.length + 1;
      this.rows.push({
        logId: position,
        eventId: `e${position}`,
        aggregateType,
        aggregateId: "x",
        seq: position,
        eventType,
        contentHash: "",
        orderingKey: null,
        state: "committed",
        globalPosition: position,
        batchFirstSeq: position,
        batchLastSeq: position,
        committedAt: null,
        segment: position,
        segmentOffset: 0,
        segmentLength: 1,
        chainHash: null,
      });
    }
    return this.rows.length;
  }

  async committedAfter(after: number, limit: number): Promise<readonly SlotRow[]> {
    this.reads += 1;
    const gate = this.gate;
    const answer = () => this.rows.filter((r) => r.globalPosition! > after).slice(0, limit);
    if (gate !== undefined) {
      this.gate = undefined;
      const early = this.answerAtGate ? answer() : undefined;
      this.atGate?.();
      await gate;
      if (early !== undefined) return early;
    }
    if (this.failReads > 0) {
      this.failReads -= 1;
      throw new Error("database unavailable");
    }
    return answer();
  }

  async load(row: SlotRow): Promise<EventEnvelope> {
    this.loads += 1;
    if (row.globalPosition === this.failLoadAt) throw new Error(`object of ${row.eventId} is missing`);
    return create(EventEnvelopeSchema, { eventId: row.eventId, eventType: row.eventType, aggregateType: row.aggregateType, globalPosition: BigInt(row.globalPosition!) });
  }

  async lastPosition(): Promise<number> {
    return this.rows.length;
  }

  /** Reads of {@link committedMatching}: a filtered subscriber alone reads only through it. */
  matchingReads = 0;

  async committedMatching(after: number, upTo: number, filter: LogFilter, limit: number): Promise<readonly SlotRow[]> {
    this.matchingReads += 1;
    const matches = rowMatcher(filter);
    return this.rows.filter((r) => r.globalPosition! > after && r.globalPosition! <= upTo && matches(r)).slice(0, limit);
  }

  /** The held read answers with the rows the log held when it reached the gate (its query ran then). */
  answerAtGate = false;

  /**
   * Holds the next read until the returned function is called; `reached` resolves when it is held.
   * With `answered`, the read's answer is what the log held when it was held: commits made while it
   * is held are not in it.
   */
  hold(answered = false): { reached: Promise<void>; release: () => void } {
    let release!: () => void;
    this.answerAtGate = answered;
    this.gate = new Promise<void>((r) => (release = r));
    const reached = new Promise<void>((r) => (this.atGate = r));
    return { reached, release };
  }
}

/** Commit announcements by hand; no polling (the tail's poll interval is an hour). */
class ManualWake implements TailWake {
  lastAnnounced = 0;
  private readonly waiters = new Set<() => void>();

  wait(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    return sleepUntilWoken(this.waiters, timeoutMs, signal);
  }

  announce(position: number): void {
    this.lastAnnounced = position;
    for (const wake of [...this.waiters]) wake();
  }
}

function setup(settings: Partial<LogTailSettings> = {}) {
  const log = new MemoryLog();
  const wake = new ManualWake();
  const tail = new LogTail(log, wake, createLogger("log-tail-test", "silent"), { pollMs: 3_600_000, ...settings });
  tail.start();
  const commit = (count: number, aggregateType?: string, eventType?: string) => wake.announce(log.append(count, aggregateType, eventType));
  return { log, wake, tail, commit };
}

/** Reads `n` items. */
async function take(s: TailSubscription, n: number): Promise<TailItem[]> {
  const out: TailItem[] = [];
  while (out.length < n) {
    const next = await s.next();
    if (next.done) throw new Error(`ended after ${out.length} items`);
    out.push(next.value);
  }
  return out;
}

/** Items as short strings: `3` for the event at position 3, `^3` for caught up at 3. */
const show = (items: readonly TailItem[]) => items.map((i) => (i.kind === "event" ? `${i.position}` : i.kind === "checkpoint" ? `~${i.position}` : `^${i.position}`));
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => `${from + i}`);

describe("log tail", () => {
  it("feeds every attached subscriber from one read per commit", async () => {
    const { log, tail, commit } = setup();
    log.append(5);
    const subs = Array.from({ length: 10 }, () => tail.subscribe({ after: "end" }));
    for (const s of subs) expect(show(await take(s, 1))).toEqual(["^5"]);
    // The first subscriber to ask for more joins the idle tail, the rest join it.
    const pending = subs.map((s) => take(s, 3));
    await waitFor(() => tail.live === 10);
    const readsBefore = log.reads;
    commit(2);
    await waitFor(() => log.reads === readsBefore + 1);
    commit(1);
    for (const items of await Promise.all(pending)) expect(show(items)).toEqual(["6", "7", "8"]);
    expect(log.reads - readsBefore).toBeLessThanOrEqual(3);
    expect(tail.stats.ownReads).toBe(0);
    await tail.stop();
  });

  it("catches up alone in pages, then joins the tail with one caught-up marker", async () => {
    const { log, tail, commit } = setup({ pageSize: 10, bufferSize: 10, historySize: 4 });
    log.append(95);
    const s = tail.subscribe({ after: 0 });
    expect(show(await take(s, 96))).toEqual([...range(1, 95), "^95"]);
    const more = take(s, 3);
    await waitFor(() => tail.live === 1);
    commit(3);
    expect(show(await more)).toEqual(["96", "97", "98"]);
    expect(tail.stats.ownReads).toBe(10);
    await tail.stop();
  });

  it("joins from the tail's history when the tail has moved on during a read of its own", async () => {
    // A buffer that holds everything: nobody is detached here.
    const { log, tail, commit } = setup({ pageSize: 10, bufferSize: 50, historySize: 10 });
    const live = tail.subscribe({ after: "end" });
    await take(live, 1);
    const liveItems = take(live, 45);
    await waitFor(() => tail.live === 1);
    commit(25);
    // Reads: at the join, then 1–10, 11–20, 21–25; the history keeps the last ones only.
    await waitFor(() => log.reads >= 4);
    const late = tail.subscribe({ after: 0 });
    const held = log.hold();
    const lateItems = take(late, 46);
    await held.reached;
    // While the late subscriber's first read is held, the tail reads on.
    commit(20);
    await waitFor(() => tail.stats.tailReads >= 7);
    held.release();
    expect(show(await liveItems)).toEqual(range(1, 45));
    // Pages of its own until it is within the history, then the history, then the marker.
    expect(show(await lateItems)).toEqual([...range(1, 45), "^45"]);
    expect(tail.stats.ownReads).toBe(4);
    expect(tail.stats.detached).toBe(0);
    expect(tail.live).toBe(2);
    await tail.stop();
  });

  it("never tells a joining subscriber it caught up below a commit made before its call", async () => {
    // The tail stands at the end it last read (3); 4–6 are committed, their wake-up never seen (and
    // the tail polls once an hour): it reads again at once for the subscriber whose marker it withholds.
    const { log, tail, commit } = setup({ pageSize: 10 });
    const first = tail.subscribe({ after: "end" });
    await take(first, 1);
    const firstItems = take(first, 6);
    await waitFor(() => tail.live === 1);
    commit(3);
    await waitFor(() => log.reads >= 2);
    log.append(3);
    const late = tail.subscribe({ after: 2 });
    // Its marker may come only after 4–6, once the tail has read them.
    expect(show(await take(late, 5))).toEqual(["3", "4", "5", "6", "^6"]);
    expect(show(await firstItems)).toEqual(range(1, 6));
    await tail.stop();
  });

  it("never takes a read that began before a subscriber's call for its end, even one it joined ahead of (A5)", async () => {
    // The tail's read of 4–5 has run; 6 commits (and is acknowledged) before the call, at 5.
    const { log, wake, tail } = setup({ pageSize: 10 });
    log.append(3);
    const first = tail.subscribe({ after: "end" });
    await take(first, 1);
    const firstItems = take(first, 2);
    await waitFor(() => tail.live === 1);
    const held = log.hold(true);
    wake.announce(log.append(2));
    await held.reached;
    const committed = log.append(1);
    const late = tail.subscribe({ after: 5 });
    const lateItems = take(late, 2);
    await waitFor(() => tail.live === 2);
    held.release();
    // The page of 4–5 has been handed out: it ended short, but it is not the late one's end.
    expect(show(await firstItems)).toEqual(["4", "5"]);
    wake.announce(committed);
    expect(show(await lateItems)).toEqual(["6", "^6"]);
    expect(show(await take(first, 1))).toEqual(["6"]);
    await tail.stop();
  });

  it("joins ahead of a tail whose read is in flight, and skips what it already has", async () => {
    const { log, tail, wake } = setup({ pageSize: 10 });
    const first = tail.subscribe({ after: "end" });
    await take(first, 1);
    const firstItems = take(first, 6);
    await waitFor(() => tail.live === 1);
    const held = log.hold();
    wake.announce(log.append(6));
    await held.reached;
    // The tail is reading from 0; a subscriber at 3 joins at once.
    const ahead = tail.subscribe({ after: 3 });
    const aheadItems = take(ahead, 4);
    await waitFor(() => tail.live === 2);
    held.release();
    expect(show(await firstItems)).toEqual(range(1, 6));
    expect(show(await aheadItems)).toEqual(["4", "5", "6", "^6"]);
    expect(tail.stats.ownReads).toBe(0);
    await tail.stop();
  });

  it("detaches a subscriber that does not keep up, lets it catch up alone, and takes it back", async () => {
    // No history: coming back takes a read of its own.
    const { tail, commit } = setup({ pageSize: 4, bufferSize: 4, historySize: 0 });
    const slow = tail.subscribe({ after: 0 });
    const fast = tail.subscribe({ after: 0 });
    expect(show(await take(slow, 1))).toEqual(["^0"]);
    expect(show(await take(fast, 1))).toEqual(["^0"]);
    // The slow one asks for one more item, then for nothing: its queue fills up.
    const slowFirst = take(slow, 1);
    let fastItems = take(fast, 3);
    await waitFor(() => tail.live === 2);
    commit(3);
    expect(show(await fastItems)).toEqual(["1", "2", "3"]);
    expect(show(await slowFirst)).toEqual(["1"]);
    fastItems = take(fast, 3);
    commit(3);
    expect(show(await fastItems)).toEqual(["4", "5", "6"]);
    // 2–5 filled its queue; 6 did not fit.
    expect(tail.stats.detached).toBe(1);
    expect(tail.live).toBe(1);
    expect(tail.catchingUp).toBe(1);
    // What it had queued, then its own read of the rest; no second marker.
    expect(show(await take(slow, 5))).toEqual(range(2, 6));
    const slowMore = take(slow, 2);
    const fastMore = take(fast, 2);
    await waitFor(() => tail.live === 2);
    commit(2);
    expect(show(await slowMore)).toEqual(["7", "8"]);
    expect(show(await fastMore)).toEqual(["7", "8"]);
    expect(tail.stats.ownReads).toBe(3);
    await tail.stop();
  });

  it("applies each subscriber's filter, live and alone, while its position moves past the rest", async () => {
    const { log, tail, commit } = setup();
    log.append(3, "A", "Made");
    log.append(3, "B", "Fixed");
    const onlyA = tail.subscribe({ after: 0, filter: (row) => row.aggregateType === "A" });
    const onlyFixed = tail.subscribe({ after: 0, filter: (row) => row.eventType.startsWith("Fix") });
    expect(show(await take(onlyA, 4))).toEqual(["1", "2", "3", "^6"]);
    expect(show(await take(onlyFixed, 4))).toEqual(["4", "5", "6", "^6"]);
    const a = take(onlyA, 1);
    const fixed = take(onlyFixed, 2);
    await waitFor(() => tail.live === 2);
    commit(2, "B", "Fixed");
    commit(1, "A", "Made");
    expect(show(await a)).toEqual(["9"]);
    expect(show(await fixed)).toEqual(["7", "8"]);
    await tail.stop();
  });

  it("loads each event once for every subscriber; a failed load fails the subscribers that wanted it", async () => {
    const { log, tail, commit } = setup();
    const subs = [tail.subscribe({ after: "end" }), tail.subscribe({ after: "end" })];
    for (const s of subs) await take(s, 1);
    let pending = subs.map((s) => take(s, 1));
    await waitFor(() => tail.live === 2);
    commit(1);
    const [one, two] = await Promise.all(pending);
    expect((one![0] as { event: EventEnvelope }).event).toBe((two![0] as { event: EventEnvelope }).event);
    expect(log.loads).toBe(1);

    log.failLoadAt = 2;
    pending = subs.map((s) => take(s, 1));
    commit(1);
    for (const p of pending) await expect(p).rejects.toThrow(/missing/);
    expect(tail.live).toBe(0);
    // The object is back: a new subscriber gets the event (from the tail's history).
    log.failLoadAt = undefined;
    const again = tail.subscribe({ after: 1 });
    expect(show(await take(again, 2))).toEqual(["2", "^2"]);
    await tail.stop();
  });

  it("takes what is ready after an event, in order, up to a marker, loading a page read alone together", async () => {
    const { log, tail, commit } = setup({ pageSize: 10, bufferSize: 20, historySize: 10 });
    log.append(25);
    const s = tail.subscribe({ after: 0, acceptEvent: (e) => e.eventId !== "e4" });
    /** A batch as a consumer makes one: one item from next, then what takeEvents gives. */
    const batch = async (max: number) => {
      const first = await s.next();
      if (first.done) throw new Error("ended");
      return show([first.value, ...(first.value.kind === "event" ? await s.takeEvents(max - 1) : [])]);
    };
    // Catch-up alone, pages of 10. Up to 4 loaded (e4 among them, filtered out): 3 events, not more.
    expect(await batch(4)).toEqual(["1", "2", "3"]);
    const loads = log.loads;
    const pending = s.takeEvents(100);
    // The rest of the page, loaded together (up to 16 at once), before any is taken; never across
    // a page (it does not wait for a read).
    expect(pending).toBeInstanceOf(Promise);
    expect(log.loads - loads).toBe(6);
    expect(show(await pending)).toEqual(range(5, 10));
    expect(await batch(100)).toEqual(range(11, 20));
    expect(await batch(100)).toEqual(range(21, 25));
    // The marker is a message of its own.
    expect(await batch(100)).toEqual(["^25"]);
    expect(s.takeEvents(100)).toEqual([]);
    // Live: a commit is handed over at once, so the batch holds it all; loaded by the tail already.
    const live = batch(100);
    await waitFor(() => tail.live === 1);
    commit(7);
    expect(await live).toEqual(range(26, 32));
    await tail.stop();
    expect(s.takeEvents(100)).toEqual([]);
  });

  it("retries a failed read of the log without losing an event", async () => {
    const { log, tail, commit } = setup();
    const s = tail.subscribe({ after: "end" });
    await take(s, 1);
    const items = take(s, 2);
    await waitFor(() => tail.live === 1);
    log.failReads = 1;
    commit(2);
    expect(show(await items)).toEqual(["1", "2"]);
    await tail.stop();
  });

  it("ends subscriptions on abort and on stop", async () => {
    const { tail } = setup();
    const controller = new AbortController();
    const aborted = tail.subscribe({ after: "end", signal: controller.signal });
    const stopped = tail.subscribe({ after: "end" });
    await take(aborted, 1);
    await take(stopped, 1);
    const abortedNext = aborted.next();
    const stoppedNext = stopped.next();
    await waitFor(() => tail.live === 2);
    controller.abort();
    expect(await abortedNext).toEqual({ done: true, value: undefined });
    expect(tail.live).toBe(1);
    await tail.stop();
    expect(await stoppedNext).toEqual({ done: true, value: undefined });
    expect(await tail.subscribe({ after: 0 }).next()).toEqual({ done: true, value: undefined });
    expect(tail.live + tail.catchingUp).toBe(0);
  });

  it("pushes a filter down into windowed reads and checkpoints the positions it skips (A3)", async () => {
    const { log, tail } = setup({ scanWindow: 10, checkpointPositions: 10 });
    log.append(4);
    log.append(1, "A", "R");
    log.append(39);
    log.append(1, "A", "R");
    log.append(5);
    const filtered = tail.subscribe({ after: 0, query: { eventTypes: ["R"] }, checkpoints: true });
    // Event 5, a checkpoint once 10 positions have passed since the last item (one per window
    // here), event 45, caught up at the end.
    expect(show(await take(filtered, 6))).toEqual(["5", "~20", "~30", "~40", "45", "^50"]);
    expect(log.reads).toBe(0);
    expect(log.matchingReads).toBe(5);
    // Without asking for checkpoints: only the events and the marker.
    const quiet = tail.subscribe({ after: 0, query: { eventTypes: ["R"] } });
    expect(show(await take(quiet, 3))).toEqual(["5", "45", "^50"]);
    // An event filter on the loaded envelope (the kind, in the server) drops what it refuses.
    const loaded = tail.subscribe({ after: 0, acceptEvent: (e) => e.eventType === "R", checkpoints: true });
    const items: TailItem[] = [];
    while (items.at(-1)?.kind !== "caught-up") items.push(...(await take(loaded, 1)));
    expect(show(items).filter((i) => !i.startsWith("~"))).toEqual(["5", "45", "^50"]);
    const checkpoints = items.filter((i) => i.kind === "checkpoint").map((i) => i.position);
    expect(checkpoints.length).toBeGreaterThanOrEqual(3);
    expect(checkpoints).toEqual([...checkpoints].sort((a, b) => a - b));
    await tail.stop();
  });

  it("refuses a history larger than the buffer", () => {
    expect(() => new LogTail(new MemoryLog(), new ManualWake(), createLogger("log-tail-test", "silent"), { bufferSize: 4, historySize: 8 })).toThrow(RangeError);
  });
});

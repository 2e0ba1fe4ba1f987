/**
 * Load generators. `closedLoop` keeps `concurrency` operations in flight for a fixed time (the
 * maximum rate at that concurrency); `openLoop` starts operations at a fixed rate whatever their
 * latency (half-load figures), measuring latency from each operation's intended start so a stall
 * is not hidden (no coordinated omission).
 */
import { Histogram } from "./histogram.js";

/** What one measured run produced. */
export interface LoadResult {
  /** Operations that completed inside the measured window. */
  readonly ops: number;
  /** Units the operations reported (events, messages, objects). */
  readonly units: number;
  /** Units of every operation that finished, inside the window or not (for CPU per unit). */
  readonly totalUnits: number;
  readonly errors: number;
  /** Open loop only: starts skipped because `maxInFlight` operations were still running. */
  readonly dropped: number;
  /** First distinct error messages, for the report. */
  readonly errorSamples: readonly string[];
  readonly windowMs: number;
  /** Units per second over the measured window. */
  readonly rate: number;
  /** Latency of each operation, in ms. */
  readonly latency: Histogram;
}

/** An operation: resolves with the number of units it did (default 1). */
export type Operation = (worker: number, iteration: number) => Promise<number | void>;

class Tally {
  ops = 0;
  units = 0;
  totalUnits = 0;
  errors = 0;
  dropped = 0;
  readonly errorSamples: string[] = [];
  readonly latency = new Histogram();

  fail(e: unknown): void {
    this.errors += 1;
    const message = e instanceof Error ? e.message : String(e);
    if (this.errorSamples.length < 5 && !this.errorSamples.includes(message)) this.errorSamples.push(message);
  }

  result(windowMs: number): LoadResult {
    return {
      ops: this.ops,
      units: this.units,
      totalUnits: this.totalUnits,
      errors: this.errors,
      dropped: this.dropped,
      errorSamples: this.errorSamples,
      windowMs,
      rate: windowMs > 0 ? (this.units * 1000) / windowMs : 0,
      latency: this.latency,
    };
  }
}

/**
 * Runs `op` in `concurrency` loops for `warmupMs + durationMs`; operations that finish inside the
 * window (after the warm-up) count, whenever they started, so calls slower than the window still
 * show up in the rate. Resolves once every loop has stopped.
 */
export async function closedLoop(options: {
  readonly concurrency: number;
  readonly durationMs: number;
  readonly warmupMs?: number;
  readonly op: Operation;
}): Promise<LoadResult> {
  const tally = new Tally();
  const started = performance.now();
  const windowStart = started + (options.warmupMs ?? 0);
  const windowEnd = windowStart + options.durationMs;
  const loop = async (worker: number): Promise<void> => {
    for (let i = 0; performance.now() < windowEnd; i++) {
      const t0 = performance.now();
      try {
        const result = await options.op(worker, i);
        const units = typeof result === "number" ? result : 1;
        const t1 = performance.now();
        tally.totalUnits += units;
        if (t1 >= windowStart && t1 <= windowEnd) {
          tally.ops += 1;
          tally.units += units;
          tally.latency.record(t1 - t0);
        }
      } catch (e) {
        const t1 = performance.now();
        if (t1 >= windowStart && t1 <= windowEnd) tally.fail(e);
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, (_, w) => loop(w)));
  return tally.result(options.durationMs);
}

/**
 * Starts `op` at `rate` per second for `durationMs` (at most `maxInFlight` at once; beyond that a
 * start is dropped and counted as an error, which means the rate is not sustainable). Latency is
 * measured from the intended start.
 */
export async function openLoop(options: {
  readonly rate: number;
  readonly durationMs: number;
  readonly maxInFlight?: number;
  readonly op: Operation;
  readonly signal?: AbortSignal;
}): Promise<LoadResult> {
  const tally = new Tally();
  const maxInFlight = options.maxInFlight ?? 512;
  const interval = 1000 / options.rate;
  const t0 = performance.now();
  const end = t0 + options.durationMs;
  const running = new Set<Promise<void>>();
  let next = 0;
  while (options.signal?.aborted !== true) {
    const now = performance.now();
    if (now >= end) break;
    while (t0 + next * interval <= now && t0 + next * interval < end) {
      const intended = t0 + next * interval;
      const i = next++;
      if (running.size >= maxInFlight) {
        tally.dropped += 1;
        tally.fail(new Error(`more than ${maxInFlight} operations in flight: rate not sustained`));
        continue;
      }
      const p = options
        .op(0, i)
        .then((result) => {
          const units = typeof result === "number" ? result : 1;
          tally.ops += 1;
          tally.units += units;
          tally.totalUnits += units;
          tally.latency.record(performance.now() - intended);
        })
        .catch((e: unknown) => tally.fail(e))
        .finally(() => running.delete(p));
      running.add(p);
    }
    await sleep(Math.max(1, Math.min(20, t0 + next * interval - performance.now())));
  }
  await Promise.all(running);
  return tally.result(Math.min(options.durationMs, performance.now() - t0));
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` every `intervalMs` until it returns a value, or throws after `timeoutMs`. */
export async function waitUntil<T>(check: () => Promise<T | undefined> | T | undefined, what: string, timeoutMs: number, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

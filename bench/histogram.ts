/**
 * Latency samples in milliseconds with exact percentiles. Every sample is kept (a ten-minute soak at
 * a few thousand per second is a few MB), so p99 is exact rather than bucketed.
 */

/** p50/p90/p99/max of a set of samples, in milliseconds. */
export interface LatencySummary {
  readonly count: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
  readonly mean: number;
}

/** Collects latency samples (ms) and reports percentiles (nearest-rank). */
export class Histogram {
  private values: number[] = [];
  private sorted = true;

  record(ms: number): void {
    this.values.push(ms);
    this.sorted = false;
  }

  get count(): number {
    return this.values.length;
  }

  /** The nearest-rank percentile `p` (0–100); NaN when empty. */
  percentile(p: number): number {
    if (this.values.length === 0) return Number.NaN;
    if (!this.sorted) {
      this.values.sort((a, b) => a - b);
      this.sorted = true;
    }
    const rank = Math.min(this.values.length, Math.max(1, Math.ceil((p / 100) * this.values.length)));
    return this.values[rank - 1]!;
  }

  summary(): LatencySummary {
    const count = this.values.length;
    let total = 0;
    for (const v of this.values) total += v;
    return {
      count,
      p50: this.percentile(50),
      p90: this.percentile(90),
      p99: this.percentile(99),
      max: this.percentile(100),
      mean: count === 0 ? Number.NaN : total / count,
    };
  }

  /** Adds every sample of `other`. */
  merge(other: Histogram): this {
    for (const v of other.values) this.record(v);
    return this;
  }
}

/** The median of a few figures (the upper one of an even count; NaN when empty), for runs repeated a few times. */
export function median(values: readonly number[]): number {
  return values.length === 0 ? Number.NaN : [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
}

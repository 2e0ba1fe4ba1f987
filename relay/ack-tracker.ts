/**
 * The contiguous acknowledged prefix (docs/CONTRACT.md R4): batches are registered in position order when
 * they are sent and may be acknowledged in any order; the checkpoint may only move to the end of the
 * longest run of acknowledged batches that starts at the checkpoint.
 */

/** A sent batch: the positions after `after` up to and including `last`. */
export interface BatchRange {
  readonly after: number;
  readonly last: number;
}

/** Tracks sent batches and yields the contiguous acknowledged prefix. */
export class AckTracker {
  private readonly pending: Array<BatchRange & { acked: boolean }> = [];
  private prefix: number;

  constructor(start: number) {
    this.prefix = start;
  }

  /** End of the contiguous acknowledged prefix: the position the checkpoint may move to. */
  get acknowledged(): number {
    return this.prefix;
  }

  /** Registered batches not yet part of the prefix. */
  get outstanding(): number {
    return this.pending.length;
  }

  /** Registers a batch; it must start where the previous one ended (no position may be passed over). */
  register(range: BatchRange): void {
    const tail = this.pending.length > 0 ? this.pending[this.pending.length - 1]!.last : this.prefix;
    if (range.after !== tail || range.last <= range.after) {
      throw new Error(`batch (${range.after}, ${range.last}] does not continue the sent range at ${tail}`);
    }
    this.pending.push({ ...range, acked: false });
  }

  /** Marks a registered batch acknowledged; returns the (possibly unchanged) prefix end. */
  ack(range: BatchRange): number {
    const entry = this.pending.find((p) => p.after === range.after && p.last === range.last);
    if (entry === undefined) throw new Error(`batch (${range.after}, ${range.last}] was not registered`);
    entry.acked = true;
    while (this.pending.length > 0 && this.pending[0]!.acked) this.prefix = this.pending.shift()!.last;
    return this.prefix;
  }
}

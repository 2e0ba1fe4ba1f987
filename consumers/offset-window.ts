/**
 * Offset bookkeeping of one partition (docs/CONTRACT.md C5). Messages are dispatched in offset order and
 * finish in any order (different aggregates run in parallel); the committable offset only moves
 * over the contiguous prefix whose outcome the registry recorded, so a crash redelivers at most
 * the unfinished tail. Pure: no Kafka here.
 */

/** Offsets of one partition between "dispatched" and "committed". */
export class OffsetWindow {
  // Dispatched, not yet committable offsets in ascending order, with their completion flag.
  private readonly pending: Array<{ offset: bigint; done: boolean }> = [];
  private readonly index = new Map<bigint, { offset: bigint; done: boolean }>();
  private nextDispatch: bigint | undefined;
  private committable: bigint | undefined;

  /** Offsets dispatched and not finished. */
  get inFlight(): number {
    let n = 0;
    for (const entry of this.pending) if (!entry.done) n++;
    return n;
  }

  /** Dispatched entries not yet committable (finished or not): the window's memory footprint. */
  get size(): number {
    return this.pending.length;
  }

  /**
   * Records a fetched message. Returns false for an offset at or below one already dispatched
   * (a refetch after a rebalance or a pause), which the caller must not process twice.
   */
  dispatch(offset: bigint): boolean {
    if (this.nextDispatch !== undefined && offset < this.nextDispatch) return false;
    const entry = { offset, done: false };
    this.pending.push(entry);
    this.index.set(offset, entry);
    this.nextDispatch = offset + 1n;
    return true;
  }

  /** Marks an offset finished (its outcome is in the registry). Unknown offsets are ignored. */
  finish(offset: bigint): void {
    const entry = this.index.get(offset);
    if (entry === undefined) return;
    entry.done = true;
    while (this.pending.length > 0 && this.pending[0]!.done) {
      const head = this.pending.shift()!;
      this.index.delete(head.offset);
      this.committable = head.offset + 1n;
    }
  }

  /**
   * The offset to commit (Kafka's "next offset to read"): one past the last message of the
   * finished prefix, or undefined when that is not beyond `committed` (nothing new to commit).
   */
  commitCandidate(committed: bigint | undefined): bigint | undefined {
    if (this.committable === undefined) return undefined;
    if (committed !== undefined && this.committable <= committed) return undefined;
    return this.committable;
  }

  /** The highest offset dispatched so far, if any. */
  get lastDispatched(): bigint | undefined {
    return this.nextDispatch === undefined ? undefined : this.nextDispatch - 1n;
  }
}

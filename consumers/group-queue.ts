/**
 * Gathers work submitted close together into groups, like a group commit: what arrives in one
 * turn of the event loop — and whatever arrives while the running groups are busy — goes into
 * the next group. At most `parallel` groups run at once, each of at most `maxSize` items.
 */
export class GroupQueue<T, R> {
  private queue: Array<{ readonly item: T; resolve(result: R): void; reject(error: unknown): void }> = [];
  private running = 0;
  private scheduled = false;

  constructor(
    private readonly run: (items: readonly T[]) => Promise<readonly R[]>,
    private readonly maxSize: number,
    private readonly parallel: number,
  ) {}

  /** Resolves with this item's result of the group it ran in, or rejects with the group's failure. */
  submit(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.running >= this.parallel || this.queue.length === 0) return;
    this.scheduled = true;
    // After the current turn, so that everything dispatched from one fetched batch groups together.
    setImmediate(() => {
      this.scheduled = false;
      this.start();
    });
  }

  private start(): void {
    while (this.running < this.parallel && this.queue.length > 0) {
      const group = this.queue.splice(0, this.maxSize);
      this.running += 1;
      this.run(group.map((g) => g.item))
        .then(
          (results) => group.forEach((g, i) => g.resolve(results[i]!)),
          (e: unknown) => group.forEach((g) => g.reject(e)),
        )
        .finally(() => {
          this.running -= 1;
          this.schedule();
        });
    }
  }
}

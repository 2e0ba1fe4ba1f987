/**
 * Runs an async task one at a time and coalesces requests: a request while the task runs makes it
 * run once more when that run ends (however many requests came meanwhile), and settles when the
 * run that covers it has ended. The running state is cleared in the same step that decides to
 * stop, so a request can never fall between "no further run" and "not running any more".
 */
export class Coalescer {
  private running: Promise<void> | undefined;
  private again = false;

  /** `task` returns false to stop even if asked again (its caller arranges a retry). */
  constructor(private readonly task: () => Promise<boolean>) {}

  /** Asks for a run; resolves when a run that started after this request has ended. */
  request(): Promise<void> {
    if (this.running !== undefined) {
      this.again = true;
      return this.running;
    }
    let settle!: () => void;
    const running = new Promise<void>((resolve) => (settle = resolve));
    // Set before the first run starts: a task that finishes without awaiting clears it below.
    this.running = running;
    void (async () => {
      try {
        let proceed: boolean;
        do {
          this.again = false;
          proceed = await this.task().catch(() => false);
        } while (proceed && this.again);
      } finally {
        this.running = undefined;
        settle();
      }
    })();
    return running;
  }
}

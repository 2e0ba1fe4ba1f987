/**
 * Resolves after `ms`, at once when `ms` ≤ 0, or as soon as `signal` aborts (never rejects): waits
 * that stop cleanly, for the relay's and the consumers' retry and poll loops.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0 || signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * Like {@link sleep}, and also resolves when woken: the waiter joins `waiters` until it resolves,
 * and whoever owns the set wakes every waiter by calling each (a commit arrived, a lease changed).
 */
export function sleepUntilWoken(waiters: Set<() => void>, ms: number, signal?: AbortSignal): Promise<void> {
  // An abort that came first would never fire its event again: the wait would last all of `ms`.
  if (signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      waiters.delete(done);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    waiters.add(done);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** Thrown by {@link withDeadline} when the work did not settle in time. */
export class DeadlineExceededError extends Error {
  constructor(
    readonly what: string,
    readonly ms: number,
  ) {
    super(`${what} did not settle within ${ms} ms`);
    this.name = "DeadlineExceededError";
  }
}

/**
 * Settles as `work` does, or rejects with {@link DeadlineExceededError} after `ms`: a bound on a
 * client library's call that can hang (kafkajs's connect and disconnect have). The work itself is
 * not cancelled; a late rejection of it is swallowed, and the caller abandons what it used.
 */
export function withDeadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new DeadlineExceededError(what, ms)), ms);
    work.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

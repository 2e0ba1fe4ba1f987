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

/** The waits every loop stops with: an abort ends them at once, also one that came before the wait. */
import { describe, expect, it } from "vitest";
import { sleep, sleepUntilWoken } from "../../core/sleep.js";

describe("sleep and sleepUntilWoken", () => {
  it("resolve at once for a signal aborted before the wait began", async () => {
    const controller = new AbortController();
    controller.abort();
    const started = performance.now();
    await sleep(3_600_000, controller.signal);
    await sleepUntilWoken(new Set(), 3_600_000, controller.signal);
    // Far below the hour either would otherwise wait (the test would time out first).
    expect(performance.now() - started).toBeLessThan(3_600_000);
  });

  it("resolve when woken, and leave the waiter set", async () => {
    const waiters = new Set<() => void>();
    const waiting = sleepUntilWoken(waiters, 3_600_000);
    expect(waiters.size).toBe(1);
    for (const wake of [...waiters]) wake();
    await waiting;
    expect(waiters.size).toBe(0);
  });
});

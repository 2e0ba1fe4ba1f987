import { describe, expect, it } from "vitest";
import { Coalescer } from "../../consumers/coalescer.js";

describe("Coalescer (offset commits)", () => {
  it("runs once more for requests that arrive while it runs, however many", async () => {
    let runs = 0;
    let release!: () => void;
    const coalescer = new Coalescer(async () => {
      runs += 1;
      if (runs === 1) await new Promise<void>((resolve) => (release = resolve));
      return true;
    });
    const first = coalescer.request();
    const during = [coalescer.request(), coalescer.request(), coalescer.request()];
    release();
    await Promise.all([first, ...during]);
    expect(runs).toBe(2);
  });

  it("never loses a request made in the same turn the last run ends", async () => {
    // The lost-commit race: a request that arrives after the run decided to stop, before it
    // counted as stopped, must start a run of its own.
    let runs = 0;
    let finishTurn!: () => void;
    const coalescer = new Coalescer(async () => {
      runs += 1;
      return true;
    });
    const ended = coalescer.request().then(() => {
      finishTurn();
    });
    await new Promise<void>((resolve) => {
      finishTurn = resolve;
    });
    await ended;
    // The same microtask turn in which the first run's promise settled.
    await Promise.resolve().then(() => coalescer.request());
    expect(runs).toBe(2);
    // A task that completes without awaiting anything still leaves the runner idle.
    await coalescer.request();
    await coalescer.request();
    expect(runs).toBe(4);
  });

  it("serves a request made in the microtasks right after the last run returned", async () => {
    // Offsets of a whole group finish in one burst of microtasks; a runner that cleared its
    // running state a step after deciding to stop dropped such a request, and the partition's
    // last offsets stayed uncommitted.
    let runs = 0;
    let late!: (request: Promise<void>) => void;
    const lateRequest = new Promise<Promise<void>>((resolve) => (late = resolve));
    const coalescer = new Coalescer(async () => {
      runs += 1;
      await Promise.resolve();
      if (runs === 1) queueMicrotask(() => queueMicrotask(() => late(coalescer.request())));
      return true;
    });
    await coalescer.request();
    // The late request settles only when a run that covers it has ended.
    await (await lateRequest);
    expect(runs).toBe(2);
  });

  it("stops when the task says so, and serves the next request afresh", async () => {
    let runs = 0;
    let release!: () => void;
    const coalescer = new Coalescer(async () => {
      runs += 1;
      if (runs === 1) {
        await new Promise<void>((resolve) => (release = resolve));
        return false; // failed: its caller schedules a retry
      }
      return true;
    });
    const first = coalescer.request();
    const during = coalescer.request();
    release();
    await Promise.all([first, during]);
    expect(runs).toBe(1);
    await coalescer.request();
    expect(runs).toBe(2);
  });

  it("treats a task that throws as failed, and stays usable", async () => {
    let runs = 0;
    const coalescer = new Coalescer(async () => {
      runs += 1;
      if (runs === 1) throw new Error("broker unreachable");
      return true;
    });
    await coalescer.request();
    await coalescer.request();
    expect(runs).toBe(2);
  });
});

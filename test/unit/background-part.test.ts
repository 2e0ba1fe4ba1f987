/**
 * A process's background parts (cli/background-part.ts): a start that fails is tried again
 * and leaves no metrics behind for the next attempt; a configuration error is final; a stop aborts
 * a start in progress, and stops a part that comes up anyway; a running part is stopped once.
 * Also the health state the parts report into: Watch sees every change, nothing is SERVING again
 * after shutdown.
 */
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { Counter, createRegistry, Gauge } from "../../core/metrics.js";
import { ConfigError } from "../../core/settings.js";
import { BackgroundPart } from "../../cli/background-part.js";
import { HealthState, ServingStatus } from "../../server/grpc/health.js";
import { waitFor } from "../helpers/wait-for.js";

const silent = pino({ level: "silent" });

describe("a background part", () => {
  it("retries a failing start with backoff until it runs; only the attempt that ran leaves its metrics", async () => {
    const registry = createRegistry();
    new Counter({ name: "process_total", help: "h", registers: [registry] });
    let attempts = 0;
    let release: (() => void) | undefined;
    const flaky = new BackgroundPart({
      name: "flaky",
      log: silent,
      registry,
      baseDelayMs: 1,
      maxDelayMs: 2,
      start: async (_signal, attemptRegistry) => {
        attempts++;
        // Registered before the failure, as a part's metrics are: the next attempt registers them again.
        const counter = new Counter({ name: "flaky_total", help: "h", registers: [attemptRegistry] });
        if (attempts < 3) throw new Error(`not yet (${attempts})`);
        counter.inc(5);
        return { attempts };
      },
      stop: async () => {},
    });
    // A part starting beside it, still in its attempt while the other one fails and retries.
    const slow = new BackgroundPart({
      name: "slow",
      log: silent,
      registry,
      start: async (_signal, attemptRegistry) => {
        new Gauge({ name: "slow_value", help: "h", registers: [attemptRegistry] });
        await new Promise<void>((resolve) => (release = resolve));
        return "slow";
      },
      stop: async () => {},
    });
    expect(flaky.state).toBe("starting");
    expect(await flaky.started).toEqual({ attempts: 3 });
    expect(flaky.state).toBe("running");
    expect(flaky.failedAttempts).toBe(2);
    expect((flaky.failure as Error).message).toBe("not yet (2)");
    expect(registry.getMetricsAsArray().map((m) => m.name)).toEqual(["process_total", "flaky_total"]);
    expect(await registry.metrics()).toContain("flaky_total 5");
    release!();
    expect(await slow.started).toBe("slow");
    expect(registry.getMetricsAsArray().map((m) => m.name).sort()).toEqual(["flaky_total", "process_total", "slow_value"]);
  });

  it("gives up at once on a configuration error, and on any error when it must not retry", async () => {
    const config = new BackgroundPart({ name: "config", log: silent, start: () => Promise.reject(new ConfigError("bad setting")), stop: async () => {} });
    expect(await config.started).toBeUndefined();
    expect(config.state).toBe("failed");
    expect(config.failure).toBeInstanceOf(ConfigError);
    const once = new BackgroundPart({ name: "once", log: silent, retry: false, start: () => Promise.reject(new Error("down")), stop: async () => {} });
    expect(await once.started).toBeUndefined();
    expect(once.state).toBe("failed");
    expect(once.failedAttempts).toBe(1);
  });

  it("stop aborts a start that waits, and stops a part that comes up anyway", async () => {
    const stopped: string[] = [];
    let release: (() => void) | undefined;
    const stubborn = new BackgroundPart({
      name: "stubborn",
      log: silent,
      // Ignores the signal for a while, then comes up: the part must not be left running.
      start: () => new Promise<string>((resolve) => (release = () => resolve("late"))),
      stop: async (handle) => void stopped.push(handle),
    });
    const polite = new BackgroundPart({
      name: "polite",
      log: silent,
      start: (signal) => new Promise<string>((_, reject) => signal.addEventListener("abort", () => reject(new Error("aborted")), { once: true })),
      stop: async (handle) => void stopped.push(handle),
    });
    await polite.stop();
    expect(polite.state).toBe("stopped");
    expect(await polite.started).toBeUndefined();
    const stopping = stubborn.stop();
    await waitFor(() => release !== undefined, { what: "the stubborn start to begin" });
    release!();
    await stopping;
    expect(await stubborn.started).toBeUndefined();
    expect(stubborn.state).toBe("stopped");
    expect(stopped).toEqual(["late"]);
  });

  it("stops a running part once, however often stop is called", async () => {
    const stopped: number[] = [];
    const part = new BackgroundPart({ name: "running", log: silent, start: async () => 7, stop: async (n) => void stopped.push(n) });
    await part.started;
    await Promise.all([part.stop(), part.stop()]);
    await part.stop();
    expect(stopped).toEqual([7]);
    expect(part.handle).toBeUndefined();
    expect(part.state).toBe("stopped");
  });
});

describe("health state", () => {
  it("streams every change to a watcher, and stays NOT_SERVING after shutdown", async () => {
    const health = new HealthState();
    health.set("tidemark.relay", ServingStatus.NOT_SERVING);
    const watcher = new AbortController();
    const seen: ServingStatus[] = [];
    const watching = (async () => {
      const stream = health.handlers().watch({ service: "tidemark.relay" } as never, { signal: watcher.signal } as never) as AsyncIterable<{ status: ServingStatus }>;
      for await (const update of stream) seen.push(update.status);
    })();
    await waitFor(() => seen.length === 1, { what: "the first status" });
    // Two changes while the stream is suspended: the last one must still arrive.
    health.set("tidemark.relay", ServingStatus.SERVING);
    health.set("tidemark.relay", ServingStatus.NOT_SERVING);
    health.set("tidemark.relay", ServingStatus.SERVING);
    await waitFor(() => seen.at(-1) === ServingStatus.SERVING, { what: "SERVING" });
    health.shutdown();
    await waitFor(() => seen.at(-1) === ServingStatus.NOT_SERVING, { what: "NOT_SERVING after shutdown" });
    health.set("tidemark.relay", ServingStatus.SERVING);
    expect(health.get("tidemark.relay")).toBe(ServingStatus.NOT_SERVING);
    watcher.abort();
    await watching;
    expect(seen[0]).toBe(ServingStatus.NOT_SERVING);
  });
});

/**
 * A part of a process that starts in the background (the relay and the consumers beside a
 * server): its start is tried again with backoff until it runs or the process stops, so a
 * dependency that is not ready — Kafka down, a relay lease or a consumer group still held by a
 * killed process — never keeps the ready parts from serving.
 */
import { performance } from "node:perf_hooks";
import { adoptMetrics, ConfigError, createRegistry, type Logger, type Registry, sleep } from "../core/index.js";

/** Where a background part stands: still starting, running, given up on (a configuration error), or stopped. */
export type PartState = "starting" | "running" | "failed" | "stopped";

/** How to start and stop one background part. */
export interface BackgroundPartOptions<H> {
  /** Names the part in logs, e.g. "relay" or "consumers". */
  readonly name: string;
  /**
   * One attempt; it should give up soon after `signal` aborts (the process is stopping), and
   * register its metrics in `registry`, the attempt's own.
   */
  readonly start: (signal: AbortSignal, registry: Registry) => Promise<H>;
  readonly stop: (handle: H) => Promise<void>;
  readonly log: Logger;
  /**
   * Where the metrics of the attempt that succeeds end up. Each attempt registers in a registry of
   * its own, dropped when it fails: the next attempt registers the same names again, and parts
   * starting side by side never touch each other's metrics.
   */
  readonly registry?: Registry;
  /** Delay after the first failed attempt, doubled after each further one up to `maxDelayMs`. */
  readonly baseDelayMs?: number;
  readonly maxDelayMs?: number;
  /** Try again after a failure (default true); false: the first failure is final (state `failed`). */
  readonly retry?: boolean;
  /** Longest `stop` waits for an attempt that ignores the abort before it gives up on it (default 10 s). */
  readonly abandonAfterMs?: number;
}

/**
 * Starts `options.start` at once and again after each failure (logged with the error and the next
 * delay) until it succeeds or `stop` is called; a ConfigError is never retried (state `failed`,
 * the error in `failure`).
 */
export class BackgroundPart<H> {
  private current: PartState = "starting";
  private running: H | undefined;
  private readonly abort = new AbortController();
  private failures = 0;
  private lastError: unknown;
  private stopping: Promise<void> | undefined;
  /** Resolves with the handle once the part runs, or undefined when it stopped or failed first. */
  readonly started: Promise<H | undefined>;

  constructor(private readonly options: BackgroundPartOptions<H>) {
    this.started = this.run();
  }

  /** The part's state now. */
  get state(): PartState {
    return this.current;
  }

  /** The running part's handle (undefined until it runs). */
  get handle(): H | undefined {
    return this.running;
  }

  /** The part's name, as in the logs. */
  get name(): string {
    return this.options.name;
  }

  /** The error that made the part `failed` (or the latest failed attempt's while it retries). */
  get failure(): unknown {
    return this.lastError;
  }

  /** Failed attempts so far. */
  get failedAttempts(): number {
    return this.failures;
  }

  /** Aborts a start in progress without waiting for it; a running part is left running (see `stop`). */
  cancel(): void {
    this.abort.abort();
  }

  /** Aborts a start in progress, or stops the running part; resolves once it is done (idempotent). */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.abort.abort();
      let timer: NodeJS.Timeout | undefined;
      const abandon = new Promise<"abandoned">((resolve) => (timer = setTimeout(() => resolve("abandoned"), this.options.abandonAfterMs ?? 10_000)));
      const outcome = await Promise.race([this.started, abandon]);
      clearTimeout(timer);
      if (outcome === "abandoned") {
        this.options.log.warn({ part: this.options.name }, `${this.options.name} is still starting after the stop; not waiting for it any longer`);
      } else if (outcome !== undefined) {
        await this.options.stop(outcome);
      }
      this.running = undefined;
      this.current = "stopped";
    })();
    return this.stopping;
  }

  private async run(): Promise<H | undefined> {
    const { options } = this;
    const { signal } = this.abort;
    const began = performance.now();
    for (let attempt = 1; !signal.aborted; attempt++) {
      const attemptRegistry = createRegistry();
      try {
        const handle = await options.start(signal, attemptRegistry);
        if (signal.aborted) {
          // Came up as the process stopped: nobody else will stop it.
          await options.stop(handle).catch((e: unknown) => options.log.warn({ err: e, part: options.name }, "stopping a part that started late failed"));
          break;
        }
        if (options.registry !== undefined) adoptMetrics(attemptRegistry, options.registry);
        this.running = handle;
        this.current = "running";
        options.log.info({ part: options.name, attempts: attempt, afterMs: Math.round(performance.now() - began) }, `${options.name} started`);
        return handle;
      } catch (e) {
        if (signal.aborted) break;
        this.failures++;
        this.lastError = e;
        if (e instanceof ConfigError || options.retry === false) {
          this.current = "failed";
          if (options.retry !== false) options.log.error({ err: e, part: options.name }, `${options.name} cannot start (configuration); not retrying`);
          return undefined;
        }
        const delayMs = Math.min(options.maxDelayMs ?? 5000, (options.baseDelayMs ?? 250) * 2 ** Math.min(attempt - 1, 20));
        options.log.warn({ err: e, part: options.name, attempt, retryInMs: delayMs }, `${options.name} could not start (${describe(e)}); retrying in ${delayMs} ms`);
        await sleep(delayMs, signal);
      }
    }
    this.current = "stopped";
    return undefined;
  }
}

/** The innermost message of an error chain: kafkajs wraps the useful one (ECONNREFUSED …) in its retry errors. */
function describe(e: unknown): string {
  let current: unknown = e;
  for (let depth = 0; depth < 5 && current instanceof Error && current.cause !== undefined; depth++) current = current.cause;
  const inner = current instanceof Error ? current.message : String(current);
  const outer = e instanceof Error ? e.message : String(e);
  return inner === outer ? outer : `${outer}: ${inner}`;
}

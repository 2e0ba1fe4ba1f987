/**
 * Wakes waiters when a commit is announced on the schema's NOTIFY channel (CONTRACT.md R6). One
 * dedicated connection per process; it reconnects after failures, and waiters always have a
 * timeout, so polling takes over while notifications are unavailable.
 */
import pg from "pg";
import { commitChannel } from "./db/database.js";
import type { Logger } from "./log.js";

/** Listens for commits and wakes waiters. */
export class CommitListener {
  private client: pg.Client | undefined;
  private readonly waiters = new Set<() => void>();
  private closed = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  /** Highest position announced so far (0 until the first notification). */
  lastAnnounced = 0;

  constructor(
    private readonly url: string,
    private readonly schema: string,
    private readonly log: Logger,
  ) {}

  /** Connects and starts listening; failures are retried in the background. */
  async start(): Promise<void> {
    await this.connect().catch((e: unknown) => {
      this.log.warn({ err: e }, "commit listener could not connect; polling until it can");
      this.scheduleReconnect();
    });
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({ connectionString: this.url });
    client.on("notification", (msg) => {
      const position = Number(msg.payload ?? 0);
      if (Number.isFinite(position) && position > this.lastAnnounced) this.lastAnnounced = position;
      this.wakeAll();
    });
    client.on("error", (e) => {
      this.log.warn({ err: e }, "commit listener connection lost; reconnecting");
      this.client = undefined;
      client.end().catch(() => {});
      this.wakeAll();
      this.scheduleReconnect();
    });
    await client.connect();
    await client.query(`listen "${commitChannel(this.schema)}"`);
    if (this.closed) {
      await client.end();
      return;
    }
    this.client = client;
    // Anything committed while we were not listening must be looked at.
    this.wakeAll();
  }

  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer !== undefined) return;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.connect().catch(() => this.scheduleReconnect());
    }, 1000);
    this.reconnectTimer.unref();
  }

  /** Resolves at the next commit, after `timeoutMs`, or when `signal` aborts — whichever comes first. */
  wait(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.waiters.add(done);
      signal?.addEventListener("abort", done, { once: true });
    });
  }

  private wakeAll(): void {
    for (const wake of [...this.waiters]) wake();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    this.wakeAll();
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => {});
  }
}

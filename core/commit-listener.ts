/**
 * Wakes waiters when a commit is announced on the schema's NOTIFY channel (docs/CONTRACT.md R6). One
 * dedicated connection per process; it reconnects after failures, and waiters always have a
 * timeout, so polling takes over while notifications are unavailable.
 */
import pg from "pg";
import { commitChannel } from "./db/database.js";
import type { Logger } from "./log.js";
import { sleepUntilWoken } from "./sleep.js";

/** A live LISTEN subscription. */
export interface ListenHandle {
  close(): Promise<void>;
}

/**
 * Opens a LISTEN on `channel`: calls `onNotify` per notification and `onLost` when the subscription
 * breaks (after which the listener reconnects).
 */
export type ListenConnector = (channel: string, onNotify: (payload: string) => void, onLost: (e: unknown) => void) => Promise<ListenHandle>;

/** LISTEN over a dedicated node-postgres connection to `url`. */
export function pgListenConnector(url: string): ListenConnector {
  return async (channel, onNotify, onLost) => {
    const client = new pg.Client({ connectionString: url });
    client.on("notification", (msg) => onNotify(msg.payload ?? ""));
    client.on("error", (e) => {
      client.end().catch(() => {});
      onLost(e);
    });
    await client.connect();
    await client.query(`listen "${channel}"`);
    return { close: () => client.end().catch(() => {}) };
  };
}

/** Listens for commits and wakes waiters. */
export class CommitListener {
  private handle: ListenHandle | undefined;
  private readonly connector: ListenConnector;
  private readonly waiters = new Set<() => void>();
  private closed = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  /** Highest position announced so far (0 until the first notification). */
  lastAnnounced = 0;

  /** `source` is a PostgreSQL URL or a {@link ListenConnector} (e.g. for the embedded database). */
  constructor(
    source: string | ListenConnector,
    private readonly schema: string,
    private readonly log: Logger,
  ) {
    this.connector = typeof source === "string" ? pgListenConnector(source) : source;
  }

  /** Connects and starts listening; failures are retried in the background. */
  async start(): Promise<void> {
    await this.connect().catch((e: unknown) => {
      this.log.warn({ err: e }, "commit listener could not connect; polling until it can");
      this.scheduleReconnect();
    });
  }

  private async connect(): Promise<void> {
    const handle = await this.connector(
      commitChannel(this.schema),
      (payload) => {
        const position = Number(payload);
        if (Number.isFinite(position) && position > this.lastAnnounced) this.lastAnnounced = position;
        this.wakeAll();
      },
      (e) => {
        this.log.warn({ err: e }, "commit listener connection lost; reconnecting");
        this.handle = undefined;
        this.wakeAll();
        this.scheduleReconnect();
      },
    );
    if (this.closed) {
      await handle.close();
      return;
    }
    this.handle = handle;
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
    return sleepUntilWoken(this.waiters, timeoutMs, signal);
  }


  private wakeAll(): void {
    for (const wake of [...this.waiters]) wake();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    this.wakeAll();
    const handle = this.handle;
    this.handle = undefined;
    await handle?.close();
  }
}

/**
 * What a part must close when it stops, closed in the reverse order it was opened: a part that
 * opened a pool, then a client on it, then a server, stops the server first and the pool last.
 * Every process and part registers its resources here instead of keeping its own list.
 */
import type { Logger } from "./log.js";

/** A stack of closers run newest first, once. */
export class Lifecycle {
  private readonly closers: Array<{ readonly name: string; readonly close: () => unknown }> = [];
  private closing: Promise<void> | undefined;

  /** `log` hears about closers that fail (the rest still run). */
  constructor(private readonly log?: Logger) {}

  /** Registers `close` under `name` (the name is for the log). */
  defer(name: string, close: () => unknown): void {
    this.closers.push({ name, close });
  }

  /** Runs every closer once, newest first; a failing one is logged and the others still run. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      while (this.closers.length > 0) {
        const { name, close } = this.closers.pop()!;
        try {
          await close();
        } catch (e) {
          this.log?.warn({ err: e, step: name }, "shutdown step failed");
        }
      }
    })();
    return this.closing;
  }
}

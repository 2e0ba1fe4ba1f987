/**
 * This process's view of the active-relay lease (docs/CONTRACT.md R5). The database decides who holds
 * it (its clock, its row lock); locally the relay only keeps a conservative deadline — measured
 * from before each grant's request was sent, so it ends no later than the database's expiry —
 * and publishes only while enough of it is left for a produce request to settle.
 */
import { performance } from "node:perf_hooks";
import type { Kysely } from "kysely";
import { type Logger, type RelayTables, sleepUntilWoken, withDeadline } from "../core/index.js";
import { acquireLease, releaseLease, renewLease, type LeaseGrant } from "./relay-repository.js";

/** Outcome of a renewal. */
export type RenewOutcome = "renewed" | "lost" | "error";

/** Holds, renews and releases the lease of relay `name`. */
export class RelayLease {
  private current: { token: number; validUntil: number } | undefined;
  private listeners = new Set<() => void>();
  /** Database clock minus local clock, in ms, from the latest grant (for commit-to-ack latency). */
  clockOffsetMs = 0;

  constructor(
    private readonly db: Kysely<RelayTables>,
    readonly name: string,
    readonly holder: string,
    readonly leaseMs: number,
    private readonly log: Logger,
  ) {}

  /** The fencing token while the lease is held, else undefined. */
  get token(): number | undefined {
    return this.current !== undefined && this.remainingMs() > 0 ? this.current.token : undefined;
  }

  /** How long the lease is certainly still ours, in ms (0 when not held). */
  remainingMs(): number {
    if (this.current === undefined) return 0;
    return Math.max(0, this.current.validUntil - performance.now());
  }

  /**
   * Takes the lease when it is free or expired; true when this process now holds it. An attempt
   * that gets no answer within one lease fails (the caller retries); a grant that comes later is
   * not applied, and it lapses in the database within the lease.
   */
  async acquire(): Promise<boolean> {
    const timing = await withDeadline(this.timed((db) => acquireLease(db, this.name, this.holder, this.leaseMs)), this.leaseMs, "acquiring the relay lease");
    if (timing === undefined) return false;
    this.apply(timing);
    this.log.info({ relay: this.name, holder: this.holder, token: timing.grant.token }, "relay lease acquired");
    return true;
  }

  /** Extends the lease; "lost" when another holder took it (this process is fenced out). */
  async renew(): Promise<RenewOutcome> {
    const held = this.current;
    if (held === undefined) return "lost";
    try {
      const timing = await this.timed((db) => renewLease(db, this.name, this.holder, held.token, this.leaseMs));
      // A renewal that returns after the lease was dropped or replaced must not revive it.
      if (this.current?.token !== held.token) return "lost";
      if (timing !== undefined) {
        this.apply(timing);
        return "renewed";
      }
      this.log.warn({ relay: this.name, token: held.token }, "relay lease was taken over; stepping down");
      this.drop();
      return "lost";
    } catch (e) {
      this.log.warn({ err: e, relay: this.name, remainingMs: Math.round(this.remainingMs()) }, "relay lease renewal failed");
      return "error";
    }
  }

  /** Gives the lease up in the database (graceful stop) and forgets it. */
  async release(): Promise<void> {
    const held = this.current;
    this.drop();
    if (held === undefined) return;
    await releaseLease(this.db, this.name, held.token).catch((e: unknown) => this.log.warn({ err: e }, "could not release the relay lease"));
  }

  /** Forgets the lease locally (it expired or was lost). */
  drop(): void {
    this.current = undefined;
    this.notify();
  }

  /** Resolves at the next grant or loss, or after `ms`. */
  waitChange(ms: number, signal?: AbortSignal): Promise<void> {
    return sleepUntilWoken(this.listeners, ms, signal);
  }


  private notify(): void {
    for (const listener of [...this.listeners]) listener();
  }

  private async timed(
    query: (db: Kysely<RelayTables>) => Promise<LeaseGrant | undefined>,
  ): Promise<{ grant: LeaseGrant; sentAt: number; wallSent: number; wallReceived: number } | undefined> {
    const sentAt = performance.now();
    const wallSent = Date.now();
    const grant = await query(this.db);
    if (grant === undefined) return undefined;
    return { grant, sentAt, wallSent, wallReceived: Date.now() };
  }

  private apply(timing: { grant: LeaseGrant; sentAt: number; wallSent: number; wallReceived: number }): void {
    this.clockOffsetMs = timing.grant.dbNow.getTime() - (timing.wallSent + timing.wallReceived) / 2;
    // The database granted leaseMs from a moment after sentAt; 1% covers clock-rate differences.
    this.current = { token: timing.grant.token, validUntil: timing.sentAt + this.leaseMs * 0.99 };
    this.notify();
  }
}

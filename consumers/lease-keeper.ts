/**
 * Keeps the leases of held claims while their transaction runs (docs/CONTRACT.md C1, C4): renews
 * them every heartbeat on the database clock, and ends the work as soon as one is lost (fenced by
 * a newer claim, or expired) or runs out locally. Ending it locally matters: "done" would be
 * refused anyway, and a transaction that outlives its lease must not keep holding a connection
 * (in the embedded mode it holds the only one, and no heartbeat can run until it ends).
 */
import type { Kysely } from "kysely";
import type { ConsumerDatabase, Logger } from "../core/index.js";
import { LeaseLostError } from "./failures.js";
import { renewLeases, type Claim } from "./registry.js";

/** What a lease keeper needs. */
export interface LeaseKeeperOptions {
  /** The handler's name, for messages. */
  readonly name: string;
  readonly db: Kysely<ConsumerDatabase>;
  /** Length of a lease (and of each renewal). */
  readonly leaseMs: number;
  /** Interval of the renewals; below the lease (checked at start-up). */
  readonly heartbeatMs: number;
  readonly log: Logger;
}

/** The leases of claims being kept, until `stop`. */
export interface KeptLease {
  /** Aborted with a LeaseLostError when a lease is lost or runs out, or with the reason given to `abort`. */
  readonly signal: AbortSignal;
  /** Ends the work for another reason (a group over its time budget). */
  abort(reason: unknown): void;
  /**
   * Settles like `work`, or rejects with the signal's reason as soon as it aborts. The work goes
   * on unobserved; its transaction is rolled back, so its later queries fail.
   */
  race<T>(work: Promise<T>): Promise<T>;
  /** Stops renewing (the transaction ended). */
  stop(): void;
}

/** Keeps leases for one handler's claims. */
export class LeaseKeeper {
  constructor(private readonly options: LeaseKeeperOptions) {}

  /**
   * Keeps the leases of `claims` (one event's, or a group's, named `what` in messages), granted by
   * a claim statement sent at `sentAt` (performance.now()): the lease runs out locally at the send
   * time of the claim or of the latest successful renewal, plus the lease.
   */
  keep(claims: readonly Claim[], sentAt: number, what: string): KeptLease {
    const { name, db, leaseMs, heartbeatMs, log } = this.options;
    const lease = new AbortController();
    let expiry: NodeJS.Timeout | undefined;
    const expireAt = (deadline: number) => {
      clearTimeout(expiry);
      expiry = setTimeout(() => lease.abort(new LeaseLostError(`${name}: lease of ${what} ran out before the handler finished`)), Math.max(0, deadline - performance.now()));
    };
    expireAt(sentAt + leaseMs);
    const heartbeat = setInterval(() => {
      const renewedAt = performance.now();
      renewLeases(db, claims, leaseMs).then(
        (count) => {
          if (count < claims.length) lease.abort(new LeaseLostError(`${name}: lease of ${what} lost`));
          else if (!lease.signal.aborted) expireAt(renewedAt + leaseMs);
        },
        // An outage: the next heartbeat tries again; if the lease runs out, "done" is refused.
        (e: unknown) => log.warn({ err: e, lease: what }, "heartbeat failed"),
      );
    }, heartbeatMs);
    return {
      signal: lease.signal,
      abort: (reason) => lease.abort(reason),
      race: (work) => untilAborted(work, lease.signal),
      stop: () => {
        clearInterval(heartbeat);
        clearTimeout(expiry);
      },
    };
  }
}

function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    work.catch(() => {});
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    work.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}

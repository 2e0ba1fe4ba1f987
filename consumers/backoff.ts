/**
 * Exponential backoff with jitter (docs/CONTRACT.md C3; the origin retried `failed` rows at once,
 * weakness 11). Pure: the random source comes in as an argument.
 */

/** Backoff parameters. */
export interface BackoffPolicy {
  /** Delay before the second attempt (default 500 ms). */
  readonly baseMs: number;
  /** Upper bound of any delay (default 60 s). */
  readonly maxMs: number;
  /** Fraction of the delay that is randomised, 0..1 (default 0.2), so retries of many events spread out. */
  readonly jitter: number;
}

/** The defaults of {@link BackoffPolicy}. */
export const DEFAULT_BACKOFF: BackoffPolicy = Object.freeze({ baseMs: 500, maxMs: 60_000, jitter: 0.2 });

/**
 * The delay after the `attempt`-th failed attempt (1-based): base·2^(attempt-1), capped at max, with
 * up to ±jitter/2 of it randomised. Never negative, never above max.
 */
export function backoffDelay(attempt: number, policy: BackoffPolicy = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const exponent = Math.min(Math.max(attempt, 1) - 1, 30);
  const nominal = Math.min(policy.maxMs, policy.baseMs * 2 ** exponent);
  const spread = nominal * policy.jitter * (random() - 0.5);
  return Math.round(Math.min(policy.maxMs, Math.max(0, nominal + spread)));
}

/**
 * What a consumer does next with an event (docs/CONTRACT.md C1–C4), decided from what the registry
 * and the handler said: apply it, skip it as stale, retry it at a given time, dead-letter it,
 * acknowledge it as already finished, wait, claim it again, or pause for an outage. Pure: the
 * clock reading and the random source come in as arguments, and the event processor
 * (event-processor.ts) performs whatever I/O the step asks for.
 */
import { backoffDelay, type BackoffPolicy } from "./backoff.js";
import type { DeadLetterReason } from "./dead-letter.js";
import type { FailureClass } from "./failures.js";

/** How often an event is tried and how the tries are spaced (docs/CONTRACT.md C3). */
export interface AttemptPolicy {
  /** Attempts before an event is dead-lettered as exhausted; takeovers count (C4). */
  readonly maxAttempts: number;
  readonly backoff: BackoffPolicy;
}

/** What the decision reads of a granted claim (a registry `Claim` has these fields). */
export interface ClaimFacts {
  /** Attempts so far, this one included: retries and takeovers count. */
  readonly attempts: number;
  /** The error the previous attempt recorded, if any. */
  readonly lastError: string | null;
}

/** The registry's answer to a claim (a registry `ClaimOutcome` has this shape). */
export type ClaimAnswer<C extends ClaimFacts> =
  | { readonly type: "claimed"; readonly claim: C }
  /** The event already has a final outcome for this handler. */
  | { readonly type: "finished" }
  /** Not now (another holder, a lower seq in flight, a retry not due): ask again after `ms`. */
  | { readonly type: "wait"; readonly ms: number };

/** The registry answered a claim; `undecodable` says why the message is poison, if it is. */
export interface ClaimAnswered<C extends ClaimFacts> {
  readonly type: "claim-answered";
  readonly answer: ClaimAnswer<C>;
  readonly undecodable?: string | undefined;
}

/**
 * Inside the side effect's transaction the event's aggregate watermark was read (C2) and, for a
 * handler that parks, what stands before the event in its aggregate (C8).
 */
export interface WatermarkRead {
  readonly type: "watermark-read";
  readonly seq: number;
  /** The highest seq of the aggregate this handler applied (0 when none). */
  readonly appliedSeq: number;
  /** A lower seq of the aggregate is dead-lettered or parked (absent for a `skip` handler). */
  readonly blockedBy?: string | undefined;
  /** A lower seq of the aggregate waits for its replay (absent for a `skip` handler). */
  readonly replayingBefore?: string | undefined;
}

/** An attempt failed at `at`: how the failure was classified, and its description. */
export interface AttemptFailed {
  readonly type: "attempt-failed";
  /** Attempts so far, the failed one included. */
  readonly attempts: number;
  /** `lease-lost`: the lease ran out or was fenced, and the side effect rolled back (C1). */
  readonly failure: FailureClass | "lease-lost";
  readonly cause: string;
  readonly at: Date;
}

/** Everything the decision is asked about. */
export type Situation<C extends ClaimFacts = ClaimFacts> = ClaimAnswered<C> | WatermarkRead | AttemptFailed;

/** Copy the message to the dead letters, then record `dead_lettered` (C3). */
export interface DeadLetterStep {
  readonly type: "dead-letter";
  readonly reason: DeadLetterReason;
  readonly cause: string;
}

/** The steps after a claim answer; those for a granted claim carry it. */
export type StepAfterClaim<C> =
  /** Run the handler with the claim held. */
  | { readonly type: "apply"; readonly claim: C }
  | (DeadLetterStep & { readonly claim: C })
  /** Already finished: a duplicate delivery, acknowledged without running the handler. */
  | { readonly type: "acknowledge" }
  | { readonly type: "wait"; readonly ms: number };

/**
 * The steps inside the transaction, once the watermark is known: apply, skip as stale, park behind
 * an unresolved earlier event (recorded, not applied, C8), or join the replay of an earlier one.
 */
export type StepInTransaction =
  | { readonly type: "apply" }
  | { readonly type: "skip-stale" }
  | { readonly type: "park"; readonly behind: string }
  | { readonly type: "queue-replay"; readonly behind: string };

/** The steps after a failed attempt. */
export type StepAfterFailure =
  /** Record `retry_scheduled`, due at `retryAt` (the registry adds the delay to its own clock). */
  | { readonly type: "retry"; readonly retryAt: Date }
  | DeadLetterStep
  /** The lease was lost: claim again at once, counting the attempt, so a handler slower than its lease ends dead-lettered. */
  | { readonly type: "claim-again" }
  /** The registry or the source is unreachable: pause and try again, counting nothing (C3). */
  | { readonly type: "pause" };

/** Any step. */
export type NextStep<C = ClaimFacts> = StepAfterClaim<C> | StepInTransaction | StepAfterFailure;

/** Longest single wait for another holder or an earlier seq, so a finished holder is noticed quickly. */
export const MAX_POLL_MS = 1000;

/** Why an exhausted takeover failed when its holder recorded nothing: it died or stalled holding the claim. */
const HOLDER_LOST = "the holder's lease expired (it crashed or stalled)";

/**
 * The next step for an event in `situation`. After a claim: acknowledge a finished event, wait
 * (at most {@link MAX_POLL_MS}) when refused, dead-letter poison or an event claimed beyond
 * `maxAttempts`, else apply. In the transaction: skip an event at or below its watermark, park one
 * behind an unresolved earlier event, queue one behind an earlier event's replay. After a
 * failure: claim again after a lost lease, pause on an outage, dead-letter poison or the last
 * attempt, else retry at `at` + backoff (`random` spreads the backoff, default Math.random).
 */
export function nextStep<C extends ClaimFacts>(situation: ClaimAnswered<C>, policy: AttemptPolicy): StepAfterClaim<C>;
export function nextStep(situation: WatermarkRead, policy: AttemptPolicy): StepInTransaction;
export function nextStep(situation: AttemptFailed, policy: AttemptPolicy, random?: () => number): StepAfterFailure;
export function nextStep<C extends ClaimFacts>(situation: Situation<C>, policy: AttemptPolicy, random: () => number = Math.random): NextStep<C> {
  switch (situation.type) {
    case "claim-answered":
      return afterClaim(situation, policy);
    case "watermark-read":
      // Gaps are fine (void slots never reach consumers); going back in seq is not (C2).
      if (situation.seq <= situation.appliedSeq) return { type: "skip-stale" };
      // Applying past an unresolved earlier event would let the read model diverge (C8).
      if (situation.blockedBy !== undefined) return { type: "park", behind: situation.blockedBy };
      if (situation.replayingBefore !== undefined) return { type: "queue-replay", behind: situation.replayingBefore };
      return { type: "apply" };
    case "attempt-failed":
      return afterFailure(situation, policy, random);
  }
}

function afterClaim<C extends ClaimFacts>({ answer, undecodable }: ClaimAnswered<C>, policy: AttemptPolicy): StepAfterClaim<C> {
  if (answer.type === "finished") return { type: "acknowledge" };
  if (answer.type === "wait") return { type: "wait", ms: Math.min(answer.ms, MAX_POLL_MS) };
  const { claim } = answer;
  if (undecodable !== undefined) return { type: "dead-letter", claim, reason: "poison", cause: undecodable };
  if (claim.attempts > policy.maxAttempts) {
    // Takeovers count (C4): an event that kills its worker every time ends here instead of forever.
    return { type: "dead-letter", claim, reason: "exhausted", cause: `gave up after ${claim.attempts - 1} attempts; last error: ${claim.lastError ?? HOLDER_LOST}` };
  }
  return { type: "apply", claim };
}

function afterFailure({ attempts, failure, cause, at }: AttemptFailed, policy: AttemptPolicy, random: () => number): StepAfterFailure {
  switch (failure) {
    case "lease-lost":
      return { type: "claim-again" };
    case "infrastructure":
      return { type: "pause" };
    case "poison":
      return { type: "dead-letter", reason: "poison", cause };
    case "retriable":
      if (attempts >= policy.maxAttempts) return { type: "dead-letter", reason: "exhausted", cause: `gave up after ${attempts} attempts; last error: ${cause}` };
      return { type: "retry", retryAt: new Date(at.getTime() + backoffDelay(attempts, policy.backoff, random)) };
  }
}

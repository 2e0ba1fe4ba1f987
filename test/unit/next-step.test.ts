/**
 * The consumer's next-step decision (consumers/next-step.ts), given the state of a claim and its
 * attempts, when the registry answers or an attempt fails, then the step: apply, acknowledge a
 * duplicate (C1), skip the stale (C2), retry at a time with backoff or dead-letter (C3), claim
 * again after a lost lease, and a takeover counted as an attempt (C4). No I/O.
 */
import { describe, expect, it } from "vitest";
import { nextStep, MAX_POLL_MS, type AttemptPolicy, type ClaimFacts } from "../../consumers/next-step.js";

const policy: AttemptPolicy = { maxAttempts: 4, backoff: { baseMs: 100, maxMs: 1000, jitter: 0 } };
const T = new Date("2030-01-01T12:00:00.000Z");
const at = (ms: number) => new Date(T.getTime() + ms);

/** A granted claim on its `attempts`-th attempt. */
const claim = (attempts: number, lastError: string | null = null): ClaimFacts & { eventId: string } => ({ eventId: "e-1", attempts, lastError });
const claimed = (c: ClaimFacts, undecodable?: string) => nextStep({ type: "claim-answered", answer: { type: "claimed", claim: c }, undecodable }, policy);
const failed = (attempts: number, failure: "retriable" | "poison" | "infrastructure" | "lease-lost", random?: () => number) =>
  nextStep({ type: "attempt-failed", attempts, failure, cause: "Error: downstream timed out", at: T }, policy, random);

describe("after the registry answered a claim", () => {
  it("given the event already has a final outcome, when the duplicate is claimed, then it is acknowledged without running the handler (C1)", () => {
    expect(nextStep({ type: "claim-answered", answer: { type: "finished" } }, policy)).toEqual({ type: "acknowledge" });
  });

  it("given another holder's live lease, when the claim is refused for a while, then wait — at most the poll interval", () => {
    expect(nextStep({ type: "claim-answered", answer: { type: "wait", ms: 40 } }, policy)).toEqual({ type: "wait", ms: 40 });
    expect(nextStep({ type: "claim-answered", answer: { type: "wait", ms: 29_005 } }, policy)).toEqual({ type: "wait", ms: MAX_POLL_MS });
  });

  it("given a first claim, when it is granted, then apply with that claim", () => {
    const first = claim(1);
    expect(claimed(first)).toEqual({ type: "apply", claim: first });
  });

  it("given a message that does not decode, when its claim is granted, then dead-letter it as poison at once, naming why (C3)", () => {
    const first = claim(1);
    expect(claimed(first, "PoisonError: message value is not EventEnvelope JSON")).toEqual({
      type: "dead-letter",
      claim: first,
      reason: "poison",
      cause: "PoisonError: message value is not EventEnvelope JSON",
    });
  });

  it("given a holder that crashed on attempt 1, when another worker takes over, then the takeover is attempt 2 and applies (C4)", () => {
    expect(claimed(claim(2))).toMatchObject({ type: "apply" });
  });

  it("given an event that killed its holder on every attempt, when the takeover is claim 5 of 4, then dead-letter it as exhausted, blaming the lost lease (C4)", () => {
    expect(claimed(claim(5))).toMatchObject({
      type: "dead-letter",
      reason: "exhausted",
      cause: "gave up after 4 attempts; last error: the holder's lease expired (it crashed or stalled)",
    });
  });

  it("given a retry claimed as the last allowed attempt (4 of 4), when the claim is granted, then apply — exhaustion starts beyond it", () => {
    expect(claimed(claim(4, "Error: boom"))).toMatchObject({ type: "apply" });
  });

  it("given a failure recorded by the last attempt, when the event is claimed beyond its attempts, then dead-letter it with that error", () => {
    expect(claimed(claim(5, "Error: boom"))).toMatchObject({ type: "dead-letter", reason: "exhausted", cause: "gave up after 4 attempts; last error: Error: boom" });
  });
});

describe("inside the transaction, once the watermark is read", () => {
  it("given the aggregate applied up to seq 3, when seq 2 or seq 3 again comes, then skip it as stale (C2)", () => {
    expect(nextStep({ type: "watermark-read", seq: 2, appliedSeq: 3 }, policy)).toEqual({ type: "skip-stale" });
    expect(nextStep({ type: "watermark-read", seq: 3, appliedSeq: 3 }, policy)).toEqual({ type: "skip-stale" });
  });

  it("given the aggregate applied up to seq 3, when seq 4 or a later seq after a gap comes, then apply it", () => {
    expect(nextStep({ type: "watermark-read", seq: 4, appliedSeq: 3 }, policy)).toEqual({ type: "apply" });
    expect(nextStep({ type: "watermark-read", seq: 9, appliedSeq: 3 }, policy)).toEqual({ type: "apply" });
    expect(nextStep({ type: "watermark-read", seq: 1, appliedSeq: 0 }, policy)).toEqual({ type: "apply" });
  });

  it("C8: parks behind an unresolved earlier event, queues behind a replay, and a stale event stays stale", () => {
    expect(nextStep({ type: "watermark-read", seq: 5, appliedSeq: 3, blockedBy: "e4" }, policy)).toEqual({ type: "park", behind: "e4" });
    expect(nextStep({ type: "watermark-read", seq: 5, appliedSeq: 3, blockedBy: "e4", replayingBefore: "e2" }, policy)).toEqual({ type: "park", behind: "e4" });
    expect(nextStep({ type: "watermark-read", seq: 5, appliedSeq: 3, replayingBefore: "e4" }, policy)).toEqual({ type: "queue-replay", behind: "e4" });
    expect(nextStep({ type: "watermark-read", seq: 3, appliedSeq: 3, blockedBy: "e2" }, policy)).toEqual({ type: "skip-stale" });
  });
});

describe("after an attempt failed", () => {
  it("given attempt 1 of 4, when the handler fails retriably at T, then retry at T + base (C3)", () => {
    expect(failed(1, "retriable")).toEqual({ type: "retry", retryAt: at(100) });
  });

  it("given later attempts, when they fail retriably, then the delay doubles each time up to the maximum (C3)", () => {
    expect(failed(2, "retriable")).toEqual({ type: "retry", retryAt: at(200) });
    expect(failed(3, "retriable")).toEqual({ type: "retry", retryAt: at(400) });
    const patient = { ...policy, maxAttempts: 10 };
    expect(nextStep({ type: "attempt-failed", attempts: 7, failure: "retriable", cause: "x", at: T }, patient)).toEqual({ type: "retry", retryAt: at(1000) });
  });

  it("given a jittered policy, when a retriable failure happens, then the retry time moves by at most half the jitter", () => {
    const jittered = { ...policy, backoff: { baseMs: 1000, maxMs: 60_000, jitter: 0.2 } };
    const step = (random: number) => nextStep({ type: "attempt-failed", attempts: 1, failure: "retriable", cause: "x", at: T }, jittered, () => random);
    expect(step(0)).toEqual({ type: "retry", retryAt: at(900) });
    expect(step(1)).toEqual({ type: "retry", retryAt: at(1100) });
  });

  it("given the last attempt (4 of 4), when it fails retriably, then dead-letter it as exhausted with the last error (C3)", () => {
    expect(failed(4, "retriable")).toEqual({ type: "dead-letter", reason: "exhausted", cause: "gave up after 4 attempts; last error: Error: downstream timed out" });
  });

  it("given attempt 1 of 4, when the failure is poison, then dead-letter it at once with its cause (C3)", () => {
    expect(failed(1, "poison")).toEqual({ type: "dead-letter", reason: "poison", cause: "Error: downstream timed out" });
  });

  it("given any attempt, when the registry or the source is unreachable, then pause — no retry is scheduled and nothing is dead-lettered (C3)", () => {
    expect(failed(1, "infrastructure")).toEqual({ type: "pause" });
    expect(failed(4, "infrastructure")).toEqual({ type: "pause" });
  });

  it("given the last attempt, when its lease is lost, then claim again — the new claim counts, and beyond the attempts it is dead-lettered (C1, C4)", () => {
    expect(failed(4, "lease-lost")).toEqual({ type: "claim-again" });
    expect(claimed(claim(5))).toMatchObject({ type: "dead-letter", reason: "exhausted" });
  });
});

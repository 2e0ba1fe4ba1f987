/**
 * The chaos nemesis's schedule (docs/CHAOS.md, "Fault kinds"): every round has a fault of every
 * kind in its first 60 %, and the guaranteed faults take their targets in turn, so a run of as many
 * rounds as there are links has killed and frozen every process and reset and stalled every link
 * between a process and a service — the coverage the chaos run's figures claim.
 */
import { describe, expect, it } from "vitest";
import { FAULT_KINDS, planRound, type Fault } from "../../chaos/nemesis.js";
import { Random } from "../../chaos/random.js";

const processes = ["server", "relay-a", "relay-b", "projection", "handler"];
const links = ["server->pg", "server->s3", "relay-a->pg", "relay-a->s3", "relay-a->kafka", "relay-b->pg", "relay-b->s3", "relay-b->kafka", "projection->pg", "projection->kafka", "handler->pg", "handler->kafka"];
const ROUND_MS = 75_000;

function plan(seed: number, rounds: number, extra = 6): Fault[][] {
  const random = new Random(seed);
  const turn = random.fork("turn").int(0, 1_000);
  return Array.from({ length: rounds }, (_, r) => planRound(random.fork(`nemesis-${r + 1}`), r + 1, turn, ROUND_MS, { processes, links }, extra));
}

function targetsOf(rounds: Fault[][], kind: string): Set<string> {
  return new Set(rounds.flat().filter((f) => f.kind === kind).map((f) => f.target));
}

describe("the chaos nemesis's schedule", () => {
  it("has a fault of every kind in the first 60 % of every round, and extra ones before three quarters", () => {
    for (const round of plan(7, 20)) {
      expect(round).toHaveLength(FAULT_KINDS.length + 6);
      for (const kind of FAULT_KINDS) expect(round.some((f) => f.kind === kind && f.atMs <= ROUND_MS * 0.6)).toBe(true);
      expect(round.every((f) => f.atMs <= ROUND_MS * 0.75)).toBe(true);
    }
  });

  it("kills and freezes every process, and resets and stalls every link, within as many rounds as there are links", () => {
    for (const seed of [1, 2013, 424242]) {
      const rounds = plan(seed, links.length, 0);
      expect([...targetsOf(rounds, "kill")].sort()).toEqual([...processes].sort());
      expect([...targetsOf(rounds, "pause")].sort()).toEqual([...processes].sort());
      expect([...targetsOf(rounds, "partition-reset")].sort()).toEqual([...links].sort());
      expect([...targetsOf(rounds, "partition-stall")].sort()).toEqual([...links].sort());
      expect([...targetsOf(rounds, "client-partition")].sort()).toEqual(["clients->server:reset", "clients->server:stall"]);
    }
  });

  it("does not kill and freeze one process, or reset and stall one link, in the same round's turn", () => {
    for (const round of plan(99, 24, 0)) {
      const target = (kind: string) => round.find((f) => f.kind === kind)!.target;
      expect(target("kill")).not.toBe(target("pause"));
      expect(target("partition-reset")).not.toBe(target("partition-stall"));
    }
  });

  it("follows from the seed", () => {
    expect(plan(5, 3)).toEqual(plan(5, 3));
    expect(plan(5, 3)).not.toEqual(plan(6, 3));
  });
});

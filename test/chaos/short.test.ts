/**
 * The short form of `npm run chaos` (docs/CHAOS.md): one round against private services with a
 * fault of every kind — kill -9 and SIGSTOP of the processes, PostgreSQL and Kafka restarts, S3
 * outages, SlowDown and lost replies, partitions that reset and that stall — then the checker:
 * no acknowledged write lost (W1), none duplicated or at a shared slot (W2, W4), no unexplained
 * gap (W5), batches whole (W7), everything published in per-aggregate order (R1, R2) at least
 * once (R4) by one relay at a time (R5), every event applied once (C1) in order (C2), through
 * retries (C3) and crashes (C4), the read model current (C6).
 */
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";
import { ANOMALIES } from "../../chaos/checker.js";
import { FAULT_KINDS } from "../../chaos/nemesis.js";
import { defaultChaosOptions, runChaos } from "../../chaos/run-chaos.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

it("finds no anomaly in a round with a fault of every kind", async () => {
  const lines: string[] = [];
  const result = await runChaos({
    ...defaultChaosOptions(ROOT),
    rounds: 1,
    seconds: 24,
    seed: 1313,
    writers: 16,
    extraFaults: 2,
    finishMs: 10_000,
    converge: { stallMs: 45_000, capMs: 240_000 },
    out: (line) => lines.push(line),
  });
  const round = result.rounds[0]!;
  const context = `${lines.join("\n")}\nsamples: ${JSON.stringify(result.samples, null, 1)}`;
  expect(Object.fromEntries(ANOMALIES.map((a) => [a, result.anomalies[a]])), context).toEqual(Object.fromEntries(ANOMALIES.map((a) => [a, 0])));
  expect(round.convergence.converged, context).toBe(true);
  expect(result.acknowledged, context).toBeGreaterThan(200);
  expect(FAULT_KINDS.filter((k) => result.faults[k] === 0), context).toEqual([]);
}, 240_000);

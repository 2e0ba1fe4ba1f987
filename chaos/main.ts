/**
 * `npm run chaos -- [--rounds N] [--seconds S] [--seed K] [--writers W] [--json FILE] …`: a chaos
 * run against private services (docs/CHAOS.md). Prints one line per round and a summary; exits 0
 * when the checker found no anomaly, 1 when it did, 2 on a usage error, 130 on Ctrl-C.
 */
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { defaultChaosOptions, runChaos, type ChaosOptions, type Plant } from "./run-chaos.js";
import { formatSummary } from "./summary.js";

const USAGE = `usage: npm run chaos -- [options]
  --rounds N          rounds (default 3)
  --seconds S         seconds of workload and faults per round (default 75)
  --seed K            seed of the schedule and the choices (default: random, printed)
  --writers W         concurrent writer clients (default 32)
  --aggregates A      generic aggregates the writers share (default 24)
  --instances I       instances the writers share (default 12)
  --extra-faults F    random faults per round beyond one of every kind (default 6)
  --stall-seconds S   after the heal, the pipeline has not converged once nothing moved this long (default 60)
  --converge-cap-seconds C  and at the latest after this long, however it moves (default 900)
  --no-faults         a control run: the same workload and checks without the nemesis
  --plant BUG         plant a bug the checker must find: double-apply (a handler writing its effect
                      outside the registry's transaction) or relay-skip (a relay checkpoint moved
                      past unpublished events)
  --json FILE         write the JSON report (after every round, and at the end)
  --dir DIR           run directory (default: a new temporary one; removed when no anomaly)
  --keep              keep the run directory
`;

/** Parses the command line into options; throws a usage message on a bad value. */
export function parseChaosArgs(argv: readonly string[], root: string): ChaosOptions {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      rounds: { type: "string" },
      seconds: { type: "string" },
      seed: { type: "string" },
      writers: { type: "string" },
      aggregates: { type: "string" },
      instances: { type: "string" },
      "extra-faults": { type: "string" },
      "stall-seconds": { type: "string" },
      "converge-cap-seconds": { type: "string" },
      plant: { type: "string" },
      json: { type: "string" },
      dir: { type: "string" },
      keep: { type: "boolean" },
      "no-faults": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help === true) throw new Error(USAGE);
  const base = defaultChaosOptions(root);
  const int = (name: string, raw: string | undefined, fallback: number, min: number) => {
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer of at least ${min}, got ${JSON.stringify(raw)}\n\n${USAGE}`);
    return n;
  };
  const plant = (values.plant ?? "none") as Plant;
  if (plant !== "none" && plant !== "double-apply" && plant !== "relay-skip") throw new Error(`--plant must be double-apply or relay-skip, got ${JSON.stringify(values.plant)}\n\n${USAGE}`);
  return {
    ...base,
    rounds: int("rounds", values.rounds, base.rounds, 1),
    seconds: int("seconds", values.seconds, base.seconds, 5),
    seed: int("seed", values.seed, Math.floor(Math.random() * 1_000_000), 0),
    writers: int("writers", values.writers, base.writers, 1),
    aggregates: int("aggregates", values.aggregates, base.aggregates, 1),
    instances: int("instances", values.instances, base.instances, 1),
    extraFaults: int("extra-faults", values["extra-faults"], base.extraFaults, 0),
    converge: {
      stallMs: int("stall-seconds", values["stall-seconds"], base.converge.stallMs / 1000, 1) * 1000,
      capMs: int("converge-cap-seconds", values["converge-cap-seconds"], base.converge.capMs / 1000, 1) * 1000,
    },
    plant,
    faults: values["no-faults"] !== true,
    json: values.json,
    dir: values.dir,
    keep: values.keep === true,
  };
}

async function main(): Promise<number> {
  // The SDK's notice about Node 22 would interleave with the progress lines; it says nothing about the run.
  process.env["AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED"] ??= "true";
  const root = fileURLToPath(new URL("..", import.meta.url));
  let options: ChaosOptions;
  try {
    options = parseChaosArgs(process.argv.slice(2), root);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    return 2;
  }
  const abort = new AbortController();
  process.on("SIGINT", () => {
    // The first Ctrl-C ends the run and tears the services down; a second one exits at once
    // (the exit handlers still kill every child and stop PostgreSQL).
    if (abort.signal.aborted) process.exit(130);
    process.stderr.write("chaos: interrupted; tearing down (Ctrl-C again to exit at once)\n");
    abort.abort();
  });
  process.on("SIGTERM", () => abort.abort());
  try {
    const result = await runChaos({ ...options, signal: abort.signal });
    process.stdout.write(formatSummary(result));
    if (abort.signal.aborted) return 130;
    return result.ok ? 0 : 1;
  } catch (e) {
    process.stderr.write(`chaos: ${(e as Error).stack ?? String(e)}\n`);
    return abort.signal.aborted ? 130 : 1;
  }
}

process.exit(await main());

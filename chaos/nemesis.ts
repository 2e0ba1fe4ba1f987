/**
 * The nemesis: a schedule of faults drawn from the seed, then carried out against the run's
 * processes and services. Each round has at least one fault of every kind at random times in its
 * first 60 %, their targets taken in turn round after round (so a run of as many rounds as there
 * are links kills and freezes every process and resets and stalls every link), plus extra faults
 * of random kinds and targets; a fault waits while another holds the same target. At the round's
 * end every fault is healed at once.
 */
import type { FaultProxy } from "./fault-proxy.js";
import type { PrivateStack } from "./private-stack.js";
import type { Random } from "./random.js";
import type { S3FaultProxy } from "./s3-fault-proxy.js";
import type { TidemarkProcess } from "./tidemark-process.js";

/** Every kind of fault, in report order. */
export const FAULT_KINDS = [
  "kill",
  "pause",
  "pg-restart",
  "kafka-restart",
  "s3-outage",
  "s3-slowdown",
  "s3-lost-reply",
  "partition-reset",
  "partition-stall",
  "client-partition",
] as const;

/** One kind of fault. */
export type FaultKind = (typeof FAULT_KINDS)[number];

/** One planned fault: `target` is a process name, a link `process->service`, or the service. */
export interface Fault {
  readonly atMs: number;
  readonly kind: FaultKind;
  readonly target: string;
  readonly durationMs: number;
}

/** One fault as it was carried out. */
export interface FaultRecord extends Fault {
  readonly startedMs: number;
  readonly endedMs: number;
}

/** What the nemesis can reach. */
export interface NemesisTargets {
  readonly processes: ReadonlyMap<string, TidemarkProcess>;
  /** Links `process->service` (pg, s3, kafka). */
  readonly links: ReadonlyMap<string, FaultProxy>;
  /** The writers' link to the server. */
  readonly clientLink: FaultProxy;
  readonly s3: S3FaultProxy;
  readonly stack: PrivateStack;
}

const DURATION: Record<FaultKind, [number, number]> = {
  kill: [300, 3000],
  // Sometimes longer than the relay's and the consumers' leases (3 s): fencing must hold.
  pause: [1000, 5000],
  "pg-restart": [300, 3000],
  "kafka-restart": [300, 2000],
  "s3-outage": [1000, 4000],
  "s3-slowdown": [2000, 5000],
  "s3-lost-reply": [1500, 4000],
  "partition-reset": [1000, 5000],
  "partition-stall": [1000, 6000],
  "client-partition": [1000, 4000],
};

const CLIENT_PARTITIONS = ["clients->server:reset", "clients->server:stall"];

/** The targets a kind can hit: processes, links, the writers' link (reset or stall), or its one service. */
function targetsOf(kind: FaultKind, targets: { processes: readonly string[]; links: readonly string[] }): readonly string[] {
  if (kind === "kill" || kind === "pause") return targets.processes;
  if (kind === "partition-reset" || kind === "partition-stall") return targets.links;
  if (kind === "client-partition") return CLIENT_PARTITIONS;
  return [kind === "pg-restart" ? "pg" : kind === "kafka-restart" ? "kafka" : "s3"];
}

/**
 * The schedule of round `round` (1-based) of `roundMs`: one fault of every kind, its target the
 * next in turn (`turn` shifts where the turns start, so seeds differ in pairings too), then
 * `extra` faults of random kinds at random targets.
 */
export function planRound(random: Random, round: number, turn: number, roundMs: number, targets: { processes: readonly string[]; links: readonly string[] }, extra: number): Fault[] {
  const i = round - 1 + turn;
  // Pause walks half a lap behind kill, stall half a lap behind reset: one round's turn never hits
  // one target with both.
  const inTurn = (kind: FaultKind): string => {
    const list = targetsOf(kind, targets);
    const behind = kind === "pause" || kind === "partition-stall" ? Math.floor(list.length / 2) : 0;
    return list[(i + behind) % list.length]!;
  };
  const draw = (kind: FaultKind, target: string, fromShare: number, toShare: number): Fault => {
    const [min, max] = DURATION[kind];
    return { atMs: random.int(Math.floor(roundMs * fromShare), Math.floor(roundMs * toShare)), kind, target, durationMs: random.int(min, max) };
  };
  const faults = FAULT_KINDS.map((kind) => draw(kind, inTurn(kind), 0.02, 0.6));
  for (let n = 0; n < extra; n++) {
    const kind = random.pick(FAULT_KINDS);
    faults.push(draw(kind, random.pick(targetsOf(kind, targets)), 0.02, 0.75));
  }
  return faults.sort((a, b) => a.atMs - b.atMs);
}

/** The resource a fault holds while it runs: one fault per process, link or service at a time. */
function resourceOf(f: Fault): string {
  return f.kind === "client-partition" ? "clients->server" : f.target;
}

/**
 * Carries out `faults` from `start` until `signal` aborts (the round's end), then heals everything
 * and resolves with what was done. Faults not yet begun at the end are dropped.
 */
export async function runNemesis(faults: readonly Fault[], targets: NemesisTargets, start: number, signal: AbortSignal, log: (line: string) => void): Promise<FaultRecord[]> {
  const done: FaultRecord[] = [];
  const busy = new Map<string, Promise<void>>();
  const running: Promise<void>[] = [];
  const healers = new Set<() => void>();

  const carryOut = async (f: Fault) => {
    await sleepUntil(start + f.atMs, signal);
    if (signal.aborted) return;
    // One fault per resource at a time: a later one waits for the one before it.
    const resource = resourceOf(f);
    const mine = (busy.get(resource) ?? Promise.resolve()).then(async () => {
      if (signal.aborted) return;
      const startedMs = Date.now() - start;
      await inflict(f, targets, signal, healers).catch((e: unknown) => log(`nemesis: ${f.kind} ${f.target} failed: ${(e as Error).message}`));
      done.push({ ...f, startedMs, endedMs: Date.now() - start });
    });
    busy.set(resource, mine);
    await mine;
  };
  for (const f of faults) running.push(carryOut(f));
  await aborted(signal);
  for (const heal of healers) heal();
  await Promise.all(running);
  // Whatever a fault left behind (a race with the heal): everything up, every process running.
  healAll(targets);
  return done.sort((a, b) => a.startedMs - b.startedMs);
}

/** Ends every fault at once: links up, S3 answering, processes running and not frozen. */
export function healAll(targets: NemesisTargets): void {
  for (const link of targets.links.values()) link.set("up");
  targets.clientLink.set("up");
  targets.s3.set({ type: "pass" });
  for (const p of targets.processes.values()) p.heal();
}

async function inflict(f: Fault, t: NemesisTargets, signal: AbortSignal, healers: Set<() => void>): Promise<void> {
  const hold = async (heal: () => void) => {
    healers.add(heal);
    await sleepUntil(Date.now() + f.durationMs, signal);
    healers.delete(heal);
    heal();
  };
  switch (f.kind) {
    case "kill": {
      const p = t.processes.get(f.target)!;
      await p.kill(f.durationMs);
      return hold(() => p.heal());
    }
    case "pause": {
      const p = t.processes.get(f.target)!;
      const heal = () => p.heal();
      healers.add(heal);
      await p.pause(f.durationMs);
      healers.delete(heal);
      return;
    }
    case "pg-restart":
      return t.stack.restartPostgres(f.durationMs);
    case "kafka-restart":
      return t.stack.restartKafka(f.durationMs);
    case "s3-outage":
      t.s3.set({ type: "outage" });
      return hold(() => t.s3.set({ type: "pass" }));
    case "s3-slowdown":
      t.s3.set({ type: "slowdown", share: 0.6 });
      return hold(() => t.s3.set({ type: "pass" }));
    case "s3-lost-reply":
      t.s3.set({ type: "lost-reply", share: 0.25 });
      return hold(() => t.s3.set({ type: "pass" }));
    case "partition-reset":
    case "partition-stall": {
      const link = t.links.get(f.target)!;
      link.set(f.kind === "partition-reset" ? "reset" : "stall");
      return hold(() => link.set("up"));
    }
    case "client-partition":
      t.clientLink.set(f.target.endsWith(":reset") ? "reset" : "stall");
      return hold(() => t.clientLink.set("up"));
  }
}

function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => (signal.aborted ? resolve() : signal.addEventListener("abort", () => resolve(), { once: true })));
}

function sleepUntil(at: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(finish, Math.max(0, at - Date.now()));
    function finish() {
      clearTimeout(timer);
      signal.removeEventListener("abort", finish);
      resolve();
    }
    signal.addEventListener("abort", finish, { once: true });
  });
}

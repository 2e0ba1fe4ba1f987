/**
 * One chaos run: private services, fault proxies on every link, the Tidemark processes started
 * through the CLI (server, a relay pair, the projection, the user handler), then rounds of
 * workload under the nemesis, each healed, converged and checked. Everything is torn down at the
 * end, also when the run is aborted.
 */
import { S3Client } from "@aws-sdk/client-s3";
import { spawn } from "node:child_process";
import { setMaxListeners } from "node:events";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Kafka, logLevel } from "kafkajs";
import pg from "pg";
import { EventStoreService } from "../gen/tidemark/v1/event_store_pb.js";
import { ANOMALIES, check, type Anomaly, type CheckReport } from "./checker.js";
import { delay, freePort, until } from "./child.js";
import { converge, metric, type ConvergeBound, type Convergence } from "./converge.js";
import { CHAOS_HANDLER, createEffectsTable } from "./effects.js";
import { startFaultProxy, type FaultProxy } from "./fault-proxy.js";
import { GrpcClient } from "./grpc-client.js";
import { opStatus, type Attempt, type History } from "./history.js";
import { FAULT_KINDS, planRound, runNemesis, type FaultKind, type FaultRecord, type NemesisTargets } from "./nemesis.js";
import { observe } from "./observe.js";
import { startPrivateStack, type KafkaListener } from "./private-stack.js";
import { PROCESSES, processEnv, storageEnv } from "./processes.js";
import { Random } from "./random.js";
import { startS3FaultProxy } from "./s3-fault-proxy.js";
import { childEnv, superviseTidemark, tidemarkCommand, type TidemarkProcess } from "./tidemark-process.js";
import { aggregateIds, CHAOS_TYPE, instanceAggregateId, instanceIds, Workload } from "./workload.js";

/**
 * A planted bug, to show that the checker finds it: `double-apply`, a handler that writes its
 * effect outside the registry's transaction; `relay-skip`, a relay checkpoint moved past events
 * that were never published (the origin's weakness 8), done by the harness in the database.
 */
export type Plant = "none" | "double-apply" | "relay-skip";

/** Everything a run needs; {@link defaultChaosOptions} fills in the rest. */
export interface ChaosOptions {
  readonly rounds: number;
  readonly seconds: number;
  readonly seed: number;
  readonly writers: number;
  readonly aggregates: number;
  readonly instances: number;
  readonly instanceShare: number;
  /** Random faults per round on top of one of every kind. */
  readonly extraFaults: number;
  readonly plant: Plant;
  /** False for a control run: the same workload and checks, no nemesis. */
  readonly faults: boolean;
  /** Write the JSON report here (also after every round). */
  readonly json: string | undefined;
  /** Run directory (services' data, logs); a fresh temporary one by default. */
  readonly dir: string | undefined;
  /** Keep the run directory even when no anomaly was found. */
  readonly keep: boolean;
  /**
   * The wait for the pipeline after the heal (chaos/converge.ts): not converged once nothing moved
   * for `stallMs`, or at `capMs` however it moves.
   */
  readonly converge: ConvergeBound;
  /** After the heal, operations in flight keep retrying this long. */
  readonly finishMs: number;
  /** Deadline of one client attempt. */
  readonly deadlineMs: number;
  /** The repository root (where package.json and the CLI are). */
  readonly root: string;
  readonly out: (line: string) => void;
  readonly signal?: AbortSignal;
}

/** The defaults of `npm run chaos`. */
export function defaultChaosOptions(root: string): ChaosOptions {
  return {
    rounds: 3,
    seconds: 75,
    seed: 1,
    writers: 32,
    aggregates: 24,
    instances: 12,
    instanceShare: 0.25,
    extraFaults: 6,
    plant: "none",
    faults: true,
    json: undefined,
    dir: undefined,
    keep: false,
    converge: { stallMs: 60_000, capMs: 900_000 },
    finishMs: 20_000,
    deadlineMs: 5_000,
    root,
    out: (line) => process.stdout.write(`${line}\n`),
  };
}

/** One round's figures. */
export interface RoundResult {
  readonly round: number;
  /** Events acknowledged in this round. */
  readonly acknowledged: number;
  /** Operations of this round that stayed indeterminate. */
  readonly indeterminate: number;
  readonly failed: number;
  readonly attempts: number;
  readonly faults: Record<FaultKind, number>;
  readonly convergence: Convergence;
  /**
   * Only when the round did not converge: every Tidemark process restarted, as an operator would,
   * and the pipeline awaited again, so the check can tell late from lost and the next round starts
   * clean. The round still counts as `notConverged`.
   */
  readonly recovery?: Convergence;
  readonly checkMs: number;
  /** Anomalies the check after this round found that the one before had not. */
  readonly newAnomalies: Partial<Record<Anomaly, number>>;
  readonly unexpectedExits: number;
}

/** A whole run's result (the JSON report). */
export interface ChaosResult {
  readonly seed: number;
  readonly options: Omit<ChaosOptions, "out" | "signal">;
  readonly dir: string;
  readonly rounds: RoundResult[];
  readonly schedule: FaultRecord[][];
  readonly faults: Record<FaultKind, number>;
  /** Faults carried out per target (process, link, service) and kind: what the run covered. */
  readonly coverage: Record<string, Partial<Record<FaultKind, number>>>;
  readonly acknowledged: number;
  readonly indeterminate: number;
  readonly anomalies: Record<Anomaly, number>;
  readonly samples: CheckReport["samples"];
  readonly report: Omit<CheckReport, "samples">;
  readonly ok: boolean;
}

const TOPIC = "tidemark.events";
const DEAD_LETTER_TOPIC = "tidemark.dead-letter";
const GROUPS = ["tidemark.projection:instances", `tidemark.${CHAOS_HANDLER}`];

/** Runs the whole thing; resolves with the result (anomalies are in it, not thrown). */
export async function runChaos(options: ChaosOptions): Promise<ChaosResult> {
  const out = options.out;
  const dir = options.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), `tidemark-chaos-${options.seed}-`));
  fs.mkdirSync(path.join(dir, "logs"), { recursive: true });
  const random = new Random(options.seed);
  tidemarkCommand(options.root); // fail before starting anything when the CLI cannot be found
  const closers: (() => Promise<unknown> | void)[] = [];
  const teardown = async () => {
    for (const close of closers.reverse()) await Promise.resolve(close()).catch(() => {});
  };
  out(`chaos: seed ${options.seed}, ${options.rounds} rounds of ${options.seconds} s, ${options.writers} writers, run directory ${dir}${options.plant === "none" ? "" : `, planted bug: ${options.plant}`}`);

  try {
    // ---- services and links
    const links = new Map<string, FaultProxy>();
    const listeners: KafkaListener[] = [];
    for (const p of PROCESSES.filter((p) => p.kafka)) {
      const internal = await freePort();
      const proxy = await startFaultProxy(internal);
      closers.push(() => proxy.close());
      links.set(`${p.name}->kafka`, proxy);
      listeners.push({ name: `L_${p.name.replace(/-/g, "_").toUpperCase()}`, port: internal, advertisedPort: proxy.port });
    }
    const t0 = Date.now();
    const stack = await startPrivateStack(dir, listeners);
    closers.push(() => stack.close());
    const s3Fault = await startS3FaultProxy(stack.s3Port, random.fork("s3-proxy"));
    closers.push(() => s3Fault.close());
    for (const p of PROCESSES) {
      const pgLink = await startFaultProxy(stack.pgPort);
      const s3Link = await startFaultProxy(s3Fault.port);
      closers.push(() => pgLink.close(), () => s3Link.close());
      links.set(`${p.name}->pg`, pgLink);
      links.set(`${p.name}->s3`, s3Link);
    }
    out(`chaos: private PostgreSQL :${stack.pgPort}, Kafka :${stack.kafkaPort}, S3Proxy :${stack.s3Port} up in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    const db = new pg.Pool({ connectionString: stack.pgUrl(), max: 4 });
    closers.push(() => db.end());
    db.on("error", () => {});
    await createEffectsTable(db);
    const direct = storageEnv(stack.pgUrl(), stack.s3Port, stack.s3);
    await runOnce(options.root, ["migrate"], childEnv(direct), path.join(dir, "logs", "migrate.log"));

    // ---- Tidemark processes
    const grpcPort = await freePort();
    const clientLink = await startFaultProxy(grpcPort);
    closers.push(() => clientLink.close());
    const metricsAddr = new Map<string, string>();
    const processes = new Map<string, TidemarkProcess>();
    for (const spec of PROCESSES) {
      const addr = `127.0.0.1:${await freePort()}`;
      metricsAddr.set(spec.name, addr);
      const env = childEnv({
        ...storageEnv(stack.pgUrl(links.get(`${spec.name}->pg`)!.port), links.get(`${spec.name}->s3`)!.port, stack.s3),
        ...processEnv(spec, grpcPort, spec.kafka ? links.get(`${spec.name}->kafka`)!.port : 0, addr),
        ...(spec.name === "handler" ? { CHAOS_PLANT: options.plant, CHAOS_EFFECTS_PG_URL: stack.pgUrl(links.get("handler->pg")!.port) } : {}),
      });
      const proc = superviseTidemark(spec.name, options.root, spec.args, env, path.join(dir, "logs", `${spec.name}.log`));
      processes.set(spec.name, proc);
      closers.push(() => proc.stop());
    }
    for (const p of processes.values()) p.start();

    const client = new GrpcClient(`127.0.0.1:${grpcPort}`);
    closers.push(() => client.close());
    const kafka = new Kafka({ clientId: "chaos-harness", brokers: [`127.0.0.1:${stack.kafkaPort}`], logLevel: logLevel.NOTHING, retry: { retries: 8, initialRetryTime: 200, maxRetryTime: 2000 } });
    const s3 = new S3Client({
      endpoint: `http://127.0.0.1:${stack.s3Port}`,
      region: stack.s3.region,
      forcePathStyle: true,
      credentials: { accessKeyId: stack.s3.accessKey, secretAccessKey: stack.s3.secretKey },
    });
    closers.push(() => s3.destroy());
    const t1 = Date.now();
    const ready = await until(() => isReady(client, kafka, [...metricsAddr.entries()].filter(([n]) => n.startsWith("relay")).map(([, a]) => a)), 180_000, 500);
    if (!ready) throw new Error(`the Tidemark processes did not become ready (logs in ${dir}/logs)`);
    out(`chaos: server, relay pair, projection and handler ready in ${((Date.now() - t1) / 1000).toFixed(1)} s`);

    // ---- rounds
    const history: History = { ops: [], attempts: [] };
    const workload = new Workload(
      {
        address: `127.0.0.1:${clientLink.port}`,
        writers: options.writers,
        aggregates: options.aggregates,
        instances: options.instances,
        instanceShare: options.instanceShare,
        deadlineMs: options.deadlineMs,
        runId: `c${options.seed}-${Date.now().toString(36)}`,
        random: random.fork("workload"),
      },
      history,
    );
    closers.push(() => workload.close());
    const targets: NemesisTargets = { processes, links, clientLink, s3: s3Fault, stack };
    const partitionLinks = PROCESSES.flatMap((p) => p.partitionable.map((s) => `${p.name}->${s}`));
    const aggregates = [
      ...aggregateIds(options).map((id) => ({ type: CHAOS_TYPE, id })),
      ...instanceIds(options).map((id) => ({ type: "Instance", id: instanceAggregateId(id) })),
    ];
    const objectCache = new Map();
    const rounds: RoundResult[] = [];
    const schedule: FaultRecord[][] = [];
    let report: CheckReport | undefined;
    let exitsBefore = 0;
    const notConverged: { round: number; waitingFor: string }[] = [];
    const pipeline = { client, aggregates, relayMetrics: [metricsAddr.get("relay-a")!, metricsAddr.get("relay-b")!], kafka, topic: TOPIC, groups: GROUPS };
    // Where the guaranteed faults' turns start: the seed decides, so seeds differ in pairings too.
    const turn = random.fork("turn").int(0, 1_000);

    // A function, not a narrowed expression: the signal flips during the awaits.
    const aborted = () => options.signal?.aborted === true;
    for (let round = 1; round <= options.rounds && !aborted(); round++) {
      const planned = planRound(random.fork(`nemesis-${round}`), round, turn, options.seconds * 1000, { processes: PROCESSES.map((p) => p.name), links: partitionLinks }, options.extraFaults);
      // A control run (--no-faults) keeps the schedule's draws, so its seed means the same workload.
      const faults = options.faults ? planned : [];
      const start = Date.now();
      const heal = new AbortController();
      setMaxListeners(1000, heal.signal);
      const nemesis = runNemesis(faults, targets, start, heal.signal, out);
      const work = workload.run(round, start + options.seconds * 1000, start + options.seconds * 1000 + options.finishMs);
      const planted = options.plant === "relay-skip" ? delay((options.seconds * 1000) / 2, options.signal).then(() => skipCheckpoint(processes, db, out)) : undefined;
      // Awaited below; a failure meanwhile must not end the process as an unhandled rejection.
      planted?.catch(() => {});
      await delay(options.seconds * 1000, options.signal);
      heal.abort();
      const done = await nemesis;
      await planted;
      schedule.push(done);
      await work;
      const convergence = await converge(pipeline, options.converge, options.signal);
      let recovery: Convergence | undefined;
      if (!convergence.converged && !aborted()) {
        // A stuck process (one that neither works nor exits) would leave every later round
        // unconverged too: restart everything, as an operator would, and wait once more. What was
        // only late is then applied; what is still missing afterwards is lost.
        notConverged.push({ round, waitingFor: convergence.waitingFor });
        out(`round ${round}: NOT converged after ${(convergence.ms / 1000).toFixed(0)} s (waiting for ${convergence.waitingFor}); restarting every Tidemark process (logs in ${dir}/logs)`);
        await Promise.all([...processes.values()].map((p) => p.restart()));
        recovery = await converge(pipeline, options.converge, options.signal);
      }
      const settled = (recovery ?? convergence).converged;

      const c0 = Date.now();
      const observed = await observe({ client, s3, bucket: stack.s3.bucket, kafka, topic: TOPIC, deadLetterTopic: DEAD_LETTER_TOPIC, db, objectCache }, aggregates);
      const previous = report;
      report = check({ history, ...observed, handler: CHAOS_HANDLER, settled, notConverged });
      const exits = [...processes.values()].reduce((n, p) => n + p.unexpectedExits, 0);
      const result: RoundResult = {
        round,
        ...roundFigures(history, round),
        faults: countKinds(done),
        convergence,
        ...(recovery === undefined ? {} : { recovery }),
        checkMs: Date.now() - c0,
        newAnomalies: delta(report, previous),
        unexpectedExits: exits - exitsBefore,
      };
      exitsBefore = exits;
      rounds.push(result);
      out(roundLine(result, options.rounds));
      if (options.json !== undefined) writeJson(options.json, summarise(options, dir, rounds, schedule, report));
    }
    if (report === undefined) throw new Error("aborted before the first round was checked");
    const result = summarise(options, dir, rounds, schedule, report);
    if (options.json !== undefined) writeJson(options.json, result);
    fs.writeFileSync(path.join(dir, "history.json"), JSON.stringify(history));
    await teardown();
    if (result.ok && !options.keep) fs.rmSync(dir, { recursive: true, force: true });
    return result;
  } catch (e) {
    await teardown();
    throw e;
  }
}

/**
 * The planted relay bug: both relays are killed, writes go on for two seconds, then the
 * checkpoint jumps to the log's last position (the one place the harness touches Tidemark's
 * tables), so the relay that takes over never publishes what was committed meanwhile. The relays
 * stay down until the checkpoint has moved: the nemesis may have PostgreSQL down at that moment,
 * and the update is retried until it answers.
 */
async function skipCheckpoint(processes: ReadonlyMap<string, TidemarkProcess>, db: pg.Pool, out: (line: string) => void): Promise<void> {
  await until(async () => (await db.query(`select 1 from tidemark.relay_checkpoints where name = 'default' and position > 0`)).rowCount === 1, 60_000, 500);
  const relays = ["relay-a", "relay-b"].map((name) => processes.get(name)!);
  await Promise.all(relays.map((relay) => relay.kill(120_000)));
  await delay(2000);
  let moved: { before: string; after: string } | undefined;
  const ok = await until(async () => {
    const { rows } = await db.query<{ before: string; after: string }>(
      `with c as (select position from tidemark.relay_checkpoints where name = 'default')
       update tidemark.relay_checkpoints set position = (select max(global_position) from tidemark.event_log)
        where name = 'default' returning (select position from c) as before, position as after`,
    );
    moved = rows[0];
    return true;
  }, 60_000, 250);
  await Promise.all(relays.map((relay) => relay.restart()));
  if (!ok) throw new Error("planted relay-skip: PostgreSQL did not answer within 60 s");
  out(`chaos: planted relay-skip: checkpoint moved from ${moved?.before ?? "?"} to ${moved?.after ?? "?"} while both relays were down`);
}

/** Runs a one-shot CLI command (migrate) to the end; throws on a non-zero exit. */
function runOnce(root: string, args: readonly string[], env: Record<string, string>, logFile: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const fd = fs.openSync(logFile, "a");
    const child = spawn(process.execPath, [...tidemarkCommand(root), ...args], { cwd: root, env, stdio: ["ignore", fd, fd] });
    fs.closeSync(fd);
    child.on("error", reject);
    child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`tidemark ${args.join(" ")} exited with ${code} (log: ${logFile})`))));
  });
}

async function isReady(client: GrpcClient, kafka: Kafka, relayMetrics: readonly string[]): Promise<boolean> {
  await client.unary(EventStoreService.method.getStreamHead, { aggregateType: CHAOS_TYPE, aggregateId: "ready" }, 2000).catch((e: { code?: number }) => {
    if (e.code !== 5) throw e;
  });
  const pages = await Promise.all(relayMetrics.map((a) => fetch(`http://${a}/metrics`).then((r) => r.text()).catch(() => "")));
  if (pages.filter((p) => metric(p, "tidemark_relay_active") === 1).length !== 1) return false;
  const admin = kafka.admin();
  await admin.connect();
  try {
    const groups = await admin.describeGroups(GROUPS);
    return groups.groups.every((g) => g.state === "Stable" && g.members.length > 0);
  } finally {
    await admin.disconnect();
  }
}

function roundFigures(history: History, round: number): Pick<RoundResult, "acknowledged" | "indeterminate" | "failed" | "attempts"> {
  const ids = new Set(history.ops.filter((op) => op.round === round).map((op) => op.id));
  const byOp = new Map<string, Attempt[]>();
  for (const a of history.attempts) if (ids.has(a.op)) byOp.set(a.op, [...(byOp.get(a.op) ?? []), a]);
  let acknowledged = 0;
  let indeterminate = 0;
  let failed = 0;
  let attempts = 0;
  for (const id of ids) {
    const list = byOp.get(id) ?? [];
    attempts += list.length;
    const s = opStatus(list);
    if (s.type === "acknowledged") acknowledged += s.landed.length;
    else if (s.type === "failed") failed++;
    else indeterminate++;
  }
  return { acknowledged, indeterminate, failed, attempts };
}

function countKinds(faults: readonly FaultRecord[]): Record<FaultKind, number> {
  const out = Object.fromEntries(FAULT_KINDS.map((k) => [k, 0])) as Record<FaultKind, number>;
  for (const f of faults) out[f.kind]++;
  return out;
}

function delta(now: CheckReport, before: CheckReport | undefined): Partial<Record<Anomaly, number>> {
  const out: Partial<Record<Anomaly, number>> = {};
  for (const a of ANOMALIES) {
    const d = now.anomalies[a] - (before?.anomalies[a] ?? 0);
    if (d !== 0) out[a] = d;
  }
  return out;
}

function roundLine(r: RoundResult, rounds: number): string {
  const faults = FAULT_KINDS.filter((k) => r.faults[k] > 0).map((k) => `${k} ${r.faults[k]}`).join(", ");
  const total = Object.values(r.faults).reduce((a, b) => a + b, 0);
  const anomalies = Object.entries(r.newAnomalies).map(([a, n]) => `${a} ${n}`).join(", ");
  const recovered = r.recovery === undefined ? "" : r.recovery.converged ? `, converged ${(r.recovery.ms / 1000).toFixed(1)} s after restarting every process` : `, still not after restarting every process (waiting for ${r.recovery.waitingFor})`;
  const converged = r.convergence.converged ? `converged in ${(r.convergence.ms / 1000).toFixed(1)} s` : `NOT converged (waiting for ${r.convergence.waitingFor})${recovered}`;
  return `round ${r.round}/${rounds}: acknowledged ${r.acknowledged}, indeterminate ${r.indeterminate}, refused ${r.failed}, attempts ${r.attempts}; faults ${total} (${faults}); ${converged}; checked in ${(r.checkMs / 1000).toFixed(1)} s; ${anomalies === "" ? "no new anomalies" : `NEW ANOMALIES: ${anomalies}`}`;
}

function summarise(options: ChaosOptions, dir: string, rounds: RoundResult[], schedule: FaultRecord[][], report: CheckReport): ChaosResult {
  const { out: _out, signal: _signal, ...rest } = options;
  const faults = countKinds(schedule.flat());
  const coverage: Record<string, Partial<Record<FaultKind, number>>> = {};
  for (const f of schedule.flat()) {
    const byKind = (coverage[f.target] ??= {});
    byKind[f.kind] = (byKind[f.kind] ?? 0) + 1;
  }
  const { samples, ...figures } = report;
  return {
    seed: options.seed,
    options: rest,
    dir,
    rounds,
    schedule,
    faults,
    coverage,
    acknowledged: report.acknowledged,
    indeterminate: report.indeterminate,
    anomalies: report.anomalies,
    samples,
    report: figures,
    ok: report.ok,
  };
}

function writeJson(file: string, result: ChaosResult): void {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  fs.writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
}

/**
 * The operator commands that open the storage themselves: `migrate`, `rebuild`, `prune`,
 * `recover` and `verify`. In the
 * embedded mode they take the data directory's lock, so they refuse to run while `tidemark start`
 * holds it.
 */
import { sql, type Kysely } from "kysely";
import { asWriteSide, type AuthTables, createBootstrapToken, createLogger, INSTANCES_PROJECTION, migrateToLatest, MIGRATIONS, openBackends, type RecoveryTables, ServingLockError } from "../core/index.js";
import { foldRegistryCounts, loadConsumerConfig, pruneDone, rebuildInstances, type RebuildProgress } from "../consumers/index.js";
import { loadServerConfig, rebuildSnapshots, recoverFromObjectStore, type RecoverProgress, verifyStore } from "../server/index.js";
import { UsageError, type ParsedCommand } from "./args.js";
import { loadUpcasterModule } from "./handler-modules.js";
import type { Io } from "./io.js";

/** `tidemark migrate`. */
export async function runMigrate(cmd: ParsedCommand, io: Io): Promise<number> {
  const config = loadServerConfig(cmd.env);
  const backends = await openBackends(config);
  try {
    const applied = await migrateToLatest(backends.database.db, backends.database.schema);
    await backends.objects.ensureReady();
    const total = Object.keys(MIGRATIONS).length;
    io.out(
      applied.length === 0
        ? `schema ${config.pgSchema} is up to date (${total} migrations) · ${backends.where}\n`
        : `schema ${config.pgSchema} migrated: ${applied.join(", ")} (${applied.length} of ${total}) · ${backends.where}\n`,
    );
    // Once per store, ever: the unique index on the bootstrap flag makes a second attempt a no-op.
    const bootstrap = await createBootstrapToken(backends.database.db as unknown as Kysely<AuthTables>);
    if (bootstrap !== undefined) {
      io.err("bootstrap admin token (every database, every scope), shown once — store it now; revoke it with `tidemark token revoke " + bootstrap.id + "`:\n");
      io.out(`${bootstrap.token}\n`);
    }
    return 0;
  } finally {
    await backends.close();
  }
}

const PROJECTIONS = new Set([INSTANCES_PROJECTION, `projection:${INSTANCES_PROJECTION}`]);
/** The other thing `tidemark rebuild` rebuilds: the instance snapshots (docs/STORAGE.md, Snapshots). */
const SNAPSHOTS = "snapshots";

/** `tidemark rebuild <projection>`, or `tidemark rebuild snapshots`. */
export async function runRebuild(cmd: ParsedCommand, io: Io): Promise<number> {
  const [name] = cmd.positionals as [string];
  if (!PROJECTIONS.has(name) && name !== SNAPSHOTS) throw new UsageError(`unknown projection ${JSON.stringify(name)}: the one projection is \`${INSTANCES_PROJECTION}\` (or \`${SNAPSHOTS}\` for the instance snapshots)`);
  const rawBatch = cmd.values["batch-size"];
  const batchSize = rawBatch === undefined ? 500 : Number(rawBatch);
  if (!Number.isSafeInteger(batchSize) || batchSize < 1 || batchSize > 100_000) throw new UsageError(`--batch-size must be an integer from 1 to 100000, got ${JSON.stringify(rawBatch)}`);
  if (name === SNAPSHOTS) return runSnapshotRebuild(cmd, io, batchSize);
  return resumable(cmd, io, "rebuild", async ({ log, backends, signal }) => {
    const progress = progressReporter(io);
    try {
      await migrateToLatest(backends.database.db, backends.database.schema);
      io.err(`rebuilding projection ${INSTANCES_PROJECTION} from ${backends.where}\n`);
      const result = await rebuildInstances({ db: backends.database.db, objects: backends.objects, batchSize, log, signal, onProgress: progress.update });
      progress.end();
      io.out(
        `rebuilt ${INSTANCES_PROJECTION}: ${result.instances} instances from ${result.events} commit-log entries, up to position ${result.position}` +
          `${result.resumedFrom > 0 ? ` (resumed at ${result.resumedFrom})` : ""}\n`,
      );
      return 0;
    } catch (e) {
      progress.end();
      throw e;
    }
  });
}

/** `tidemark rebuild snapshots`: drops every instance snapshot and takes fresh ones; run again after a stop. */
async function runSnapshotRebuild(cmd: ParsedCommand, io: Io, batchSize: number): Promise<number> {
  return resumable(cmd, io, "rebuild", async ({ config, log, backends, signal }) => {
    await migrateToLatest(backends.database.db, backends.database.schema);
    io.err(`rebuilding the instance snapshots (every ${config.snapshotEvery} events) from ${backends.where}\n`);
    const upcasters = config.upcasters === "" ? {} : { upcasters: await loadUpcasterModule(config.upcasters) };
    const result = await rebuildSnapshots({ db: asWriteSide(backends.database.db), objects: backends.objects, every: config.snapshotEvery, batchSize, log, signal, ...upcasters });
    io.out(`rebuilt snapshots: ${result.taken} taken over ${result.streams} instance streams, ${result.dropped} dropped before\n`);
    return 0;
  });
}

/** `tidemark prune`: one housekeeping pass over the registry (docs/CONTRACT.md C7): prune, then fold the kept counts. */
export async function runPrune(cmd: ParsedCommand, io: Io): Promise<number> {
  const config = loadServerConfig(cmd.env);
  const consumers = loadConsumerConfig(cmd.env);
  const backends = await openBackends(config);
  try {
    await migrateToLatest(backends.database.db, backends.database.schema);
    const deleted = await pruneDone(backends.database.db, { retentionMs: consumers.retentionMs, batchSize: consumers.pruneBatchSize });
    await foldRegistryCounts(backends.database.db);
    io.out(`pruned ${deleted} done rows older than ${consumers.retentionMs / 3_600_000} h · ${backends.where}\n`);
    return 0;
  } finally {
    await backends.close();
  }
}

/** Progress of a rebuild: a bar redrawn in place on a terminal, else a line at most every second. */
export function progressReporter(io: Io, now: () => number = Date.now): { update: (p: RebuildProgress) => void; end: () => void } {
  let lastLine = 0;
  let lastPhase: string | undefined;
  let drawn = false;
  return {
    update(p) {
      const pct = p.target === 0 ? 100 : Math.min(100, Math.floor((p.position / p.target) * 100));
      if (io.errIsTTY) {
        const width = 30;
        const filled = Math.round((pct / 100) * width);
        io.err(`\r${p.phase.padEnd(7)}[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${String(pct).padStart(3)}%  position ${p.position}/${p.target}  ${p.events} events`);
        drawn = true;
        return;
      }
      if (p.phase === lastPhase && p.phase !== "done" && now() - lastLine < 1000) return;
      lastPhase = p.phase;
      lastLine = now();
      const resumed = p.resumedFrom > 0 ? `  resumed from ${p.resumedFrom}` : "";
      io.err(`rebuild ${p.phase} ${pct}% position ${p.position}/${p.target} events ${p.events}${resumed}\n`);
    },
    end() {
      if (drawn) io.err("\n");
      drawn = false;
    },
  };
}

/** `tidemark recover`: the write side's and the relay's tables from the bucket alone (docs/OPERATIONS.md). */
export async function runRecover(cmd: ParsedCommand, io: Io): Promise<number> {
  return resumable(cmd, io, "recover", async ({ config, log, backends, signal }) => {
    const progress = recoverProgressReporter(io);
    try {
      await backends.objects.ensureReady();
      io.err(`recovering schema ${config.pgSchema} from the segments in ${backends.where}\n`);
      const r = await recoverFromObjectStore({
        db: backends.database.db as Kysely<RecoveryTables>,
        schema: backends.database.schema,
        objects: backends.objects,
        log,
        signal,
        onProgress: progress.update,
      });
      progress.end();
      const resumed = r.resumedFrom > 0 ? ` (after segment ${r.resumedFrom}, where the last run stopped)` : "";
      if (r.segments === 0 && r.committed === 0 && r.closed === 0) {
        io.out(`nothing to recover: the log already holds every segment in the bucket (through ${r.lastSegment})${resumed}\n`);
      } else {
        io.out(
          `recovered ${r.events} events from ${r.segments} segments (${r.voidSegments} void)${resumed}; committed ${r.committed} at positions ${r.positionBefore + 1}..${r.positionAfter}; ` +
            `closed ${r.closed} slots with no event; segment counter past ${r.lastSegment}` +
            `${r.checkpointsReset > 0 ? `; ${r.checkpointsReset} relay checkpoints lowered to ${r.positionBefore}` : ""}\n` +
            "next: start the servers and the relay; the relay publishes the recovered events again, and consumers skip what their registry has (docs/OPERATIONS.md)\n",
        );
      }
      if (r.conflicts > 0) {
        io.err(`tidemark recover: ${r.conflicts} events in the bucket clash with committed slots of the log (left as the log has them): run \`tidemark verify\`\n`);
        return 1;
      }
      return 0;
    } catch (e) {
      progress.end();
      if (e instanceof ServingLockError) {
        io.err(`tidemark recover: refused: ${e.message}\n`);
        return 1;
      }
      throw e;
    }
  });
}

/**
 * Runs a long, resumable job (rebuild, recover) on the storage of `cmd`'s settings: SIGINT or
 * SIGTERM aborts `signal`, and a job stopped that way answers 130 saying its progress is stored.
 */
async function resumable(
  cmd: ParsedCommand,
  io: Io,
  name: "rebuild" | "recover",
  job: (ctx: { config: ReturnType<typeof loadServerConfig>; log: ReturnType<typeof createLogger>; backends: Awaited<ReturnType<typeof openBackends>>; signal: AbortSignal }) => Promise<number>,
): Promise<number> {
  const config = loadServerConfig(cmd.env);
  const log = createLogger(`tidemark-${name}`, config.logLevel === "info" ? "warn" : config.logLevel);
  const backends = await openBackends(config);
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    return await job({ config, log, backends, signal: stop.signal });
  } catch (e) {
    if (stop.signal.aborted) {
      io.err(`${name} stopped; its progress is stored: run the same command again to resume\n`);
      return 130;
    }
    throw e;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await backends.close();
  }
}

/** Progress of a recovery on stderr: redrawn in place on a terminal, else a line at most every second. */
export function recoverProgressReporter(io: Io, now: () => number = Date.now): { update: (p: RecoverProgress) => void; end: () => void } {
  const started = now();
  let lastLine = 0;
  let drawn = false;
  return {
    update(p) {
      const seconds = Math.max(0.001, (now() - started) / 1000);
      const rate = Math.round(p.events / seconds);
      const line = `recover ${p.phase.padEnd(8)} segments ${p.segments}/${p.total}  events ${p.events}  committed ${p.committed}  ${rate} events/s`;
      if (io.errIsTTY) {
        io.err(`\r${line}  `);
        drawn = true;
        return;
      }
      if (p.phase !== "done" && p.segments !== p.total && now() - lastLine < 1000) return;
      lastLine = now();
      io.err(`${line}\n`);
    },
    end() {
      if (drawn) io.err("\n");
      drawn = false;
    },
  };
}

/** `tidemark verify`: a read-only audit of the commit log against the bucket; exit 0 clean, 1 anomalies. */
export async function runVerify(cmd: ParsedCommand, io: Io): Promise<number> {
  const rawMax = cmd.values["max-anomalies"];
  const maxAnomalies = rawMax === undefined ? 100 : Number(rawMax);
  if (!Number.isSafeInteger(maxAnomalies) || maxAnomalies < 0) throw new UsageError(`--max-anomalies must be a non-negative integer, got ${JSON.stringify(rawMax)}`);
  const config = loadServerConfig(cmd.env);
  const backends = await openBackends(config);
  try {
    const { rows } = await sql<{ present: boolean }>`select to_regclass(${`${backends.database.schema}.event_log`}) is not null as present`.execute(backends.database.db);
    if (rows[0]?.present !== true) {
      io.err(`tidemark verify: schema ${config.pgSchema} has no commit log (run \`tidemark migrate\`, or \`tidemark recover\` to rebuild it from S3)\n`);
      return 1;
    }
    const started = Date.now();
    let lastLine = 0;
    const report = await verifyStore({
      db: backends.database.db,
      objects: backends.objects,
      maxAnomalies,
      onProgress: (p) => {
        if (p.segments !== p.total && Date.now() - lastLine < 1000) return;
        lastLine = Date.now();
        io.err(`verify segments ${p.segments}/${p.total}  events ${p.events}  ${Math.round(p.events / Math.max(0.001, (Date.now() - started) / 1000))} events/s\n`);
      },
    });
    if (cmd.values["json"] === true) {
      io.out(`${JSON.stringify(report)}\n`);
    } else {
      io.out(
        `verified ${report.events} events in ${report.segments} segments (${report.voidSegments} void), ${report.streams} streams · ${backends.where}\n` +
          `${report.pending > 0 ? `${report.pending} slots in flight (pending)\n` : ""}` +
          `${report.unverifiedLinks > 0 ? `${report.unverifiedLinks} chain links unverifiable (after void slots a recovery kept no link for)\n` : ""}`,
      );
      if (report.clean) io.out("clean: the commit log and S3 agree\n");
      else {
        const counts = Object.entries(report.counts).map(([k, n]) => `${k} ${n}`).join(", ");
        io.out(`ANOMALIES: ${counts}\n`);
        for (const a of report.anomalies) io.out(`  ${a.kind}: ${a.message}\n`);
        const total = Object.values(report.counts).reduce((x, y) => x + (y ?? 0), 0);
        if (total > report.anomalies.length) io.out(`  … and ${total - report.anomalies.length} more (--max-anomalies)\n`);
      }
    }
    return report.clean ? 0 : 1;
  } finally {
    await backends.close();
  }
}

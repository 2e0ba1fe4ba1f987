/**
 * P1 with TLS and tokens beside the plain run (issue #15): one event per call, many aggregates,
 * at concurrency 32 by default, against two server children started the same way — one plain with
 * TIDEMARK_AUTH=off, one with TLS (certificates made with openssl) and TIDEMARK_AUTH=tokens with a
 * token for the benchmark's database. The runs alternate (plain, secure, plain, secure …) so both
 * see the same noise; the ratio of the median rates is the figure (target ≥ 0.85).
 *
 *   node --import tsx bench/secure-bench.ts [--concurrency 32] [--rounds 3] [--seconds 10]
 */
import { randomUUID } from "node:crypto";
import type { Kysely } from "kysely";
import { type AuthTables, createDatabase, createToken, migrateToLatest } from "../core/index.js";
import { EventStoreService } from "../gen/tidemark/v1/event_store_pb.js";
import { createClient } from "../server/index.js";
import { makeTestCerts } from "../test/helpers/index.js";
import { appendLoad } from "./append-bench.js";
import { median } from "./histogram.js";
import { MemorySampler } from "./memory.js";
import { startServerProcess } from "./processes.js";
import { BenchResources } from "./resources.js";
import { writeResultsFile } from "./results-file.js";
import { loadStackEnv } from "./stack-env.js";

const flag = (name: string, fallback: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? fallback : Number(process.argv[i + 1]);
};
const concurrency = flag("concurrency", 32);
const rounds = flag("rounds", 3);
const measureMs = flag("seconds", 10) * 1000;
const log = (m: string) => process.stderr.write(`secure-bench: ${m}\n`);

const stack = loadStackEnv();
const resources = new BenchResources(stack);
const memory = new MemorySampler();
const certs = makeTestCerts();
const plainNames = resources.allocate("plain");
const secureNames = resources.allocate("secure");
try {
  // The token lives in the secure server's schema: migrate it first, as `tidemark migrate` would.
  const database = createDatabase({ url: stack.pgUrl, schema: secureNames.schema, poolSize: 1 });
  await migrateToLatest(database.db, database.schema);
  const token = (await createToken(database.db as unknown as Kysely<AuthTables>, { principal: "bench", databases: ["bench"], scopes: ["write"] }))!.token;
  await database.close();

  const plain = await startServerProcess(stack, plainNames, { memory, role: "server (plain)", env: { TIDEMARK_AUTH: "off" } });
  const secure = await startServerProcess(stack, secureNames, {
    memory,
    role: "server (TLS + tokens)",
    env: { TIDEMARK_AUTH: "tokens", TIDEMARK_TLS_CERT: certs.serverCert, TIDEMARK_TLS_KEY: certs.serverKey },
  });
  const clients = {
    plain: createClient(EventStoreService, plain.address),
    secure: createClient(EventStoreService, secure.address, { tls: { ca: certs.read(certs.serverCa) }, token }),
  };
  const workload = { key: "single", name: "append 1 event/call, many aggregates" } as const;
  const run = randomUUID().slice(0, 6);
  const rates: Record<"plain" | "secure", number[]> = { plain: [], secure: [] };
  const p99: Record<"plain" | "secure", number[]> = { plain: [], secure: [] };
  for (const kind of ["plain", "secure"] as const) {
    log(`warming ${kind} up`);
    await appendLoad(clients[kind], workload, concurrency, { measureMs: 3000, warmupMs: 500, batchSize: 1 }, `bench/${run}-warm-${kind}`);
  }
  for (let r = 0; r < rounds; r++) {
    for (const kind of ["plain", "secure"] as const) {
      const result = await appendLoad(clients[kind], workload, concurrency, { measureMs, warmupMs: 1000, batchSize: 1 }, `bench/${run}-${kind}-r${r}`);
      if (result.errors > 0) throw new Error(`${kind}: ${result.errors} errors, e.g. ${result.errorSamples.join("; ")}`);
      rates[kind].push(result.rate);
      p99[kind].push(result.latency.percentile(99));
      log(`round ${r + 1} ${kind}: ${result.rate.toFixed(0)} events/s, p99 ${result.latency.percentile(99).toFixed(1)} ms`);
    }
  }
  const summary = {
    concurrency,
    rounds,
    measureMs,
    plain: { rates: rates.plain, median: median(rates.plain), p99Ms: p99.plain },
    secure: { rates: rates.secure, median: median(rates.secure), p99Ms: p99.secure },
    ratio: median(rates.secure) / median(rates.plain),
    target: 0.85,
  };
  const file = writeResultsFile("secure", summary);
  process.stdout.write(
    `P1 c${concurrency} single: plain ${summary.plain.median.toFixed(0)} events/s, TLS + tokens ${summary.secure.median.toFixed(0)} events/s, ratio ${summary.ratio.toFixed(2)} (target ≥ 0.85) → ${file}\n`,
  );
  clients.plain.close();
  clients.secure.close();
  await Promise.all([plain.child.stop(5000), secure.child.stop(5000)]);
} finally {
  await resources.cleanup(log);
  certs.remove();
}

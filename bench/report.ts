/**
 * The results of one run: every figure with its baseline and ratio, CPU and S3 requests per event,
 * the targets (bench/TARGETS.md) with pass/short, and the peak memory of each process; printed as
 * tables and written as JSON.
 */
import type { LoadResult } from "./load.js";
import { S3_REQUEST_PRICES } from "./s3-requests.js";

/** One measured figure (or one that could not be measured, with the reason). */
export interface Figure {
  readonly id: string;
  /** `peer`: another store doing the same work (Emmett on the same PostgreSQL). */
  readonly group: "baseline" | "peer" | "P1" | "P2" | "P3" | "P4" | "P5" | "P6" | "soak" | "restart";
  readonly name: string;
  readonly concurrency?: number;
  /** Unit of `rate`, e.g. "events/s". */
  readonly unit: string;
  readonly rate?: number;
  readonly p50Ms?: number;
  readonly p99Ms?: number;
  readonly samples?: number;
  readonly errors?: number;
  readonly errorSamples?: readonly string[];
  /** The figure this one is compared with. */
  readonly baselineId?: string;
  /** rate / baseline rate. */
  readonly rateRatio?: number;
  /** p99 / baseline p99. */
  readonly p99Ratio?: number;
  /** Set when the figure was not measured, e.g. "not measured: relay not available". */
  readonly notMeasured?: string;
  /**
   * Anything else measured; `cpuMsPerUnit`: CPU (ms) per event or PUT by process (bench, server,
   * postgres, s3proxy, kafka); `s3PerEvent`: S3 requests per acknowledged event by `part.op`
   * (server.put, relay.get, …) with `s3UsdPerMillionEvents` and `s3Events` (s3-requests.ts).
   */
  readonly extra?: Readonly<Record<string, number | string | Readonly<Record<string, number>>>>;
}

/** A target of bench/TARGETS.md, evaluated on this run. */
export interface Target {
  readonly name: string;
  /** The measured value (a ratio, ms, or MiB), or null when not measured. */
  readonly value: number | null;
  readonly target: number;
  readonly op: ">=" | "<=";
  readonly unit: string;
  /** null when not measured. */
  readonly met: boolean | null;
  readonly note?: string;
}

/** Memory of one process over the run. */
export interface MemoryFigure {
  readonly process: string;
  readonly peakMiB: number;
  readonly lastMiB: number;
}

/** Everything one run produced (the JSON file). */
export interface BenchReport {
  readonly meta: Readonly<Record<string, unknown>>;
  readonly figures: Figure[];
  readonly targets: Target[];
  readonly memory: MemoryFigure[];
  readonly soak?: Readonly<Record<string, unknown>>;
}

/** A figure from a load result. */
export function figureOf(
  base: Omit<Figure, "rate" | "p50Ms" | "p99Ms" | "samples" | "errors" | "errorSamples">,
  result: LoadResult,
): Figure {
  const s = result.latency.summary();
  return {
    ...base,
    rate: result.rate,
    p50Ms: s.p50,
    p99Ms: s.p99,
    samples: s.count,
    errors: result.errors,
    ...(result.errorSamples.length > 0 ? { errorSamples: result.errorSamples } : {}),
  };
}

/** `figure` with its ratios to `baseline` filled in. */
export function compare(figure: Figure, baseline: Figure | undefined, ratios: { rate?: boolean; p99?: boolean } = { rate: true, p99: true }): Figure {
  if (baseline === undefined || figure.notMeasured !== undefined) return figure;
  return {
    ...figure,
    baselineId: baseline.id,
    ...(ratios.rate !== false && figure.rate !== undefined && baseline.rate ? { rateRatio: figure.rate / baseline.rate } : {}),
    ...(ratios.p99 !== false && figure.p99Ms !== undefined && baseline.p99Ms ? { p99Ratio: figure.p99Ms / baseline.p99Ms } : {}),
  };
}

/** Evaluates a target; a missing value is "not measured". */
export function target(name: string, value: number | undefined, op: ">=" | "<=", threshold: number, unit: string, note?: string): Target {
  const measured = value !== undefined && Number.isFinite(value);
  return {
    name,
    value: measured ? value : null,
    target: threshold,
    op,
    unit,
    met: measured ? (op === ">=" ? value >= threshold : value <= threshold) : null,
    ...(note === undefined ? {} : { note }),
  };
}

const fmt = (n: number | undefined, digits = 1): string => {
  if (n === undefined || !Number.isFinite(n)) return "—";
  if (Math.abs(n) >= 1000) return Math.round(n).toLocaleString("en-US");
  return n.toFixed(digits);
};

/** The order of the request columns; others (a new op) follow. */
const S3_COLUMNS = ["server.put", "server.get", "server.get_range", "server.list", "relay.put", "relay.get", "relay.get_range", "relay.list"];

/**
 * S3 requests per acknowledged event of every figure that counted them, one column per `part.op`
 * that any figure saw, and the request cost per million events.
 */
function renderS3Table(figures: readonly Figure[]): string | undefined {
  const rows = figures.filter((f) => typeof f.extra?.["s3PerEvent"] === "object");
  if (rows.length === 0) return undefined;
  const perEvent = (f: Figure) => f.extra!["s3PerEvent"] as Readonly<Record<string, number>>;
  const seen = new Set(rows.flatMap((f) => Object.entries(perEvent(f)).filter(([, n]) => n > 0).map(([k]) => k)));
  seen.add("server.put");
  const keys = [...S3_COLUMNS.filter((k) => seen.has(k)), ...[...seen].filter((k) => !S3_COLUMNS.includes(k)).sort()];
  const p = S3_REQUEST_PRICES;
  return [
    table(
      ["S3 requests per acknowledged event", "conc", "events", ...keys.map((k) => k.replace(".", " ").replace("_", " ")), "$ per M events"],
      rows.map((f) => [
        f.name,
        f.concurrency === undefined ? "" : String(f.concurrency),
        String(f.extra!["s3Events"] ?? ""),
        ...keys.map((k) => (perEvent(f)[k] ?? 0).toFixed(3)),
        (f.extra!["s3UsdPerMillionEvents"] as number).toFixed(2),
      ]),
      new Set(Array.from({ length: keys.length + 3 }, (_, i) => i + 1)),
    ),
    `requests counted by the server and relay children (tidemark_object_store_requests_total): the server's scraped before and after each P1 workload, warm-up included, ÷ events acknowledged meanwhile; the relay's, from its start, ÷ events it drained;`,
    `cost: AWS S3 Standard request list prices, ${p.region}, ${p.date}: PUT/COPY/POST/LIST $${p.putCopyPostListPer1000} per 1,000, GET and all other $${p.getAndOtherPer1000} per 1,000 (a raw PUT per event: $${(p.putCopyPostListPer1000 * 1000).toFixed(2)})`,
  ].join("\n");
}

function table(headers: readonly string[], rows: ReadonlyArray<readonly string[]>, rightAligned: ReadonlySet<number>): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells.map((c, i) => (rightAligned.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ").trimEnd();
  return [line(headers), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

/** The terminal rendering: figures with baselines and ratios, targets, memory. */
export function renderReport(report: BenchReport): string {
  const byId = new Map(report.figures.map((f) => [f.id, f]));
  // Restart figures are a few samples each (min/median/max), not rates: they get their own table.
  const restarts = report.figures.filter((f) => f.group === "restart");
  const rows = report.figures.filter((f) => f.group !== "restart").map((f) => {
    const b = f.baselineId === undefined ? undefined : byId.get(f.baselineId);
    if (f.notMeasured !== undefined) return [f.group, f.name, f.concurrency === undefined ? "" : String(f.concurrency), f.notMeasured, "", "", "", "", "", "", "", "", ""];
    // The server's CPU per event (P1), or on a raw PUT row the bench's own: what the S3 client
    // costs; on the peer's, the bench's too: Emmett is a library running in this process.
    const byProcess = f.extra?.["cpuMsPerUnit"] as Readonly<Record<string, number>> | undefined;
    const cpu = byProcess?.["server"] ?? (f.group === "baseline" || f.group === "peer" ? byProcess?.["bench"] : undefined);
    return [
      f.group,
      f.name,
      f.concurrency === undefined ? "" : String(f.concurrency),
      `${fmt(f.rate, 0)} ${f.unit}`,
      fmt(f.p50Ms),
      fmt(f.p99Ms),
      f.errors ? String(f.errors) : "",
      b === undefined ? "" : b.name,
      b === undefined ? "" : fmt(b.rate, 0),
      b === undefined ? "" : fmt(b.p99Ms),
      f.rateRatio === undefined ? "" : `${f.rateRatio.toFixed(2)}×`,
      f.p99Ratio === undefined ? "" : `${f.p99Ratio.toFixed(2)}×`,
      typeof cpu === "number" ? fmt(cpu, 2) : "",
    ];
  });
  const out: string[] = [];
  if (rows.length > 0) {
    out.push(table(["grp", "figure", "conc", "rate", "p50 ms", "p99 ms", "err", "baseline", "base rate", "base p99", "rate/base", "p99/base", "cpu ms"], rows, new Set([2, 3, 4, 5, 6, 8, 9, 10, 11, 12])));
    out.push("cpu ms: server CPU per event (P1), the S3 client's CPU per PUT (raw PUT), or the bench's per event (peer: Emmett runs in it)");
    const peer = report.figures.filter((f) => f.group === "peer" && f.rate);
    if (peer.length > 0) {
      const vs = peer.map((p) => {
        const single = byId.get(`p1.single.c${p.concurrency}`);
        return `c${p.concurrency} ${single?.rate === undefined ? "—" : `${(single.rate / p.rate!).toFixed(2)}×`}`;
      });
      out.push(`P1 1 event/call, many aggregates ÷ Emmett peer (rate): ${vs.join(", ")}`);
    }
    out.push("");
  }
  const cpuRows = report.figures.filter((f) => typeof f.extra?.["cpuMsPerUnit"] === "object");
  if (cpuRows.length > 0) {
    // On one machine every process shares the same cores: a rate ratio is, roughly, the ratio of
    // these sums. This shows which process spends what an append costs beyond its PUT.
    const present = new Set(cpuRows.flatMap((f) => Object.keys(f.extra!["cpuMsPerUnit"] as Readonly<Record<string, number>>)));
    const processes = ["bench", "server", "relay", "projection", "postgres", "s3proxy", "kafka"].filter((p) => present.has(p));
    out.push(
      table(
        ["CPU ms per event (or per PUT, raw)", "conc", ...processes, "total"],
        cpuRows.map((f) => {
          const cpu = f.extra!["cpuMsPerUnit"] as Readonly<Record<string, number>>;
          const total = processes.reduce((sum, p) => sum + (cpu[p] ?? 0), 0);
          return [f.name, f.concurrency === undefined ? "" : String(f.concurrency), ...processes.map((p) => (cpu[p] === undefined ? "" : fmt(cpu[p], 2))), fmt(total, 2)];
        }),
        new Set(processes.map((_, i) => i + 2).concat([1, processes.length + 2])),
      ),
    );
    out.push("bench = the load's client side (gRPC client for P1, the S3 client for raw PUTs, Emmett itself for the peer); drains: from the first step to the head");
    out.push("");
  }
  const s3 = renderS3Table(report.figures);
  if (s3 !== undefined) out.push(s3, "");
  if (restarts.length > 0) {
    const ms = (f: Figure, key: string) => {
      const v = f.extra?.[key];
      return typeof v === "number" ? fmt(v, 0) : "";
    };
    out.push(
      table(
        ["restart (spawn → …, ms)", "min", "median", "max", "samples"],
        restarts.map((f) => (f.notMeasured !== undefined ? [f.name, f.notMeasured, "", "", ""] : [f.name, ms(f, "minMs"), ms(f, "medianMs"), ms(f, "maxMs"), String(f.extra?.["samplesMs"] ?? "")])),
        new Set([1, 2, 3]),
      ),
    );
    out.push("");
  }
  out.push(
    table(
      ["target", "value", "target", "result"],
      report.targets.map((t) => [
        t.name,
        t.value === null ? "—" : `${fmt(t.value, 2)} ${t.unit}`.trim(),
        `${t.op === ">=" ? "≥" : "≤"} ${fmt(t.target, 2)} ${t.unit}`.trim(),
        t.met === null ? `not measured${t.note === undefined ? "" : `: ${t.note}`}` : `${t.met ? "pass" : "SHORT"}${t.note === undefined ? "" : ` (${t.note})`}`,
      ]),
      new Set([1, 2]),
    ),
  );
  out.push("");
  out.push(table(["process", "peak RSS MiB", "last RSS MiB"], report.memory.map((m) => [m.process, fmt(m.peakMiB), fmt(m.lastMiB)]), new Set([1, 2])));
  return out.join("\n");
}

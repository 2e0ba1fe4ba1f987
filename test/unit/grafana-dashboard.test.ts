/**
 * The Grafana dashboard (deploy/grafana/tidemark-dashboard.json) names only metrics Tidemark
 * exports: every PromQL expression is tokenised, its metric names collected, and each is looked up
 * in registries built the way the processes build them (server, relay, embedded relay, consumers,
 * object-store tracking, Node's default metrics).
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ConsumerMetrics } from "../../consumers/metrics.js";
import { createLogger } from "../../core/log.js";
import { createRegistry, trackObjectStore } from "../../core/metrics.js";
import type { ObjectStore } from "../../core/object-store.js";
import { EmbeddedRelayMetrics } from "../../relay/embedded-relay.js";
import { RelayMetrics } from "../../relay/relay-metrics.js";
import { serverMetrics } from "../../server/server-metrics.js";

interface Panel {
  readonly title: string;
  readonly targets?: ReadonlyArray<{ readonly expr: string }>;
  readonly panels?: readonly Panel[];
}

const dashboard = JSON.parse(readFileSync(new URL("../../deploy/grafana/tidemark-dashboard.json", import.meta.url), "utf8")) as { panels: Panel[] };

/** Every expression of the dashboard, with its panel's title. */
function expressions(panels: readonly Panel[]): Array<{ panel: string; expr: string }> {
  return panels.flatMap((p) => [...(p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })), ...expressions(p.panels ?? [])]);
}

const KEYWORDS = new Set(["by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset", "inf", "nan"]);

/**
 * The metric names of a PromQL expression: identifiers that are not functions or aggregations
 * (followed by `(`), keywords, label names (inside `{…}` and the label lists of by/on/…), strings,
 * numbers and durations, Grafana variables or range selectors.
 */
export function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""')
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ");
  const names: string[] = [];
  for (const match of stripped.matchAll(/(?<![A-Za-z0-9_:.$])[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const after = stripped.slice(match.index + match[0].length).trimStart();
    if (after.startsWith("(") || KEYWORDS.has(match[0].toLowerCase())) continue;
    names.push(match[0]);
  }
  return names;
}

/** The series names a process exposes: each metric's name, and for histograms their _bucket, _sum and _count. */
function exportedSeries(): Set<string> {
  const registry = createRegistry(true);
  serverMetrics(registry);
  new RelayMetrics(false, registry);
  new EmbeddedRelayMetrics(registry, () => [], undefined as never, createLogger("dashboard-test", "silent"));
  new ConsumerMetrics(registry);
  trackObjectStore(registry, { requests: { put: 0, get: 0, getRange: 0, list: 0 } } as unknown as ObjectStore, "server");
  const out = new Set<string>();
  for (const metric of registry.getMetricsAsArray()) {
    out.add(metric.name);
    if ((metric as { type?: unknown }).type === "histogram") for (const suffix of ["_bucket", "_sum", "_count"]) out.add(`${metric.name}${suffix}`);
  }
  return out;
}

describe("the Grafana dashboard", () => {
  it("finds metric names in PromQL, and nothing else", () => {
    expect(metricNames('histogram_quantile(0.99, sum by (le, method) (rate(tidemark_grpc_call_seconds_bucket{method=~"Append|x"}[$__rate_interval])))')).toEqual(["tidemark_grpc_call_seconds_bucket"]);
    expect(metricNames("max(a_total) - on() group_right() max by (projection) (b_position) / ignoring(x) c offset 5m")).toEqual(["a_total", "b_position", "c"]);
  });

  it("names only metrics the processes export, and covers appends, relay, consumers and the sweeper", () => {
    const exported = exportedSeries();
    const used = expressions(dashboard.panels);
    expect(used.length).toBeGreaterThan(10);
    const unknown = used.flatMap(({ panel, expr }) => metricNames(expr).filter((n) => !exported.has(n)).map((n) => `${panel}: ${n}`));
    expect(unknown).toEqual([]);
    const names = new Set(used.flatMap(({ expr }) => metricNames(expr)));
    for (const wanted of [
      "tidemark_grpc_calls_total",
      "tidemark_grpc_call_seconds_bucket",
      "tidemark_relay_lag_seconds",
      "tidemark_relay_embedded_lag_positions",
      "tidemark_projection_applied_position",
      "tidemark_consumer_dead_letters_total",
      "tidemark_sweeper_resolved_total",
    ]) {
      expect(names, wanted).toContain(wanted);
    }
  });
});

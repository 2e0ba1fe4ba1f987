/** The table `npm run chaos` prints at the end: rounds, faults by kind, and every anomaly count. */
import { ANOMALIES } from "./checker.js";
import { FAULT_KINDS } from "./nemesis.js";
import type { ChaosResult } from "./run-chaos.js";

/** Formats the run's result as plain-text tables. */
export function formatSummary(r: ChaosResult): string {
  const lines: string[] = [];
  const row = (cells: readonly (string | number)[], widths: readonly number[]) =>
    cells.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]!) : String(c).padStart(widths[i]!))).join("  ");
  const w = [6, 13, 14, 8, 7, 10, 10];
  lines.push("", row(["round", "acknowledged", "indeterminate", "refused", "faults", "converged", "anomalies"], w));
  for (const x of r.rounds) {
    const faults = Object.values(x.faults).reduce((a, b) => a + b, 0);
    const anomalies = Object.values(x.newAnomalies).reduce((a, b) => a + b, 0);
    lines.push(row([x.round, x.acknowledged, x.indeterminate, x.failed, faults, x.convergence.converged ? `${(x.convergence.ms / 1000).toFixed(1)} s` : x.recovery?.converged === true ? "NO (restart)" : "NO", anomalies], w));
  }
  lines.push(row(["total", r.acknowledged, r.indeterminate, r.report.failed, r.schedule.flat().length, "", ANOMALIES.reduce((n, a) => n + r.anomalies[a], 0)], w));
  lines.push("", `faults by kind: ${FAULT_KINDS.map((k) => `${k} ${r.faults[k]}`).join(", ")}`);
  const targets = Object.keys(r.coverage).sort();
  lines.push(`fault targets (${targets.length}): ${targets.map((t) => `${t} ${Object.values(r.coverage[t]!).reduce((a, b) => a + b, 0)}`).join(", ")}`);
  lines.push(
    `store: ${r.report.readable} readable events (${r.report.indeterminateLanded} of indeterminate operations), ${r.report.kafkaMessages} Kafka messages (${r.report.kafkaRedeliveries} redelivered), ${r.report.effects} effects`,
  );
  const p = r.report.pending;
  if (p.kafka + p.effects + p.projection + p.inFlightObjects > 0) {
    lines.push(`not judged, the pipeline not settled: ${p.kafka} events not yet on Kafka, ${p.effects} not yet applied, ${p.projection} instances behind, ${p.inFlightObjects} objects of reservations in flight`);
  }
  lines.push("", row(["anomaly", "count"], [18, 6]));
  for (const a of ANOMALIES) lines.push(row([a, r.anomalies[a]], [18, 6]));
  lines.push("", r.ok ? `OK: no anomalies (seed ${r.seed})` : `ANOMALIES FOUND (seed ${r.seed}); samples in the JSON report, logs in ${r.dir}`);
  return `${lines.join("\n")}\n`;
}

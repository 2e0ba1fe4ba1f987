/**
 * A hand-written SVG chart of latency against throughput: one line per workload through its
 * concurrency points, p99 solid and p50 dashed, the raw S3 conditional PUT beside them. No
 * dependencies; log scales on both axes so floors and Tidemark fit in one picture.
 */

/** One point: throughput, p50 and p99, labelled (e.g. with the concurrency). */
export interface ChartPoint {
  readonly x: number;
  readonly p50: number;
  readonly p99: number;
  readonly label: string;
}

/** One line of the chart. */
export interface ChartSeries {
  readonly name: string;
  readonly points: readonly ChartPoint[];
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"];

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

function logTicks(min: number, max: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(min)); e <= Math.ceil(Math.log10(max)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= min * 0.999 && v <= max * 1.001) ticks.push(v);
    }
  }
  return ticks;
}

const label = (v: number) => (v >= 1000 ? `${v / 1000}k` : String(v));

/** The SVG document of the chart. */
export function latencyThroughputSvg(title: string, series: readonly ChartSeries[], xUnit: string): string {
  const W = 900;
  const H = 560;
  const m = { left: 70, right: 220, top: 50, bottom: 60 };
  const points = series.flatMap((s) => s.points).filter((p) => p.x > 0 && p.p50 > 0 && p.p99 > 0);
  if (points.length === 0) return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="80"><text x="10" y="40">no data</text></svg>\n`;
  const xMin = 10 ** Math.floor(Math.log10(Math.min(...points.map((p) => p.x))));
  const xMax = 10 ** Math.ceil(Math.log10(Math.max(...points.map((p) => p.x))));
  const yMin = 10 ** Math.floor(Math.log10(Math.min(...points.map((p) => p.p50))));
  const yMax = 10 ** Math.ceil(Math.log10(Math.max(...points.map((p) => p.p99))));
  const px = (x: number) => m.left + ((Math.log10(x) - Math.log10(xMin)) / (Math.log10(xMax) - Math.log10(xMin))) * (W - m.left - m.right);
  const py = (y: number) => H - m.bottom - ((Math.log10(y) - Math.log10(yMin)) / (Math.log10(yMax) - Math.log10(yMin))) * (H - m.top - m.bottom);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2 - m.right / 2}" y="24" text-anchor="middle" font-size="15">${esc(title)}</text>`);
  for (const t of logTicks(xMin, xMax)) {
    out.push(`<line x1="${px(t)}" y1="${m.top}" x2="${px(t)}" y2="${H - m.bottom}" stroke="#eee"/>`);
    out.push(`<text x="${px(t)}" y="${H - m.bottom + 16}" text-anchor="middle">${label(t)}</text>`);
  }
  for (const t of logTicks(yMin, yMax)) {
    out.push(`<line x1="${m.left}" y1="${py(t)}" x2="${W - m.right}" y2="${py(t)}" stroke="#eee"/>`);
    out.push(`<text x="${m.left - 6}" y="${py(t) + 4}" text-anchor="end">${label(t)}</text>`);
  }
  out.push(`<rect x="${m.left}" y="${m.top}" width="${W - m.left - m.right}" height="${H - m.top - m.bottom}" fill="none" stroke="#444"/>`);
  out.push(`<text x="${(m.left + W - m.right) / 2}" y="${H - 18}" text-anchor="middle">throughput (${esc(xUnit)}, log)</text>`);
  out.push(`<text transform="translate(18 ${(m.top + H - m.bottom) / 2}) rotate(-90)" text-anchor="middle">latency ms (log): p99 solid, p50 dashed</text>`);
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length]!;
    const pts = s.points.filter((p) => p.x > 0 && p.p50 > 0 && p.p99 > 0).slice().sort((a, b) => a.x - b.x);
    const path = (key: "p50" | "p99") => pts.map((p, j) => `${j === 0 ? "M" : "L"}${px(p.x).toFixed(1)},${py(p[key]).toFixed(1)}`).join(" ");
    if (pts.length > 0) {
      out.push(`<path d="${path("p99")}" fill="none" stroke="${color}" stroke-width="2"/>`);
      out.push(`<path d="${path("p50")}" fill="none" stroke="${color}" stroke-width="1.5" stroke-dasharray="5 4"/>`);
    }
    for (const p of pts) {
      out.push(`<circle cx="${px(p.x).toFixed(1)}" cy="${py(p.p99).toFixed(1)}" r="3.5" fill="${color}"/>`);
      out.push(`<circle cx="${px(p.x).toFixed(1)}" cy="${py(p.p50).toFixed(1)}" r="3" fill="white" stroke="${color}"/>`);
      out.push(`<text x="${(px(p.x) + 6).toFixed(1)}" y="${(py(p.p99) - 6).toFixed(1)}" fill="${color}" font-size="10">${esc(p.label)}</text>`);
    }
    const ly = m.top + 10 + i * 22;
    out.push(`<line x1="${W - m.right + 15}" y1="${ly}" x2="${W - m.right + 40}" y2="${ly}" stroke="${color}" stroke-width="2"/>`);
    out.push(`<text x="${W - m.right + 46}" y="${ly + 4}">${esc(s.name)}</text>`);
  });
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}

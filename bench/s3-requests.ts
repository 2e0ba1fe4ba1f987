/**
 * S3 requests per acknowledged event and what they cost. Every Tidemark process counts the
 * requests its object store makes (`tidemark_object_store_requests_total{part, op}` on /metrics,
 * core/metrics.ts); the bench scrapes its children before and after a workload and divides the
 * difference by the events acknowledged meanwhile. It measures, it assumes nothing about the
 * layout: one object per event, or one segment per group commit (docs/STORAGE.md).
 */

/**
 * AWS S3 Standard request prices, list prices for US East (N. Virginia), in USD per 1 000 requests,
 * as stated in issue #14 on `date`. AWS bills PUT, COPY, POST and LIST at one price and GET,
 * SELECT and every other request at the other; storage and transfer are not part of the figure.
 */
export const S3_REQUEST_PRICES = {
  date: "2026-12-01",
  region: "US East (N. Virginia)",
  putCopyPostListPer1000: 0.005,
  getAndOtherPer1000: 0.0004,
} as const;

/** Ops of the metric billed at the PUT/COPY/POST/LIST price; every other op is billed as a GET. */
const PUT_PRICED = new Set(["put", "list"]);

/** Request counts by `part.op` (`server.put`, `relay.get`, `server.get_range`, …), summed over processes. */
export type RequestCounts = Readonly<Record<string, number>>;

const METRIC = "tidemark_object_store_requests_total";

/**
 * Scrapes `/metrics` of every address (host:port) and sums the request counts by part and op.
 * Rejects when an endpoint does not answer: a missing count must not read as zero requests.
 */
export async function scrapeRequests(addresses: readonly string[]): Promise<RequestCounts> {
  const out: Record<string, number> = {};
  for (const address of addresses) {
    const response = await fetch(`http://${address}/metrics`, { signal: AbortSignal.timeout(5_000) });
    if (!response.ok) throw new Error(`GET http://${address}/metrics: ${response.status}`);
    for (const [key, value] of parseRequestCounts(await response.text())) out[key] = (out[key] ?? 0) + value;
  }
  return out;
}

/** The `part.op` counts of the request metric in a Prometheus text exposition. */
export function parseRequestCounts(text: string): Array<[string, number]> {
  const out: Array<[string, number]> = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${METRIC}{`)) continue;
    const close = line.lastIndexOf("}");
    const labels = Object.fromEntries([...line.slice(METRIC.length + 1, close).matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
    const value = Number(line.slice(close + 1).trim().split(/\s+/)[0]);
    if (labels["part"] !== undefined && labels["op"] !== undefined && Number.isFinite(value)) out.push([`${labels["part"]}.${labels["op"]}`, value]);
  }
  return out;
}

/** `after - before` for every key of either. */
export function requestsBetween(before: RequestCounts, after: RequestCounts): RequestCounts {
  const keys = new Set([...Object.keys(before), ...Object.keys(after)]);
  return Object.fromEntries([...keys].map((k) => [k, (after[k] ?? 0) - (before[k] ?? 0)]));
}

/** Adds request counts key by key (two windows of one figure). */
export function addRequests(a: RequestCounts, b: RequestCounts): RequestCounts {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return Object.fromEntries([...keys].map((k) => [k, (a[k] ?? 0) + (b[k] ?? 0)]));
}

/** USD per million events for `perEvent` requests per event (`part.op` keys) at {@link S3_REQUEST_PRICES}. */
export function costPerMillionEvents(perEvent: RequestCounts): number {
  let usd = 0;
  for (const [key, n] of Object.entries(perEvent)) {
    const op = key.slice(key.indexOf(".") + 1);
    const per1000 = PUT_PRICED.has(op) ? S3_REQUEST_PRICES.putCopyPostListPer1000 : S3_REQUEST_PRICES.getAndOtherPer1000;
    usd += n * 1000 * per1000; // n per event × 10⁶ events ÷ 1 000 × price
  }
  return usd;
}

/**
 * The `extra` fields of a figure: requests per acknowledged event by `part.op` (`s3PerEvent`), the
 * request cost per million events (`s3UsdPerMillionEvents`) and the events divided by
 * (`s3Events`). Empty when nothing was counted (no endpoint, or no event acknowledged).
 */
export function s3Extra(requests: RequestCounts | undefined, events: number): Record<string, number | Record<string, number>> {
  if (requests === undefined || events <= 0) return {};
  const perEvent = Object.fromEntries(Object.entries(requests).map(([k, n]) => [k, n / events]));
  return { s3PerEvent: perEvent, s3UsdPerMillionEvents: costPerMillionEvents(perEvent), s3Events: events };
}

/**
 * Runs `fn` between two scrapes of `addresses` and returns its value with the requests made
 * meanwhile (undefined, and a log line, when a scrape failed: the workload still counts).
 */
export async function countRequests<T>(addresses: readonly string[], fn: () => Promise<T>, log: (message: string) => void): Promise<{ value: T; requests: RequestCounts | undefined }> {
  const before = await scrapeRequests(addresses).catch((e: unknown) => {
    log(`S3 request counts not read: ${String(e)}`);
    return undefined;
  });
  const value = await fn();
  if (before === undefined) return { value, requests: undefined };
  const after = await scrapeRequests(addresses).catch((e: unknown) => {
    log(`S3 request counts not read: ${String(e)}`);
    return undefined;
  });
  return { value, requests: after === undefined ? undefined : requestsBetween(before, after) };
}

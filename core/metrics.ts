/**
 * Prometheus metrics: one registry per process (so tests can run several processes' worth of
 * components in one Node process without clashes), exposed over HTTP at /metrics.
 */
import http from "node:http";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry, type Metric } from "prom-client";
import type { ObjectStore } from "./object-store.js";

export { Counter, Gauge, Histogram, Registry };

/** A fresh registry, with Node's default process metrics when `withDefaults` is set. */
export function createRegistry(withDefaults = false): Registry {
  const registry = new Registry();
  if (withDefaults) collectDefaultMetrics({ register: registry, prefix: "tidemark_" });
  return registry;
}

/**
 * Registers every metric of `from` in `into` as well (the same objects, so both show each update);
 * throws when `into` already has one of the names.
 */
export function adoptMetrics(from: Registry, into: Registry): void {
  // getMetricsAsArray is typed as plain objects but returns the metric instances themselves.
  for (const metric of from.getMetricsAsArray() as unknown as Metric[]) into.registerMetric(metric);
}

/** Latency buckets in seconds, from 0.5 ms to 10 s. */
export const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** A running metrics endpoint. */
export interface MetricsServer {
  readonly address: string;
  close(): Promise<void>;
}

/**
 * Serves `GET /metrics` (and `/healthz`) on `addr` (host:port; port 0 picks one): one endpoint for
 * every registry of the process (server, relay, consumers), merged at each scrape so metrics
 * registered after the start appear too. Metric names must be unique across the registries.
 */
export async function startMetricsServer(addr: string, registries: readonly Registry[]): Promise<MetricsServer> {
  const contentType = registries[0]?.contentType ?? Registry.PROMETHEUS_CONTENT_TYPE;
  const render = (): Promise<string> => (registries.length === 1 ? registries[0]!.metrics() : Registry.merge([...registries]).metrics());
  const server = http.createServer((req, res) => {
    if (req.url === "/metrics") {
      render().then(
        (body) => {
          res.writeHead(200, { "content-type": contentType });
          res.end(body);
        },
        (e: unknown) => {
          res.writeHead(500);
          res.end(String(e));
        },
      );
    } else if (req.url === "/healthz") {
      res.writeHead(200);
      res.end("ok\n");
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  const colon = addr.lastIndexOf(":");
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(Number(addr.slice(colon + 1)), addr.slice(0, colon), resolve);
  });
  const bound = server.address() as { port: number };
  return {
    address: `${addr.slice(0, colon)}:${bound.port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** Object stores whose requests a registry reports, by the part that registered them first. */
const trackedStores = new WeakMap<Registry, Map<ObjectStore, string>>();

/**
 * Reports `store`'s requests in `registry` as `tidemark_object_store_requests_total{part, op}`
 * (S3 bills per request: the figure to watch for cost). Parts sharing one store (the embedded
 * mode) count it once, under the first part that registered it.
 */
export function trackObjectStore(registry: Registry, store: ObjectStore, part: string): void {
  let stores = trackedStores.get(registry);
  if (stores === undefined) {
    const tracked = new Map<ObjectStore, string>();
    stores = tracked;
    trackedStores.set(registry, tracked);
    new Gauge({
      name: "tidemark_object_store_requests_total",
      help: "Requests made to the object store (S3 or the embedded file store), by part and kind: put (conditional create), get, get_range (a ranged GET), list",
      labelNames: ["part", "op"],
      registers: [registry],
      collect() {
        this.reset();
        for (const [s, p] of tracked) {
          this.inc({ part: p, op: "put" }, s.requests.put);
          this.inc({ part: p, op: "get" }, s.requests.get);
          this.inc({ part: p, op: "get_range" }, s.requests.getRange);
          this.inc({ part: p, op: "list" }, s.requests.list);
        }
      },
    });
  }
  if (!stores.has(store)) stores.set(store, part);
}

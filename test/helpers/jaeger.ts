/**
 * A real OTLP receiver for trace tests: Jaeger (v2, in-memory storage) on free loopback ports,
 * built and cached by the stack script (`bash scripts/stack.sh jaeger`), read back through its
 * query API (`/api/traces/{id}`).
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { background, cleanEnv, freePort } from "./cli-process.js";
import { waitFor } from "./wait-for.js";

/** One span as Jaeger's query API returns it. */
export interface JaegerSpan {
  readonly traceID: string;
  readonly spanID: string;
  readonly operationName: string;
  readonly references: ReadonlyArray<{ readonly refType: string; readonly spanID: string; readonly traceID: string }>;
  /** Microseconds since the epoch. */
  readonly startTime: number;
  readonly duration: number;
  readonly processID: string;
  readonly tags: ReadonlyArray<{ readonly key: string; readonly value: unknown }>;
}

/** A trace: its spans and the service name of each span's process. */
export interface JaegerTrace {
  readonly spans: readonly JaegerSpan[];
  serviceOf(span: JaegerSpan): string;
}

/** A running Jaeger. */
export interface Jaeger {
  /** For OTEL_EXPORTER_OTLP_ENDPOINT (OTLP over HTTP). */
  readonly otlpEndpoint: string;
  /** The trace as stored so far, or undefined when Jaeger has none of it yet. */
  trace(traceId: string): Promise<JaegerTrace | undefined>;
  stop(): Promise<void>;
}

const STACK = new URL("../../scripts/stack.sh", import.meta.url).pathname;

/** Builds Jaeger if needed (minutes, once per machine) and starts it. */
export async function startJaeger(): Promise<Jaeger> {
  const binary = execFileSync("bash", [STACK, "jaeger"], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim();
  const [otlp, query, queryGrpc] = [await freePort(), await freePort(), await freePort()];
  const dir = mkdtempSync(path.join(tmpdir(), "tidemark-jaeger-"));
  const config = path.join(dir, "jaeger.yaml");
  writeFileSync(
    config,
    `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memory
    http:
      endpoint: 127.0.0.1:${query}
    grpc:
      endpoint: 127.0.0.1:${queryGrpc}
  jaeger_storage:
    backends:
      memory:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:${otlp}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memory
`,
  );
  const child = background(binary, ["--config", `file:${config}`], cleanEnv(), dir);
  const api = `http://127.0.0.1:${query}/api`;
  await waitFor(async () => (await fetch(`${api}/services`).catch(() => undefined))?.ok === true, { what: `Jaeger's query API on :${query}\n${child.stderr()}`, timeoutMs: 60_000 });
  return {
    otlpEndpoint: `http://127.0.0.1:${otlp}`,
    async trace(traceId) {
      const response = await fetch(`${api}/traces/${traceId}`);
      if (response.status === 404) return undefined;
      if (!response.ok) throw new Error(`Jaeger answered ${response.status}: ${await response.text()}`);
      const body = (await response.json()) as { data: Array<{ spans: JaegerSpan[]; processes: Record<string, { serviceName: string }> }> };
      const found = body.data[0];
      if (found === undefined) return undefined;
      return { spans: found.spans, serviceOf: (span) => found.processes[span.processID]?.serviceName ?? "" };
    },
    async stop() {
      await child.stop("SIGTERM", 5000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

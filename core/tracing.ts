/**
 * OpenTelemetry traces (docs/OPERATIONS.md "Traces"). The long-running commands start the SDK
 * when the standard `OTEL_*` variables ask for an exporter ({@link tracingRequested}); otherwise
 * nothing of the SDK is loaded and every helper here calls straight through. The gRPC, pg and AWS
 * SDK instrumentations record the calls; the helpers below record Tidemark's own steps
 * (validation, reservation, segment flush, commit, the relay's read and produce, the consumer's
 * claim, handler and done), always with an explicit parent, since the batching steps work for many
 * callers at once. Only this file and the SDK read the `OTEL_*` variables.
 */
import { createRequire } from "node:module";
import {
  context,
  type Context,
  type Link,
  propagation,
  ROOT_CONTEXT,
  type Span,
  type SpanContext,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
} from "@opentelemetry/api";

export { SpanKind };
export type { Context as TraceContext, Attributes as SpanAttributes };

let enabled = false;
const tracer = trace.getTracer("tidemark");
/** OpenTelemetry's default limit on a span's links; a larger batch links its first ones. */
const MAX_LINKS = 128;
/** Longest wait at exit for the last spans to be exported. */
const SHUTDOWN_MS = 5000;

/**
 * True when the environment asks for traces: an OTLP endpoint or an explicit exporter is set,
 * and `OTEL_SDK_DISABLED` is not `true`.
 */
export function tracingRequested(env: Readonly<Record<string, string | undefined>>): boolean {
  if (env["OTEL_SDK_DISABLED"]?.trim().toLowerCase() === "true") return false;
  const exporter = env["OTEL_TRACES_EXPORTER"]?.trim();
  if (exporter !== undefined && exporter !== "") return exporter !== "none";
  return [env["OTEL_EXPORTER_OTLP_ENDPOINT"], env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]].some((v) => v !== undefined && v.trim() !== "");
}

/** True once {@link startTracing} started the SDK in this process. */
export function tracingEnabled(): boolean {
  return enabled;
}

/** A started SDK: `shutdown` exports what is buffered and stops it. */
export interface Tracing {
  shutdown(): Promise<void>;
}

/**
 * Starts the OpenTelemetry SDK of this process when the environment asks for it (undefined
 * otherwise: nothing loaded, nothing recorded). The SDK reads the standard variables itself
 * (exporter, protocol, endpoint, sampler, batch processor, resource); `serviceName` applies when
 * `OTEL_SERVICE_NAME` is unset.
 *
 * The instrumentations patch grpc-js, pg and the AWS SDK, which are CommonJS packages, through
 * `require` (require-in-the-middle). Tidemark runs as ES modules, and an ES module importing a
 * CommonJS package bypasses `require`, so after the SDK started every instrumented package is
 * required once from here, and every file of them the process already loaded (the CLI's entry
 * imports the whole code base) is required again: the patches then apply to the very objects the
 * ES modules hold, and an ES module importing such a package later gets the patched one from the
 * CommonJS cache. No loader hook (`--import @opentelemetry/instrumentation/hook.mjs`) is needed,
 * and it works the same from the TypeScript sources under tsx and from compiled JavaScript.
 */
export async function startTracing(env: Readonly<Record<string, string | undefined>>, serviceName: string): Promise<Tracing | undefined> {
  if (enabled || !tracingRequested(env)) return undefined;
  const [{ NodeSDK }, { GrpcInstrumentation }, { PgInstrumentation }, { AwsInstrumentation }] = await Promise.all([
    import("@opentelemetry/sdk-node"),
    import("@opentelemetry/instrumentation-grpc"),
    import("@opentelemetry/instrumentation-pg"),
    import("@opentelemetry/instrumentation-aws-sdk"),
  ]);
  const disabled = disabledInstrumentations(env);
  const instrumentations = [
    // Health checks and reflection are probes, not commands.
    disabled.has("grpc") ? undefined : new GrpcInstrumentation({ ignoreGrpcMethods: ["Check", "Watch", "ServerReflectionInfo"] }),
    // Only queries inside a traced step: the background loops (sweeper, leases, LISTEN) poll all day.
    disabled.has("pg") ? undefined : new PgInstrumentation({ requireParentSpan: true, ignoreConnectSpans: true }),
    disabled.has("aws-sdk") ? undefined : new AwsInstrumentation({ suppressInternalInstrumentation: true }),
  ].filter((i) => i !== undefined);
  const unset = (name: string) => env[name] === undefined || env[name] === "";
  const sdk = new NodeSDK({
    ...(unset("OTEL_SERVICE_NAME") ? { serviceName } : {}),
    // Traces only, unless asked: Tidemark's metrics are Prometheus, its logs JSON lines on stdout.
    ...(unset("OTEL_METRICS_EXPORTER") ? { metricReaders: [] } : {}),
    ...(unset("OTEL_LOGS_EXPORTER") ? { logRecordProcessors: [] } : {}),
    instrumentations,
  });
  sdk.start();
  patchPackages(instrumentations.flatMap((i) => i.getModuleDefinitions().flatMap((d) => [d.name, ...d.files.map((f) => f.name)])));
  enabled = true;
  return {
    async shutdown() {
      enabled = false;
      // An unreachable collector must not hold the exit up for the exporter's whole timeout.
      let timer: NodeJS.Timeout | undefined;
      const cap = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, SHUTDOWN_MS);
        timer.unref();
      });
      await Promise.race([sdk.shutdown().catch(() => {}), cap]);
      clearTimeout(timer);
    },
  };
}

/**
 * The instrumentations `OTEL_NODE_DISABLED_INSTRUMENTATIONS` turns off: a comma-separated list of
 * names without the `@opentelemetry/instrumentation-` prefix (`grpc`, `pg`, `aws-sdk`), as
 * OpenTelemetry's Node auto-instrumentation reads it. Tidemark's own step spans stay.
 */
export function disabledInstrumentations(env: Readonly<Record<string, string | undefined>>): ReadonlySet<string> {
  return new Set((env["OTEL_NODE_DISABLED_INSTRUMENTATIONS"] ?? "").split(",").map((name) => name.trim().replace(/^@opentelemetry\/instrumentation-/, "")).filter((name) => name !== ""));
}

/** Requires each instrumented package, and again every loaded file of one, so require-in-the-middle patches them. */
function patchPackages(names: readonly string[]): void {
  const require = createRequire(import.meta.url);
  for (const name of names) {
    try {
      require(name);
    } catch {
      // Not installed at the top level (a package file, or another client than ours): patched when its own package requires it.
    }
  }
  const marker = "/node_modules/";
  for (const file of Object.keys(require.cache)) {
    const at = file.replaceAll("\\", "/").lastIndexOf(marker);
    if (at < 0) continue;
    const rest = file.slice(at + marker.length).replaceAll("\\", "/");
    if (names.some((name) => rest === name || rest.startsWith(`${name}/`))) require(file);
  }
}

/** Options of a step's span. */
export interface StepSpanOptions {
  readonly attributes?: Attributes;
  readonly kind?: SpanKind;
  /** The parent (default: the active context). */
  readonly parent?: Context;
}

/** The default options, one object for every call (nothing allocated per step with tracing off). */
const NO_OPTIONS: StepSpanOptions = Object.freeze({});

/**
 * Runs `fn` in a child span of the active context (or of `options.parent`). With tracing off it
 * only calls `fn`. A thrown error marks the span and is rethrown.
 */
export function inSpan<T>(name: string, fn: () => Promise<T>, options: StepSpanOptions = NO_OPTIONS): Promise<T> {
  if (!enabled) return fn();
  const { parent, ...spanOptions } = options;
  return tracer.startActiveSpan(name, spanOptions, parent ?? context.active(), (span) => ended(span, fn));
}

/**
 * Runs `fn` in a child span of a W3C trace context that came with an event (its metadata or a
 * Kafka header). An event without one gets no span: its command was not traced.
 */
export function inSpanOf<T>(traceparent: string | undefined, tracestate: string | undefined, name: string, fn: () => Promise<T>, options: Omit<StepSpanOptions, "parent"> = NO_OPTIONS): Promise<T> {
  const parent = contextOf(traceparent, tracestate);
  return parent === undefined ? fn() : inSpan(name, fn, { ...options, parent });
}

/**
 * Runs one step done for many callers at once (a segment flush, a group commit, a group of a
 * consumer): its span is a child of the first caller's context and links every other caller's,
 * so it appears in the first caller's trace and each other trace is found from it. Callers whose
 * context carries no span are left out; with none at all, no span is made.
 */
export function inBatchSpan<T>(name: string, callers: ReadonlyArray<Context | undefined>, fn: () => Promise<T>, attributes?: Attributes): Promise<T> {
  if (!enabled) return fn();
  const spans: SpanContext[] = [];
  let parent: Context | undefined;
  for (const caller of callers) {
    const span = caller === undefined ? undefined : trace.getSpanContext(caller);
    if (span === undefined) continue;
    if (parent === undefined) parent = caller;
    else if (spans.length < MAX_LINKS) spans.push(span);
  }
  if (parent === undefined) return fn();
  const links: Link[] = spans.map((s) => ({ context: s }));
  return tracer.startActiveSpan(name, { links, ...(attributes === undefined ? {} : { attributes }) }, parent, (span) => ended(span, fn));
}

async function ended<T>(span: Span, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    span.recordException(e instanceof Error ? e : String(e));
    span.setStatus({ code: SpanStatusCode.ERROR, message: e instanceof Error ? e.message : String(e) });
    throw e;
  } finally {
    span.end();
  }
}

/** The active context, to hand to a batching step (undefined with tracing off). */
export function activeContext(): Context | undefined {
  return enabled ? context.active() : undefined;
}

/** Sets attributes on the span of `ctx` (the active one by default), when there is one. */
export function annotateSpan(attributes: Attributes, ctx?: Context): void {
  if (!enabled) return;
  trace.getSpan(ctx ?? context.active())?.setAttributes(attributes);
}

/** The W3C `traceparent` of the active span, which an event stores as its trace context; undefined with tracing off. */
export function activeTraceparent(): string | undefined {
  if (!enabled) return undefined;
  const span = trace.getSpanContext(context.active());
  return span === undefined ? undefined : traceparentOf(span);
}

function traceparentOf(span: SpanContext): string {
  return `00-${span.traceId}-${span.spanId}-${(span.traceFlags & 0xff).toString(16).padStart(2, "0")}`;
}

/** The context a stored or received W3C trace context names, or undefined (tracing off, none, or malformed). */
export function contextOf(traceparent: string | undefined, tracestate?: string): Context | undefined {
  if (!enabled || traceparent === undefined || traceparent === "") return undefined;
  const carrier: Record<string, string> = { traceparent };
  if (tracestate !== undefined && tracestate !== "") carrier["tracestate"] = tracestate;
  const extracted = propagation.extract(ROOT_CONTEXT, carrier);
  return trace.getSpanContext(extracted) === undefined ? undefined : extracted;
}

/** One span per message of a batch, each a child of its message's own trace context. */
export interface MessageSpans {
  /** Each message's headers, `traceparent` replaced by its span's (same trace), in input order. */
  readonly headers: ReadonlyArray<Readonly<Record<string, string>>>;
  /** Ends every span; an error marks them failed. */
  end(error?: unknown): void;
}

/**
 * Starts a span for every message whose headers carry a W3C trace context (messages without one
 * get none: their command was not traced), as a child of that context, and hands back the headers
 * to send, which name the new span, so the next hop continues the same trace. `startTime` (epoch
 * ms) dates spans of a step that already ran for the whole batch (the relay's read).
 */
export function startMessageSpans<M extends { readonly headers: Readonly<Record<string, string>> }>(
  name: string,
  kind: SpanKind,
  messages: readonly M[],
  attributes: (message: M, index: number) => Attributes,
  startTime?: number,
): MessageSpans {
  if (!enabled) return { headers: messages.map((m) => m.headers), end: () => {} };
  const spans: Span[] = [];
  const headers = messages.map((m, i) => {
    const parent = contextOf(m.headers["traceparent"], m.headers["tracestate"]);
    if (parent === undefined) return m.headers;
    const span = tracer.startSpan(name, { kind, attributes: attributes(m, i), ...(startTime === undefined ? {} : { startTime }) }, parent);
    spans.push(span);
    return { ...m.headers, traceparent: traceparentOf(span.spanContext()) };
  });
  return {
    headers,
    end(error?: unknown) {
      for (const span of spans) {
        if (error !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
        span.end();
      }
    },
  };
}

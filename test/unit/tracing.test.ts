/**
 * When tracing is on (core/tracing.ts, docs/OPERATIONS.md "Traces"), and that it costs nothing when
 * off: no SDK started, every helper calls straight through and hands back what it was given. The
 * spans themselves are checked against a real OTLP receiver in test/integration/tracing.test.ts.
 */
import { describe, expect, it } from "vitest";
import { activeContext, activeTraceparent, contextOf, inBatchSpan, inSpan, inSpanOf, disabledInstrumentations, SpanKind, startMessageSpans, tracingEnabled, tracingRequested } from "../../core/tracing.js";

describe("tracing", () => {
  it("is requested by an OTLP endpoint or an explicit exporter, and never with OTEL_SDK_DISABLED", () => {
    expect(tracingRequested({})).toBe(false);
    expect(tracingRequested({ OTEL_SERVICE_NAME: "x", OTEL_TRACES_SAMPLER: "always_on" })).toBe(false);
    expect(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" })).toBe(true);
    expect(tracingRequested({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://127.0.0.1:4318/v1/traces" })).toBe(true);
    expect(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: " " })).toBe(false);
    expect(tracingRequested({ OTEL_TRACES_EXPORTER: "console" })).toBe(true);
    expect(tracingRequested({ OTEL_TRACES_EXPORTER: "none", OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" })).toBe(false);
    expect(tracingRequested({ OTEL_SDK_DISABLED: "true", OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" })).toBe(false);
    expect(tracingRequested({ OTEL_SDK_DISABLED: "false", OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" })).toBe(true);
  });

  it("reads OTEL_NODE_DISABLED_INSTRUMENTATIONS as OpenTelemetry's Node auto-instrumentation does", () => {
    expect([...disabledInstrumentations({})]).toEqual([]);
    expect([...disabledInstrumentations({ OTEL_NODE_DISABLED_INSTRUMENTATIONS: "pg, aws-sdk,," })]).toEqual(["pg", "aws-sdk"]);
    expect([...disabledInstrumentations({ OTEL_NODE_DISABLED_INSTRUMENTATIONS: "@opentelemetry/instrumentation-grpc" })]).toEqual(["grpc"]);
  });

  it("calls straight through when off", async () => {
    expect(tracingEnabled()).toBe(false);
    const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    expect(await inSpan("x", async () => 1)).toBe(1);
    expect(await inSpanOf(traceparent, undefined, "x", async () => 2)).toBe(2);
    expect(await inBatchSpan("x", [undefined], async () => 3)).toBe(3);
    await expect(inSpan("x", () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    expect(activeContext()).toBeUndefined();
    expect(activeTraceparent()).toBeUndefined();
    expect(contextOf(traceparent)).toBeUndefined();
    const headers = [{ traceparent, event_id: "e1" }, { event_id: "e2" }];
    const spans = startMessageSpans("x", SpanKind.PRODUCER, headers.map((h) => ({ headers: h })), () => ({}));
    expect(spans.headers).toEqual(headers);
    spans.end();
  });
});

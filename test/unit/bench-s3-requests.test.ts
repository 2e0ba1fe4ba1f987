/** The bench's S3 request figures (bench/s3-requests.ts): read from the metric as Tidemark exposes it, priced per event. */
import { describe, expect, it } from "vitest";
import { costPerMillionEvents, parseRequestCounts, requestsBetween, s3Extra } from "../../bench/s3-requests.js";
import { createRegistry, trackObjectStore } from "../../core/metrics.js";
import type { ObjectStore } from "../../core/object-store.js";

/** What trackObjectStore reads of a store: its request counters. */
function counted(requests: { put: number; get: number; getRange: number; list: number }): ObjectStore {
  return { requests } as unknown as ObjectStore;
}

describe("S3 requests per event", () => {
  it("reads every part and op of tidemark_object_store_requests_total from a registry's exposition", async () => {
    const registry = createRegistry(true);
    trackObjectStore(registry, counted({ put: 12, get: 0, getRange: 3, list: 1 }), "server");
    trackObjectStore(registry, counted({ put: 0, get: 40, getRange: 0, list: 0 }), "relay");
    const counts = Object.fromEntries(parseRequestCounts(await registry.metrics()));
    expect(counts).toEqual({
      "server.put": 12,
      "server.get": 0,
      "server.get_range": 3,
      "server.list": 1,
      "relay.put": 0,
      "relay.get": 40,
      "relay.get_range": 0,
      "relay.list": 0,
    });
  });

  it("given counts before and after, when divided by the events acknowledged, then prices PUT and LIST at one rate and the rest at the other", () => {
    const between = requestsBetween({ "server.put": 100, "server.get": 4 }, { "server.put": 1100, "server.get": 4, "server.get_range": 50 });
    expect(between).toEqual({ "server.put": 1000, "server.get": 0, "server.get_range": 50 });
    const extra = s3Extra(between, 1000);
    expect(extra["s3PerEvent"]).toEqual({ "server.put": 1, "server.get": 0, "server.get_range": 0.05 });
    // One PUT per event: $0.005 per 1 000 → $5 per million; 0.05 ranged GETs per event at $0.0004 per 1 000 → $0.02.
    expect(extra["s3UsdPerMillionEvents"]).toBeCloseTo(5.02, 10);
    expect(costPerMillionEvents({ "relay.get": 1 })).toBeCloseTo(0.4, 10);
    expect(costPerMillionEvents({ "server.list": 0.001 })).toBeCloseTo(0.005, 10);
  });

  it("reports nothing when nothing was counted or no event was acknowledged", () => {
    expect(s3Extra(undefined, 10)).toEqual({});
    expect(s3Extra({ "server.put": 3 }, 0)).toEqual({});
  });
});

/** Explicit request limits (docs/CONTRACT.md A2); every one is a setting in server/config.ts. */
export interface Limits {
  /** Largest gRPC message accepted, in bytes. */
  readonly maxMessageBytes: number;
  /** Largest `data` (or instance properties) as JSON, in bytes. */
  readonly maxDataBytes: number;
  /** Deepest nesting of objects and arrays in `data`. */
  readonly maxDataDepth: number;
  /** Most events in one AppendEvents call, and in one AppendToStreams call in all. */
  readonly maxEventsPerAppend: number;
  /** Most aggregates one AppendToStreams call names: written streams and consistency checks together. */
  readonly maxStreamsPerCall: number;
  /** Most metadata entries per event. */
  readonly maxMetadataEntries: number;
  /** Longest metadata value, in characters. */
  readonly maxMetadataValueLength: number;
  /** Most entries in a Subscribe filter's lists (event_types, aggregate_types, databases, kinds). */
  readonly maxSubscribeFilterEntries: number;
}

/** The default limits. */
export const DEFAULT_LIMITS: Limits = Object.freeze({
  maxMessageBytes: 4 * 1024 * 1024,
  maxDataBytes: 256 * 1024,
  maxDataDepth: 32,
  maxEventsPerAppend: 100,
  maxStreamsPerCall: 100,
  maxMetadataEntries: 64,
  maxMetadataValueLength: 1024,
  maxSubscribeFilterEntries: 100,
});

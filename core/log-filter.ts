/**
 * A filter over the commit log's rows, as data: what a filtered Subscribe wants (docs/CONTRACT.md
 * A3), narrowed by what its token may see (T3). Being data rather than a function, it is both
 * tested on a row in memory ({@link rowMatcher}) and pushed down into the commit-log query
 * (core/event-log.ts committedMatching), so rows that do not match are neither returned by
 * PostgreSQL nor their events fetched from S3.
 */
import { databaseOf } from "./tokens.js";
import type { SlotRow } from "./event-log.js";

/** Every field narrows; an absent field lets every row through. */
export interface LogFilter {
  /** Only aggregates of these databases (the part of the id before its first `/`); empty: none. */
  readonly databases?: readonly string[];
  /** Only these aggregate types; empty: none. */
  readonly aggregateTypes?: readonly string[];
  /** Aggregate types start with every one of these (the request's prefix and the token's). */
  readonly aggregateTypePrefixes?: readonly string[];
  /** Only these event types; empty: none. */
  readonly eventTypes?: readonly string[];
  /** Event types start with this. */
  readonly eventTypePrefix?: string;
}

/** True when the filter narrows nothing: every row matches. */
export function filtersNothing(filter: LogFilter): boolean {
  return (
    filter.databases === undefined &&
    filter.aggregateTypes === undefined &&
    (filter.aggregateTypePrefixes ?? []).every((p) => p === "") &&
    filter.eventTypes === undefined &&
    (filter.eventTypePrefix ?? "") === ""
  );
}

/** The filter as a test of one row (the same rows the pushed-down query returns). */
export function rowMatcher(filter: LogFilter): (row: SlotRow) => boolean {
  const databases = filter.databases === undefined ? undefined : new Set(filter.databases);
  const types = filter.aggregateTypes === undefined ? undefined : new Set(filter.aggregateTypes);
  const prefixes = (filter.aggregateTypePrefixes ?? []).filter((p) => p !== "");
  const eventTypes = filter.eventTypes === undefined ? undefined : new Set(filter.eventTypes);
  const eventTypePrefix = filter.eventTypePrefix ?? "";
  return (row) =>
    (databases === undefined || databases.has(databaseOf(row.aggregateId))) &&
    (types === undefined || types.has(row.aggregateType)) &&
    prefixes.every((p) => row.aggregateType.startsWith(p)) &&
    (eventTypes === undefined || eventTypes.has(row.eventType)) &&
    row.eventType.startsWith(eventTypePrefix);
}

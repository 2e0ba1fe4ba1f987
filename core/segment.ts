/**
 * The segment format (docs/STORAGE.md): one immutable S3 object per group commit, holding the
 * events of every append the commit took, each still its own protobuf-JSON envelope. JSON Lines:
 * a header line that lists every event (id, aggregate, seq, where its bytes are), then one envelope
 * per line in the header's order. A reader fetches one event with a ranged GET, a whole segment with
 * one GET, and needs nothing but the segment to know what it holds. Pure: no I/O here.
 */
import { ENVELOPE_CONTENT_TYPE } from "./envelope.js";

/** Content type of a segment object. */
export const SEGMENT_CONTENT_TYPE = "application/vnd.tidemark.segment+jsonl";
/** The `format` field of every segment header. */
export const SEGMENT_FORMAT = "tidemark.segment";
/** The version this code writes (and the only one it reads). */
export const SEGMENT_VERSION = 1;
/** Where segments live in the bucket. */
export const SEGMENT_PREFIX = "segments/";

export { ENVELOPE_CONTENT_TYPE };

/** The key of segment `segment`: the number as 20 digits, so keys sort by number. */
export function segmentKey(segment: number): string {
  return `${SEGMENT_PREFIX}${String(segment).padStart(20, "0")}.jsonl`;
}

/** The segment number of a key made by {@link segmentKey}, or undefined. */
export function segmentOfKey(key: string): number | undefined {
  const match = /^segments\/(\d{20})\.jsonl$/.exec(key);
  return match === null ? undefined : Number(match[1]);
}

/** One event as the header lists it. `offset` counts from the first byte after the header line. */
export interface SegmentEntry {
  readonly eventId: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly seq: number;
  readonly offset: number;
  readonly length: number;
}

/** One event to put into a segment: who it is, and its envelope JSON (one line, no `\n`). */
export interface SegmentEvent {
  readonly eventId: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly seq: number;
  readonly json: string;
}

/** An encoded segment, with each event's absolute byte range in the object (for the commit log). */
export interface EncodedSegment {
  readonly body: Buffer;
  /** In the order given: [start, start + length) is the event's envelope JSON. */
  readonly ranges: ReadonlyArray<{ readonly start: number; readonly length: number }>;
}

/** What a segment object holds. */
export type SegmentContent =
  | { readonly type: "events"; readonly segment: number; readonly createdAt: string; readonly entries: readonly SegmentEntry[]; readonly bodyStart: number }
  | { readonly type: "void"; readonly segment: number; readonly voidedAt: string; readonly reason: string };

/** Thrown for bytes that are not a segment of this version. */
export class SegmentFormatError extends Error {
  override name = "SegmentFormatError";
}

/** Encodes the events of one group commit as a segment. */
export function encodeSegment(segment: number, createdAt: Date, events: readonly SegmentEvent[]): EncodedSegment {
  const lines = events.map((e) => Buffer.from(e.json, "utf8"));
  let offset = 0;
  const entries = events.map((e, i) => {
    if (e.json.includes("\n")) throw new SegmentFormatError(`event ${e.eventId}: an envelope line must not hold a newline`);
    const entry = {
      event_id: e.eventId,
      aggregate_type: e.aggregateType,
      aggregate_id: e.aggregateId,
      sequence_number: String(e.seq),
      offset,
      length: lines[i]!.length,
    };
    offset += lines[i]!.length + 1;
    return entry;
  });
  const header = Buffer.from(
    `${JSON.stringify({ format: SEGMENT_FORMAT, version: SEGMENT_VERSION, segment: String(segment), created_at: createdAt.toISOString(), events: entries })}\n`,
    "utf8",
  );
  const parts: Buffer[] = [header];
  for (const line of lines) parts.push(line, NEWLINE);
  return {
    body: Buffer.concat(parts),
    ranges: entries.map((e) => ({ start: header.length + e.offset, length: e.length })),
  };
}

const NEWLINE = Buffer.from("\n");

/** Encodes the void marker that closes segment number `segment`, which was never written (W5). */
export function encodeVoidSegment(segment: number, voidedAt: Date, reason: string): Buffer {
  return Buffer.from(
    `${JSON.stringify({ format: SEGMENT_FORMAT, version: SEGMENT_VERSION, segment: String(segment), void: { voided_at: voidedAt.toISOString(), reason } })}\n`,
    "utf8",
  );
}

/** Parses a segment's header line (the object's first line); throws SegmentFormatError. */
export function decodeSegmentHeader(bytes: Uint8Array): SegmentContent {
  const end = bytes.indexOf(0x0a);
  if (end < 0) throw new SegmentFormatError("a segment starts with a header line ending in \\n");
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, end).toString("utf8"));
  } catch (e) {
    throw new SegmentFormatError(`the header line is not JSON: ${(e as Error).message}`);
  }
  const h = header as Record<string, unknown>;
  if (h["format"] !== SEGMENT_FORMAT || h["version"] !== SEGMENT_VERSION) {
    throw new SegmentFormatError(`not a ${SEGMENT_FORMAT} version ${SEGMENT_VERSION} header`);
  }
  const segment = Number(h["segment"]);
  if (!Number.isSafeInteger(segment) || segment < 1) throw new SegmentFormatError("the header's segment must be a positive integer");
  const voided = h["void"] as { voided_at?: unknown; reason?: unknown } | undefined;
  if (voided !== undefined) return { type: "void", segment, voidedAt: String(voided.voided_at ?? ""), reason: String(voided.reason ?? "") };
  if (!Array.isArray(h["events"])) throw new SegmentFormatError("the header lists no events");
  const entries = (h["events"] as Array<Record<string, unknown>>).map((e) => ({
    eventId: String(e["event_id"]),
    aggregateType: String(e["aggregate_type"]),
    aggregateId: String(e["aggregate_id"]),
    seq: Number(e["sequence_number"]),
    offset: Number(e["offset"]),
    length: Number(e["length"]),
  }));
  return { type: "events", segment, createdAt: String(h["created_at"] ?? ""), entries, bodyStart: end + 1 };
}

/** A whole segment: its header and each event's envelope JSON, in the header's order. */
export function decodeSegment(bytes: Uint8Array): { readonly content: SegmentContent; readonly events: ReadonlyArray<{ readonly entry: SegmentEntry; readonly json: string }> } {
  const content = decodeSegmentHeader(bytes);
  if (content.type === "void") return { content, events: [] };
  const events = content.entries.map((entry) => {
    const start = content.bodyStart + entry.offset;
    const end = start + entry.length;
    if (end > bytes.length || (end < bytes.length && bytes[end] !== 0x0a)) {
      throw new SegmentFormatError(`event ${entry.eventId}: its bytes [${start}, ${end}) are not a line of the segment`);
    }
    return { entry, json: Buffer.from(bytes.buffer, bytes.byteOffset + start, entry.length).toString("utf8") };
  });
  return { content, events };
}

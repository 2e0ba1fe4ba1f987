/**
 * What the object store holds, read the way any reader of the bucket would (docs/STORAGE.md): every
 * segment under `segments/`, its header and each event's bytes. Tests use it to check S3 itself —
 * what was written, and that nothing was — never the commit log's view of it.
 */
import type { ObjectStore } from "../../core/object-store.js";
import { decodeSegment, SEGMENT_PREFIX, type SegmentContent, type SegmentEntry } from "../../core/segment.js";

/** One event found in a segment: where it is and its envelope JSON, byte for byte. */
export interface StoredEvent extends SegmentEntry {
  readonly segment: number;
  readonly key: string;
  readonly json: string;
}

/** A segment as the bucket holds it. */
export interface StoredSegment {
  readonly key: string;
  readonly content: SegmentContent;
  readonly events: readonly StoredEvent[];
}

/** Every segment in the bucket, in number order, read afresh (a test may look for an overwrite). */
export async function storedSegments(objects: ObjectStore): Promise<StoredSegment[]> {
  const out: StoredSegment[] = [];
  for (const key of await objects.list(SEGMENT_PREFIX)) {
    const body = await objects.read(key);
    if (body === undefined) continue;
    const { content, events } = decodeSegment(body);
    out.push({ key, content, events: events.map(({ entry, json }) => ({ ...entry, segment: content.segment, key, json })) });
  }
  return out;
}

/** Every event the bucket holds, optionally only one stream's, in segment order. */
export async function storedEvents(objects: ObjectStore, stream?: { readonly aggregateType: string; readonly aggregateId: string }): Promise<StoredEvent[]> {
  const all = (await storedSegments(objects)).flatMap((s) => s.events);
  return stream === undefined ? all : all.filter((e) => e.aggregateType === stream.aggregateType && e.aggregateId === stream.aggregateId);
}

/** The stored envelope JSON of one stream's event `seq`, or undefined when the bucket has none. */
export async function storedEvent(objects: ObjectStore, aggregateType: string, aggregateId: string, seq: number): Promise<StoredEvent | undefined> {
  const found = (await storedEvents(objects, { aggregateType, aggregateId })).filter((e) => e.seq === seq);
  if (found.length > 1) throw new Error(`the bucket holds ${found.length} events at ${aggregateType}/${aggregateId} seq ${seq}`);
  return found[0];
}

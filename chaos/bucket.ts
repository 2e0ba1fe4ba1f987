/**
 * Everything the checker knows about how Tidemark lays events out in the bucket, in one place:
 * segments (docs/STORAGE.md), `segments/{number as 20 digits}.jsonl`, JSON Lines — a header line
 * listing each event's aggregate, seq and byte range, then one envelope (protobuf JSON, proto field
 * names) per line; or a single header line with `void` for a number closed unwritten (W5). Read
 * here from the bytes, without Tidemark's code; each event of a segment is one slot object.
 */
import { GetObjectCommand, ListObjectsV2Command, type S3Client } from "@aws-sdk/client-s3";
import { mapLimit } from "./map-limit.js";

/** What one slot's object holds. */
export type SlotContent =
  | { readonly type: "event"; readonly eventId: string; readonly aggregateType: string; readonly aggregateId: string; readonly seq: number }
  | { readonly type: "void"; readonly eventId: string; readonly seq: number }
  | { readonly type: "unreadable"; readonly reason: string };

/** One object of the bucket that the layout places at a slot (or fails to). */
export interface SlotObject {
  readonly key: string;
  /** Undefined when the key does not follow the layout. */
  readonly slot: { readonly aggregateType: string; readonly aggregateId: string; readonly seq: number } | undefined;
  readonly content: SlotContent;
}

const PREFIX = "segments/";
const KEY = /^segments\/\d{20}\.jsonl$/;

/** Decodes one envelope line: the event it holds, or why it is not one. */
export function decodeSlotObject(body: string): SlotContent {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return { type: "unreadable", reason: "not JSON" };
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) return { type: "unreadable", reason: "not an object" };
  const o = parsed as Record<string, unknown>;
  const seq = Number(o["sequence_number"] ?? 0);
  if (typeof o["event_id"] !== "string" || typeof o["aggregate_type"] !== "string" || typeof o["aggregate_id"] !== "string") {
    return { type: "unreadable", reason: "not an envelope" };
  }
  return { type: "event", eventId: o["event_id"], aggregateType: o["aggregate_type"], aggregateId: o["aggregate_id"], seq };
}

/** The slot objects of one segment's bytes: one per event its header lists (none for a void segment). */
export function decodeSegmentObjects(key: string, bytes: Buffer): SlotObject[] {
  const unreadable = (reason: string): SlotObject[] => [{ key, slot: undefined, content: { type: "unreadable", reason } }];
  if (!KEY.test(key)) return unreadable("key outside the layout");
  const end = bytes.indexOf(0x0a);
  if (end < 0) return unreadable("no header line");
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(bytes.subarray(0, end).toString("utf8")) as Record<string, unknown>;
  } catch {
    return unreadable("the header is not JSON");
  }
  if (header["format"] !== "tidemark.segment" || header["version"] !== 1) return unreadable("not a version 1 segment");
  if (header["void"] !== undefined) return [];
  if (!Array.isArray(header["events"])) return unreadable("the header lists no events");
  return (header["events"] as Array<Record<string, unknown>>).map((e, i) => {
    const start = end + 1 + Number(e["offset"]);
    const length = Number(e["length"]);
    const slot = { aggregateType: String(e["aggregate_type"]), aggregateId: String(e["aggregate_id"]), seq: Number(e["sequence_number"]) };
    const name = `${key}#${i}`;
    if (!(start + length <= bytes.length)) return { key: name, slot, content: { type: "unreadable", reason: "the event's bytes are past the end" } };
    return { key: name, slot, content: decodeSlotObject(bytes.subarray(start, start + length).toString("utf8")) };
  });
}

/**
 * Lists every segment and decodes it into slot objects. `cache` (key and ETag → objects) spares
 * the GETs of segments seen in an earlier round; a changed ETag is fetched again.
 */
export async function readSlotObjects(s3: S3Client, bucket: string, cache: Map<string, SlotObject[]>): Promise<SlotObject[]> {
  const listed: { key: string; etag: string }[] = [];
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: PREFIX, ContinuationToken: token }));
    for (const o of page.Contents ?? []) if (o.Key !== undefined) listed.push({ key: o.Key, etag: o.ETag ?? "" });
    token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
  } while (token !== undefined);

  const perSegment = await mapLimit(listed, 16, async ({ key, etag }) => {
    const cacheKey = `${key} ${etag}`;
    let objects = cache.get(cacheKey);
    if (objects === undefined) {
      const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      objects = decodeSegmentObjects(key, Buffer.from(await got.Body!.transformToByteArray()));
      cache.set(cacheKey, objects);
    }
    return objects;
  });
  return perSegment.flat();
}

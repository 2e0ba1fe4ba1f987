/**
 * Everything the checker knows about how Tidemark lays events out in the bucket, in one place,
 * because the layout will change (docs/STORAGE.md will describe segments). Today it is one object
 * per slot, `streams/{aggregate_type}/{encoded aggregate_id}/{seq as 20 digits}.json`, holding
 * either the event's envelope (protobuf JSON, proto field names) or a void marker (W2, W5;
 * docs/ARCHITECTURE.md "S3 key layout"). Read here from the bytes, without Tidemark's code.
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

const PREFIX = "streams/";
const KEY = /^streams\/([A-Za-z][A-Za-z0-9_.-]*)\/((?:[A-Za-z0-9_-]|%[0-9A-F]{2})+)\/(\d{20})\.json$/;

/** The slot a key names, or undefined when it does not follow the layout. */
export function parseKey(key: string): SlotObject["slot"] {
  const m = KEY.exec(key);
  if (m === null) return undefined;
  try {
    return { aggregateType: m[1]!, aggregateId: decodeURIComponent(m[2]!), seq: Number(m[3]!) };
  } catch {
    return undefined;
  }
}

/** Decodes an object's bytes: an envelope, a void marker (it has `voided_at` and no `event_type`), or neither. */
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
  if ("voided_at" in o && !("event_type" in o)) return { type: "void", eventId: String(o["event_id"] ?? ""), seq };
  if (typeof o["event_id"] !== "string" || typeof o["aggregate_type"] !== "string" || typeof o["aggregate_id"] !== "string") {
    return { type: "unreadable", reason: "neither an envelope nor a void marker" };
  }
  return { type: "event", eventId: o["event_id"], aggregateType: o["aggregate_type"], aggregateId: o["aggregate_id"], seq };
}

/**
 * Lists every object under the layout's prefix and decodes it. `cache` (key and ETag → content)
 * spares the GETs of objects seen in an earlier round; a changed ETag is fetched again.
 */
export async function readSlotObjects(s3: S3Client, bucket: string, cache: Map<string, SlotContent>): Promise<SlotObject[]> {
  const listed: { key: string; etag: string }[] = [];
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: PREFIX, ContinuationToken: token }));
    for (const o of page.Contents ?? []) if (o.Key !== undefined) listed.push({ key: o.Key, etag: o.ETag ?? "" });
    token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
  } while (token !== undefined);

  return mapLimit(listed, 16, async ({ key, etag }) => {
    const cacheKey = `${key} ${etag}`;
    let content = cache.get(cacheKey);
    if (content === undefined) {
      const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      content = decodeSlotObject(await got.Body!.transformToString("utf8"));
      cache.set(cacheKey, content);
    }
    return { key, slot: parseKey(key), content };
  });
}

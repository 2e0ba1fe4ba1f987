import {
  CreateBucketCommand,
  GetObjectCommand,
  HeadBucketCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from "@aws-sdk/client-s3";
import { UnavailableError } from "./errors.js";
import { newRequestCounts, type CreateOutcome, type ObjectStore } from "./object-store.js";

/** Connection settings of an S3-compatible store. */
export interface S3Settings {
  readonly endpoint: string;
  readonly bucket: string;
  readonly region: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  /** Per-request timeout in milliseconds (default 10 000). */
  readonly requestTimeoutMs?: number;
  /** Attempts the SDK makes for a retriable failure (default 3). */
  readonly maxAttempts?: number;
  /** PEM of the CA that signed an `https://` endpoint's certificate (default: the system's roots). */
  readonly ca?: Buffer;
}

const CONFLICT_RETRIES = 5;

/**
 * How many times the per-request timeout one LIST page may take. A page names up to 1 000 keys,
 * and some S3 servers read a whole prefix to answer it (S3Proxy's file-system backend lists the
 * directory): bounded by the timeout of a PUT or GET, a LIST of a large bucket timed out on every
 * attempt and a server could not start (chaos seeds 3117 and 3118, 11 000–18 000 segments at a
 * 2 s timeout). A stalled connection still fails a LIST, only later.
 */
const LIST_TIMEOUT_FACTOR = 10;

/** An {@link ObjectStore} over any S3 API server (AWS S3, S3Proxy, MinIO), path-style addressing. */
export class S3ObjectStore implements ObjectStore {
  private readonly client: S3Client;
  /**
   * The same client for LIST pages, with their longer timeout. A client of its own because a
   * per-call timeout (`send(command, { requestTimeout })`) makes the SDK drop its cached middleware
   * for every command, which the PUT and GET path depends on.
   */
  private readonly listClient: S3Client;
  readonly bucket: string;
  readonly requests = newRequestCounts();

  constructor(settings: S3Settings) {
    this.bucket = settings.bucket;
    const requestTimeoutMs = settings.requestTimeoutMs ?? 10_000;
    this.client = s3Client(settings, requestTimeoutMs);
    this.listClient = s3Client(settings, requestTimeoutMs * LIST_TIMEOUT_FACTOR);
  }

  async createIfAbsent(key: string, body: string | Uint8Array, contentType: string): Promise<CreateOutcome> {
    for (let attempt = 0; ; attempt++) {
      this.requests.put += 1;
      try {
        await this.client.send(
          new PutObjectCommand({
            Bucket: this.bucket,
            Key: key,
            Body: body,
            ContentType: contentType,
            IfNoneMatch: "*",
          }),
        );
        return "created";
      } catch (e) {
        const status = httpStatus(e);
        if (status === 412) return "exists";
        // 409 ConditionalRequestConflict: a concurrent conditional write of the same key is in
        // progress; its outcome decides ours, so ask again.
        if (status === 409 && attempt < CONFLICT_RETRIES) continue;
        throw unavailable(`put ${key}`, e);
      }
    }
  }

  async get(key: string): Promise<string | undefined> {
    this.requests.get += 1;
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      return out.Body === undefined ? "" : await out.Body.transformToString("utf8");
    } catch (e) {
      if (httpStatus(e) === 404) return undefined;
      throw unavailable(`get ${key}`, e);
    }
  }

  async read(key: string, range?: { readonly start: number; readonly length: number }): Promise<Buffer | undefined> {
    if (range === undefined) this.requests.get += 1;
    else this.requests.getRange += 1;
    try {
      const out = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: key, ...(range === undefined ? {} : { Range: `bytes=${range.start}-${range.start + range.length - 1}` }) }),
      );
      return out.Body === undefined ? Buffer.alloc(0) : Buffer.from(await out.Body.transformToByteArray());
    } catch (e) {
      if (httpStatus(e) === 404) return undefined;
      throw unavailable(`get ${key}`, e);
    }
  }

  async list(prefix: string, startAfter?: string): Promise<string[]> {
    const keys: string[] = [];
    let token: string | undefined;
    try {
      do {
        this.requests.list += 1;
        const out = await this.listClient.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token, ...(startAfter === undefined ? {} : { StartAfter: startAfter }) }),
        );
        for (const item of out.Contents ?? []) if (item.Key !== undefined) keys.push(item.Key);
        token = out.IsTruncated === true ? out.NextContinuationToken : undefined;
      } while (token !== undefined);
    } catch (e) {
      throw unavailable(`list ${prefix}`, e);
    }
    return keys.sort();
  }

  async ensureReady(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
      return;
    } catch (e) {
      const status = httpStatus(e);
      if (status !== 404 && status !== 403) throw unavailable(`head bucket ${this.bucket}`, e);
    }
    try {
      await this.client.send(new CreateBucketCommand({ Bucket: this.bucket }));
    } catch (e) {
      const name = (e as { name?: string }).name;
      if (name !== "BucketAlreadyOwnedByYou" && name !== "BucketAlreadyExists") {
        throw unavailable(`create bucket ${this.bucket}`, e);
      }
    }
  }

  close(): void {
    this.client.destroy();
    this.listClient.destroy();
  }
}

/** An S3 client for `settings` whose requests time out after `requestTimeoutMs`. */
function s3Client(settings: S3Settings, requestTimeoutMs: number): S3Client {
  return new S3Client({
    endpoint: settings.endpoint,
    region: settings.region,
    forcePathStyle: true,
    credentials: { accessKeyId: settings.accessKeyId, secretAccessKey: settings.secretAccessKey },
    maxAttempts: settings.maxAttempts ?? 3,
    cacheMiddleware: true,
    // Checksums beyond what S3 requires are not understood by every S3-compatible server.
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    requestHandler: {
      requestTimeout: requestTimeoutMs,
      connectionTimeout: Math.min(requestTimeoutMs, 3_000),
      // Without this the handler only logs a warning when a request outlives its timeout and the
      // request hangs on a stalled connection for as long as the socket lives (found by chaos:
      // a partition-stall in front of S3 left a server's writes waiting minutes after the heal).
      throwOnRequestTimeout: true,
      // The handler adds keepAlive and maxSockets to these agent options.
      ...(settings.ca === undefined ? {} : { httpsAgent: { ca: settings.ca } }),
    },
  });
}

function httpStatus(e: unknown): number | undefined {
  if (e instanceof S3ServiceException) return e.$metadata.httpStatusCode;
  return (e as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
}

function unavailable(what: string, cause: unknown): UnavailableError {
  return new UnavailableError(`object store: ${what} failed`, { cause });
}

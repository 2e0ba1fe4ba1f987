/**
 * Direct S3 API access for relay tests (deleting or restoring an object behind the store's back),
 * with the stack's credentials — the real S3Proxy, not a mock.
 */
import { DeleteObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { stackEnv } from "./test-server.js";

/** Deletes and puts objects of `bucket` through the S3 API. */
export function rawS3(bucket: string) {
  const env = stackEnv();
  const client = new S3Client({
    endpoint: env["TIDEMARK_S3_ENDPOINT"]!,
    region: env["TIDEMARK_S3_REGION"] ?? "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: env["TIDEMARK_S3_ACCESS_KEY"]!, secretAccessKey: env["TIDEMARK_S3_SECRET_KEY"]! },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
  return {
    async delete(key: string): Promise<void> {
      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
    },
    async put(key: string, body: string | Uint8Array): Promise<void> {
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
    },
    close(): void {
      client.destroy();
    },
  };
}

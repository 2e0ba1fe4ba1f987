/**
 * What the S3 client itself costs: conditional PUTs through core/s3-object-store.ts (the AWS SDK,
 * as the server uses it) against the same PUTs signed by hand (SigV4) over node:http keep-alive,
 * alternately, with this process's CPU per PUT. The benchmark found the SDK's per-request CPU to be
 * the largest single cost of an append in the server; this shows how much of it is the client.
 * Evidence for a possible leaner adapter, not a part of Tidemark.
 *
 *   node --import tsx bench/s3-client-cost.ts [concurrency] [rounds]
 */
import http from "node:http";
import { createHash, createHmac } from "node:crypto";
import { S3ObjectStore } from "../core/index.js";
import { closedLoop } from "./load.js";
import { BenchResources } from "./resources.js";
import { loadStackEnv, type StackEnv } from "./stack-env.js";
import { envelopeBody, ENVELOPE_CONTENT_TYPE } from "./workload.js";

const sha256 = (data: string) => createHash("sha256").update(data).digest("hex");
const hmac = (key: Buffer | string, data: string) => createHmac("sha256", key).update(data).digest();

/** A minimal `PUT If-None-Match: *` signed with SigV4 (path-style); resolves with the HTTP status. */
function signedPut(stack: StackEnv, agent: http.Agent, bucket: string, key: string, body: string): Promise<number> {
  const endpoint = new URL(stack.s3Endpoint);
  const amzDate = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
  const day = amzDate.slice(0, 8);
  const path = `/${bucket}/${key.split("/").map(encodeURIComponent).join("/")}`;
  const payloadHash = sha256(body);
  const headers: Record<string, string> = {
    "content-type": ENVELOPE_CONTENT_TYPE,
    host: endpoint.host,
    "if-none-match": "*",
    "x-amz-content-sha256": payloadHash,
    "x-amz-date": amzDate,
  };
  const signedHeaders = Object.keys(headers).sort();
  const canonical = ["PUT", path, "", ...signedHeaders.map((h) => `${h}:${headers[h]}`), "", signedHeaders.join(";"), payloadHash].join("\n");
  const scope = `${day}/${stack.s3Region}/s3/aws4_request`;
  const signingKey = hmac(hmac(hmac(hmac(`AWS4${stack.s3SecretKey}`, day), stack.s3Region), "s3"), "aws4_request");
  const signature = createHmac("sha256", signingKey).update(["AWS4-HMAC-SHA256", amzDate, scope, sha256(canonical)].join("\n")).digest("hex");
  headers["authorization"] = `AWS4-HMAC-SHA256 Credential=${stack.s3AccessKey}/${scope}, SignedHeaders=${signedHeaders.join(";")}, Signature=${signature}`;
  headers["content-length"] = String(Buffer.byteLength(body));
  return new Promise((resolve, reject) => {
    const request = http.request({ agent, host: endpoint.hostname, port: endpoint.port, method: "PUT", path, headers }, (response) => {
      response.resume();
      response.on("end", () => resolve(response.statusCode ?? 0));
    });
    request.on("error", reject);
    request.end(body);
  });
}

async function main(): Promise<void> {
  const concurrency = Number(process.argv[2] ?? 16);
  const rounds = Number(process.argv[3] ?? 3);
  const stack = loadStackEnv();
  const resources = new BenchResources(stack);
  const names = resources.allocate("s3client");
  const store = new S3ObjectStore({ endpoint: stack.s3Endpoint, bucket: names.bucket, region: stack.s3Region, accessKeyId: stack.s3AccessKey, secretAccessKey: stack.s3SecretKey });
  // The SDK's default socket cap, so the two differ only in the client's own work.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 50 });
  const body = envelopeBody("s3-client-cost", 1);
  try {
    await store.ensureReady();
    if ((await signedPut(stack, agent, names.bucket, "check.json", body)) !== 200 || (await signedPut(stack, agent, names.bucket, "check.json", body)) !== 412) {
      throw new Error("the hand-signed PUT does not behave as a conditional create");
    }
    for (let round = 0; round < rounds; round++) {
      for (const client of ["aws-sdk (core/s3-object-store.ts)", "hand-signed node:http"] as const) {
        const cpu = process.cpuUsage();
        const result = await closedLoop({
          concurrency,
          durationMs: 2000,
          warmupMs: 300,
          op: async (worker, i) => {
            const key = `cost/${round}/${client.length}/${worker}/${i}.json`;
            if (client.startsWith("aws")) {
              if ((await store.createIfAbsent(key, body, ENVELOPE_CONTENT_TYPE)) !== "created") throw new Error("not created");
            } else {
              const status = await signedPut(stack, agent, names.bucket, key, body);
              if (status !== 200) throw new Error(`HTTP ${status}`);
            }
          },
        });
        const used = process.cpuUsage(cpu);
        const cpuPerPut = (used.user + used.system) / 1000 / result.totalUnits;
        process.stdout.write(
          `round ${round + 1}  ${client.padEnd(34)} ${result.rate.toFixed(0).padStart(6)} PUTs/s  p50 ${result.latency.percentile(50).toFixed(1).padStart(6)} ms  p99 ${result.latency.percentile(99).toFixed(1).padStart(6)} ms  client CPU ${cpuPerPut.toFixed(3)} ms/PUT${result.errors > 0 ? `  errors ${result.errors}` : ""}\n`,
        );
      }
    }
  } finally {
    store.close();
    agent.destroy();
    await resources.cleanup((m) => process.stderr.write(`${m}\n`));
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`s3-client-cost: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);

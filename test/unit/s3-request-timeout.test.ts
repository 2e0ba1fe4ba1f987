/**
 * A request to an S3 endpoint that accepts the connection and then says nothing (a stalled network
 * path, as chaos's partition-stall makes) fails once it outlives the request timeout: reads, writes
 * and listings answer "object store unavailable" instead of waiting on the socket indefinitely.
 * The stand-in here is a TCP listener that never answers — not an S3 API: nothing of S3's
 * behaviour is under test, only the client's timeout. Before the fix this test hung until vitest's
 * timeout.
 */
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UnavailableError } from "../../core/errors.js";
import { S3ObjectStore } from "../../core/s3-object-store.js";

let silent: net.Server;
const sockets = new Set<net.Socket>();
let accepted = 0;
let store: S3ObjectStore;

beforeAll(async () => {
  silent = net.createServer((socket) => {
    accepted += 1;
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.resume();
  });
  await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
  const { port } = silent.address() as net.AddressInfo;
  store = new S3ObjectStore({ endpoint: `http://127.0.0.1:${port}`, bucket: "stalled", region: "us-east-1", accessKeyId: "k", secretAccessKey: "s", requestTimeoutMs: 300, maxAttempts: 1 });
});

afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await new Promise((resolve) => silent.close(resolve));
});

describe("S3 request timeout", () => {
  it("fails a read, a conditional create and a listing on a connection that never answers", { timeout: 20_000 }, async () => {
    await expect(store.read("segments/00000000000000000001.jsonl")).rejects.toBeInstanceOf(UnavailableError);
    await expect(store.createIfAbsent("segments/00000000000000000002.jsonl", "x", "application/x-ndjson")).rejects.toBeInstanceOf(UnavailableError);
    await expect(store.list("segments/")).rejects.toBeInstanceOf(UnavailableError);
    // Every request reached the listener: the failures are timeouts, not refused connections.
    expect(accepted).toBeGreaterThanOrEqual(3);
  });
});

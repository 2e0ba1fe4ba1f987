/**
 * An HTTP proxy in front of S3Proxy that misbehaves the way an S3 endpoint does: `outage` resets
 * every connection (the endpoint is gone), `slowdown` answers a share of requests `503 SlowDown`
 * without forwarding them (throttling), and `lost-reply` forwards a share of requests and then
 * resets the connection instead of answering (the object may exist, the client cannot know).
 * Requests are forwarded byte for byte, so SigV4 signatures stay valid.
 */
import http from "node:http";
import type net from "node:net";
import type { Random } from "./random.js";

/** The proxy's behaviour. */
export type S3Mode = { readonly type: "pass" } | { readonly type: "outage" } | { readonly type: "slowdown"; readonly share: number } | { readonly type: "lost-reply"; readonly share: number };

/** A running S3 fault proxy. */
export interface S3FaultProxy {
  readonly port: number;
  readonly mode: S3Mode;
  set(mode: S3Mode): void;
  /** Requests answered by each behaviour since the start (forwarded, slowdown, lost-reply, reset). */
  readonly counts: Readonly<Record<"forwarded" | "slowdown" | "lostReply" | "reset", number>>;
  close(): Promise<void>;
}

const SLOW_DOWN = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>chaos</RequestId><HostId>chaos</HostId></Error>`;

/** Starts the proxy on 127.0.0.1 (a free port) forwarding to S3Proxy at `targetPort`. */
export async function startS3FaultProxy(targetPort: number, random: Random): Promise<S3FaultProxy> {
  let mode: S3Mode = { type: "pass" };
  const counts = { forwarded: 0, slowdown: 0, lostReply: 0, reset: 0 };
  const sockets = new Set<net.Socket>();
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

  const server = http.createServer((req, res) => {
    if (mode.type === "outage") {
      counts.reset++;
      req.socket.resetAndDestroy();
      return;
    }
    if (mode.type === "slowdown" && random.chance(mode.share)) {
      counts.slowdown++;
      req.resume();
      req.on("end", () => {
        res.writeHead(503, { "content-type": "application/xml", "content-length": Buffer.byteLength(SLOW_DOWN), "x-amz-request-id": "chaos" });
        res.end(SLOW_DOWN);
      });
      return;
    }
    const loseReply = mode.type === "lost-reply" && random.chance(mode.share);
    const upstream = http.request(
      { host: "127.0.0.1", port: targetPort, method: req.method, path: req.url, headers: req.headers, agent },
      (answer) => {
        if (loseReply) {
          // S3 has done the work; the client only sees a dead connection.
          counts.lostReply++;
          answer.resume();
          answer.on("end", () => req.socket.resetAndDestroy());
          return;
        }
        counts.forwarded++;
        res.writeHead(answer.statusCode ?? 502, answer.rawHeaders);
        answer.pipe(res);
      },
    );
    upstream.on("error", () => req.socket.resetAndDestroy());
    req.pipe(upstream);
  });
  server.keepAliveTimeout = 5_000;
  server.on("connection", (socket) => {
    if (mode.type === "outage") {
      counts.reset++;
      socket.resetAndDestroy();
      return;
    }
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    get mode() {
      return mode;
    },
    counts,
    set(next) {
      mode = next;
      if (next.type === "outage") for (const s of sockets) s.resetAndDestroy();
    },
    close() {
      for (const s of sockets) s.destroy();
      agent.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

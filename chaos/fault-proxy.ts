/**
 * A TCP forwarder on one link between a process and a service, for network partitions: `reset`
 * resets every connection and refuses new ones (the peer sees ECONNRESET at once), `stall` stops
 * forwarding without closing anything (the peer's calls hang until its own timeouts fire, as
 * behind a dropped route), `heal` forwards again, delivering what was held back.
 */
import net from "node:net";

/** What a link does with traffic. */
export type LinkState = "up" | "reset" | "stall";

/** A running fault proxy. */
export interface FaultProxy {
  readonly port: number;
  readonly state: LinkState;
  set(state: LinkState): void;
  close(): Promise<void>;
}

interface Connection {
  readonly client: net.Socket;
  upstream: net.Socket | undefined;
}

/** Listens on 127.0.0.1 (port 0 picks one) and forwards to `targetPort`. */
export async function startFaultProxy(targetPort: number, options: { port?: number; targetHost?: string } = {}): Promise<FaultProxy> {
  const host = options.targetHost ?? "127.0.0.1";
  let state: LinkState = "up";
  const connections = new Set<Connection>();

  const connectUpstream = (c: Connection) => {
    const upstream = net.connect(targetPort, host);
    c.upstream = upstream;
    upstream.on("error", () => {});
    upstream.setNoDelay(true);
    // Manual forwarding rather than pipe(): pipe() resumes a paused source on 'drain', which would
    // end a stall behind our back.
    const forward = (from: net.Socket, to: net.Socket) => {
      from.on("data", (chunk: Buffer) => {
        if (!to.write(chunk)) from.pause();
      });
      to.on("drain", () => {
        if (state === "up") from.resume();
      });
      from.on("end", () => to.end());
    };
    forward(c.client, upstream);
    forward(upstream, c.client);
    upstream.on("close", () => c.client.destroy());
    c.client.on("close", () => upstream.destroy());
    if (state === "stall") upstream.pause();
  };

  const server = net.createServer((client) => {
    client.on("error", () => {});
    if (state === "reset") {
      client.resetAndDestroy();
      return;
    }
    client.setNoDelay(true);
    const c: Connection = { client, upstream: undefined };
    connections.add(c);
    client.on("close", () => connections.delete(c));
    if (state === "stall") {
      // Accepted by the kernel but never answered: the upstream is dialled once the link heals.
      client.pause();
      return;
    }
    connectUpstream(c);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;

  return {
    port,
    get state() {
      return state;
    },
    set(next) {
      if (next === state) return;
      state = next;
      for (const c of [...connections]) {
        if (next === "reset") {
          c.client.resetAndDestroy();
          c.upstream?.resetAndDestroy();
          connections.delete(c);
        } else if (next === "stall") {
          c.client.pause();
          c.upstream?.pause();
        } else {
          if (c.upstream === undefined) connectUpstream(c);
          c.client.resume();
          c.upstream!.resume();
        }
      }
    },
    close() {
      for (const c of connections) {
        c.client.destroy();
        c.upstream?.destroy();
      }
      connections.clear();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

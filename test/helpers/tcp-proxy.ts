/**
 * A TCP forwarder between a process and a real service, for outage tests: `down()` resets every
 * connection and refuses new ones (a real network failure, not a mock); `up()` restores service.
 */
import net from "node:net";

export interface TcpProxy {
  readonly port: number;
  readonly url: (scheme?: string) => string;
  down(): void;
  up(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(targetHost: string, targetPort: number): Promise<TcpProxy> {
  let isUp = true;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    if (!isUp) {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(targetPort, targetHost);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    client.pipe(upstream).pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    url: (scheme = "http") => `${scheme}://127.0.0.1:${port}`,
    down() {
      isUp = false;
      for (const s of sockets) s.resetAndDestroy();
    },
    up() {
      isUp = true;
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

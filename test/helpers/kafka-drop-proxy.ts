/**
 * A TCP proxy in front of the real broker that can lose Produce responses: the broker appends the
 * batch, the client never hears back (the connection is reset). It parses Kafka's length-prefixed
 * frames to recognise Produce (api key 0) by correlation id. Use it through a kafkajs
 * `socketFactory`, so every broker connection (also after metadata) goes through it.
 */
import net from "node:net";
import type { ISocketFactory } from "kafkajs";

export interface DropProxy {
  /** Swallow the next `n` Produce responses. */
  dropProduceResponses(n: number): void;
  readonly socketFactory: ISocketFactory;
  close(): Promise<void>;
}

export async function startDropProxy(brokerHost: string, brokerPort: number): Promise<DropProxy> {
  let toDrop = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(brokerPort, brokerHost);
    const produceIds = new Set<number>();
    let fromClient = Buffer.alloc(0);
    let fromBroker = Buffer.alloc(0);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
    client.on("data", (chunk: Buffer) => {
      fromClient = Buffer.concat([fromClient, chunk]);
      while (fromClient.length >= 4 && fromClient.length >= 4 + fromClient.readInt32BE(0)) {
        const frame = fromClient.subarray(0, 4 + fromClient.readInt32BE(0));
        fromClient = fromClient.subarray(frame.length);
        if (frame.readInt16BE(4) === 0) produceIds.add(frame.readInt32BE(8));
        upstream.write(frame);
      }
    });
    upstream.on("data", (chunk: Buffer) => {
      fromBroker = Buffer.concat([fromBroker, chunk]);
      while (fromBroker.length >= 4 && fromBroker.length >= 4 + fromBroker.readInt32BE(0)) {
        const frame = fromBroker.subarray(0, 4 + fromBroker.readInt32BE(0));
        fromBroker = fromBroker.subarray(frame.length);
        if (produceIds.has(frame.readInt32BE(4)) && toDrop > 0) {
          toDrop -= 1;
          client.destroy();
          upstream.destroy();
          return;
        }
        client.write(frame);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    dropProduceResponses(n) {
      toDrop = n;
    },
    socketFactory: ({ onConnect }) => net.connect(port, "127.0.0.1", onConnect),
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

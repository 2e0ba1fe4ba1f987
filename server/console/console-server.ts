/**
 * The web console's port (docs/CONSOLE.md): the page and its bundle, and a gRPC-Web endpoint
 * (@connectrpc/connect-node) for the browser. Each gRPC-Web call runs the very handlers the gRPC port
 * runs — the same guarded service objects, after the same authentication of the same
 * `authorization` metadata — so the console has no data path of its own around the rules
 * (docs/CONTRACT.md T3, A6). Only the services the console uses are exposed here, and no write RPC.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { readFile } from "node:fs/promises";
import path from "node:path";
import type { AddressInfo } from "node:net";
import type { DescMessage, DescService, MessageShape } from "@bufbuild/protobuf";
import { type Code, ConnectError, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "../../core/index.js";
import type { Authenticate, CallContext } from "../grpc/bridge.js";
import { toServiceError } from "../grpc/status.js";
import { CONSOLE_DIR } from "./console-assets.js";

/** One service the console serves over gRPC-Web: its descriptor and (a subset of) its guarded handlers. */
export interface ConsoleService {
  readonly service: DescService;
  /** By method local name; a method without a handler here is not served (UNIMPLEMENTED). */
  readonly handlers: Readonly<Record<string, unknown>>;
}

/** What the console's port needs from the server. */
export interface ConsoleOptions {
  /** `host:port` (port 0 picks a free one). */
  readonly address: string;
  readonly services: readonly ConsoleService[];
  /** The gRPC port's authenticator; undefined with authentication off. */
  readonly authenticate: Authenticate | undefined;
  /** Counts every call as the gRPC port counts its own (tidemark_grpc_* metrics). */
  readonly observe: (path: string, code: number, seconds: number) => void;
  readonly log: Logger;
}

/** The running console. */
export interface ConsoleHandle {
  /** `host:port` actually bound. */
  readonly address: string;
  /** `http://host:port/`. */
  readonly url: string;
  close(): Promise<void>;
}

type Unary = (request: MessageShape<DescMessage>, context: CallContext) => Promise<unknown>;
type Streaming = (request: MessageShape<DescMessage>, context: CallContext) => AsyncIterable<unknown>;

const STATIC: Readonly<Record<string, { readonly file: string; readonly type: string }>> = {
  "/": { file: "index.html", type: "text/html; charset=utf-8" },
  "/console.css": { file: "console.css", type: "text/css; charset=utf-8" },
  "/console.js": { file: "dist/console.js", type: "text/javascript; charset=utf-8" },
  "/console.js.map": { file: "dist/console.js.map", type: "application/json" },
};

// Event data is user input: the page escapes every value (Preact text nodes), and the policy forbids
// inline scripts and foreign origins as a second line.
const HEADERS = {
  "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-cache",
};

function metadataOf(headers: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  headers.forEach((value, key) => (out[key.toLowerCase()] = value));
  return out;
}

/** The gRPC status of a thrown value as a ConnectError (both use the gRPC code numbers). */
function connectErrorOf(e: unknown, log: Logger, path: string): ConnectError {
  if (e instanceof ConnectError) return e;
  const error = toServiceError(e, log, path);
  return new ConnectError(error.details, error.code as number as Code);
}

function routes(options: ConsoleOptions): (router: ConnectRouter) => void {
  return (router) => {
    for (const { service, handlers } of options.services) {
      const implementation: Record<string, unknown> = {};
      for (const method of service.methods) {
        const handler = handlers[method.localName];
        if (typeof handler !== "function") continue;
        const path = `/${service.typeName}/${method.name}`;
        const enter = async (ctx: HandlerContext): Promise<CallContext> => {
          const metadata = metadataOf(ctx.requestHeader);
          // Authentication first, as on the gRPC port: an unauthenticated caller learns nothing.
          const principal = options.authenticate === undefined ? undefined : await options.authenticate(metadata, path);
          return { signal: ctx.signal, metadata, path, principal };
        };
        if (method.methodKind === "unary") {
          implementation[method.localName] = async (request: MessageShape<DescMessage>, ctx: HandlerContext) => {
            const started = performance.now();
            try {
              const out = await (handler as Unary)(request, await enter(ctx));
              options.observe(path, 0, (performance.now() - started) / 1000);
              return out;
            } catch (e) {
              const error = connectErrorOf(e, options.log, path);
              options.observe(path, error.code, (performance.now() - started) / 1000);
              throw error;
            }
          };
        } else if (method.methodKind === "server_streaming") {
          implementation[method.localName] = async function* (request: MessageShape<DescMessage>, ctx: HandlerContext) {
            const started = performance.now();
            let code = 0;
            try {
              for await (const out of (handler as Streaming)(request, await enter(ctx))) {
                if (ctx.signal.aborted) break;
                yield out;
              }
              if (ctx.signal.aborted) code = 1;
            } catch (e) {
              const error = connectErrorOf(e, options.log, path);
              code = error.code;
              throw error;
            } finally {
              options.observe(path, code, (performance.now() - started) / 1000);
            }
          };
        }
      }
      router.service(service, implementation as never);
    }
  };
}

async function serveStatic(request: IncomingMessage, response: ServerResponse): Promise<void> {
  const pathname = new URL(request.url ?? "/", "http://console").pathname;
  const asset = STATIC[pathname];
  if (asset === undefined || (request.method !== "GET" && request.method !== "HEAD")) {
    response.writeHead(404, { ...HEADERS, "content-type": "text/plain; charset=utf-8" }).end("not found\n");
    return;
  }
  let body: Buffer;
  try {
    body = await readFile(path.join(CONSOLE_DIR, asset.file));
  } catch {
    response.writeHead(503, { ...HEADERS, "content-type": "text/plain; charset=utf-8" }).end("the console's bundle is not there yet: the server builds it at start (or run `npm run build:console`); reload in a moment\n");
    return;
  }
  response.writeHead(200, { ...HEADERS, "content-type": asset.type, "content-length": body.byteLength });
  response.end(request.method === "HEAD" ? undefined : body);
}

/** Listens on `options.address` and serves the console until `close`. */
export async function startConsole(options: ConsoleOptions): Promise<ConsoleHandle> {
  const rpc = connectNodeAdapter({
    routes: routes(options),
    grpcWeb: true,
    connect: false,
    grpc: false,
    fallback: (request, response) => {
      serveStatic(request as IncomingMessage, response as ServerResponse).catch((e: unknown) => {
        options.log.warn({ err: e }, "console: could not serve a file");
        if (!response.headersSent) (response as ServerResponse).writeHead(500).end();
      });
    },
  });
  const server = createServer((request, response) => {
    // A page of another origin may not drive the console (with authentication off it would read
    // every database): browsers send Origin on such calls, and it must be this console's own.
    const origin = request.headers.origin;
    if (origin !== undefined && origin !== `http://${request.headers.host ?? ""}`) {
      response.writeHead(403, { ...HEADERS, "content-type": "text/plain; charset=utf-8" }).end("cross-origin requests are refused\n");
      return;
    }
    rpc(request, response);
  });
  const colon = options.address.lastIndexOf(":");
  const host = options.address.slice(0, colon).replace(/^\[|\]$/g, "");
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(Number(options.address.slice(colon + 1)), host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const address = `${options.address.slice(0, colon)}:${port}`;
  return {
    address,
    url: `http://${address}/`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Live-log streams would hold the port open: end them.
        server.closeAllConnections();
      }),
  };
}

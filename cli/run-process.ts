/**
 * The long-running commands: `start`, `server`, `relay`, `consumer`. Each builds its process
 * (process.ts), prints the banner on stderr, and on SIGTERM/SIGINT stops in reverse order; a
 * second signal exits at once.
 */
import type { Handler } from "../consumers/index.js";
import { UsageError, type ParsedCommand } from "./args.js";
import { untilShutdownSignal } from "../core/index.js";
import { loadHandlerModule } from "./handler-modules.js";
import type { Io } from "./io.js";
import { banner, startProcess, type ProcessParts } from "./process.js";

/** Runs a long-running command until a signal stops it; resolves with the exit code. */
export async function runProcess(cmd: ParsedCommand, io: Io, version: string, name: "start" | "server" | "relay" | "consumer"): Promise<number> {
  const parts = await partsOf(cmd, name);
  const running = await startProcess(cmd.env, parts);
  io.err(banner(name, running, version));
  if (running.starting().length > 0) {
    // The banner said some parts were still starting: say when they are up (or gave up).
    const began = Date.now();
    void running.ready.then(() => {
      const states = running.parts();
      if (states.some((p) => p.state === "stopped")) return;
      const up = states.filter((p) => p.state === "running").map((p) => p.component);
      const failed = states.filter((p) => p.state === "failed").map((p) => p.component);
      if (up.length > 0) io.err(`tidemark: ${up.join(", ")} running (${((Date.now() - began) / 1000).toFixed(1)} s after the server)\n`);
      if (failed.length > 0) io.err(`tidemark: ${failed.join(", ")} could not start (see the log); the server keeps serving\n`);
    });
  }
  // SIGHUP re-reads the TLS certificate, key and client CA; the port stays open (docs/SECURITY.md).
  const onHangup = () => {
    const server = running.server;
    if (server === undefined || !server.tls) {
      io.err("tidemark: SIGHUP ignored: no TLS certificates to re-read\n");
      return;
    }
    server.reloadTls().then(
      () => io.err("tidemark: TLS certificates re-read (SIGHUP); new connections use them\n"),
      (e: unknown) => io.err(`tidemark: SIGHUP: ${(e as Error).message}; keeping the current certificates\n`),
    );
  };
  process.on("SIGHUP", onHangup);
  try {
    return await untilShutdownSignal("tidemark", () => running.stop(), (text) => io.err(text));
  } finally {
    process.off("SIGHUP", onHangup);
  }
}

async function partsOf(cmd: ParsedCommand, name: "start" | "server" | "relay" | "consumer"): Promise<ProcessParts> {
  const modules = async (specifiers: readonly string[]): Promise<Handler[]> => (await Promise.all(specifiers.map((s) => loadHandlerModule(s)))).flat();
  switch (name) {
    case "start":
      return { server: true, relay: "if-kafka", projection: true, handlers: await modules((cmd.values["consumer"] as string[] | undefined) ?? []) };
    case "server":
      return { server: true, relay: false, projection: false, handlers: [] };
    case "relay":
      return { server: false, relay: true, projection: false, handlers: [] };
    case "consumer": {
      const names = cmd.positionals;
      if (names.length === 0) throw new UsageError("missing <name>: `projection` or a handler module path");
      const projection = names.includes("projection");
      return { server: false, relay: false, projection, handlers: await modules(names.filter((n) => n !== "projection")) };
    }
  }
}

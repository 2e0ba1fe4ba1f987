/**
 * The long-running commands: `start`, `server`, `relay`, `consumer`. Each builds its process
 * (process.ts), prints the banner on stderr, and on SIGTERM/SIGINT stops in reverse order; a
 * second signal exits at once.
 */
import type { Handler } from "../../consumers/index.js";
import { UsageError, type ParsedCommand } from "./args.js";
import { loadHandlerModule } from "./handler-modules.js";
import type { Io } from "./io.js";
import { banner, startProcess, type ProcessParts, type TidemarkProcess } from "./process.js";

/** Runs a long-running command until a signal stops it; resolves with the exit code. */
export async function runProcess(cmd: ParsedCommand, io: Io, version: string, name: "start" | "server" | "relay" | "consumer"): Promise<number> {
  const parts = await partsOf(cmd, name);
  const running = await startProcess(cmd.env, parts);
  io.err(banner(name, running, version));
  return untilSignal(running, io);
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

function untilSignal(running: TidemarkProcess, io: Io): Promise<number> {
  return new Promise((resolve) => {
    let first: number | undefined;
    const onSignal = (signal: NodeJS.Signals) => {
      if (first !== undefined) {
        // Ctrl-C under `npm start` arrives twice at once (from the terminal, and forwarded by
        // npm): only a signal sent a moment later means "force".
        if (Date.now() - first < 1000) return;
        io.err(`tidemark: ${signal} again: exiting now\n`);
        process.exit(130);
      }
      first = Date.now();
      io.err(`tidemark: ${signal} received, shutting down (again to force)\n`);
      running.stop().then(
        () => {
          io.err("tidemark: stopped\n");
          resolve(0);
        },
        (e: unknown) => {
          io.err(`tidemark: shutdown failed: ${String(e)}\n`);
          resolve(1);
        },
      );
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });
}

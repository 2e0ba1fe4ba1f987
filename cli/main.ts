/**
 * Entry point of the `tidemark` command line: `tidemark <command> [options]`. Configuration comes
 * from environment variables and from flags that stand for them; it is validated at start and
 * errors name the variable (and the flag). Exit codes: 0 done, 1 failure, 2 usage or configuration
 * error, 130 interrupted.
 */
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { commandHelp, nameFlags, parseCommand, UsageError, wrap, type ParsedCommand } from "./args.js";
import { COMMANDS } from "./commands.js";
import { processIo, type Io } from "./io.js";

/**
 * core/ loaded on demand: help, `--version` and usage errors answer without its clients (Kysely,
 * the S3 SDK, kafkajs: most of a second of module loading), as the commands below load their own.
 */
const core = () => import("../core/index.js");

/** The package version, for `--version` and the banner. */
export async function packageVersion(): Promise<string> {
  const { PACKAGE_ROOT } = await core();
  return (JSON.parse(await readFile(path.join(PACKAGE_ROOT, "package.json"), "utf8")) as { version: string }).version;
}

/** `tidemark --help`. */
export function mainHelp(): string {
  const groups: Array<[string, string[]]> = [
    ["Run Tidemark:", ["start", "server", "relay", "consumer"]],
    ["Operate:", ["migrate", "rebuild", "prune", "recover", "verify", "token", "keys", "stack"]],
    ["Talk to a running server over gRPC (--addr, default TIDEMARK_GRPC_ADDR or 127.0.0.1:50051):", ["stream", "tail", "status", "dead-letters"]],
  ];
  const lines = [
    "tidemark — an event store reached over gRPC: events in an S3-compatible store (the source of truth),",
    "PostgreSQL sequencing with optimistic concurrency, a relay to Kafka and exactly-once consumers.",
    "",
    "Usage: tidemark <command> [options]      tidemark <command> --help",
  ];
  for (const [title, names] of groups) {
    lines.push("", title);
    for (const name of names) {
      const spec = COMMANDS.find((c) => c.name === name)!;
      const args = spec.positionals.map((p) => (p.optional === true ? `[${p.name}]` : `<${p.name}>`)).join(" ");
      const left = `${name}${args === "" ? "" : ` ${args}`}`;
      lines.push(`  ${left.length < 38 ? left.padEnd(40) : `${left}\n${" ".repeat(42)}`}${spec.summary}`);
    }
  }
  lines.push(
    "",
    wrap(
      "Storage: with no TIDEMARK_PG_URL and TIDEMARK_S3_* set, Tidemark runs embedded and keeps everything in TIDEMARK_DATA_DIR (default ./.tidemark); with them (and TIDEMARK_KAFKA_BROKERS for the relay and consumers) it uses the real services. Every setting is an environment variable, listed in docs/CONFIGURATION.md; the origin's names (EVENT_STORE_BUCKET, PROCESSED_EVENT_LEASE_TIMEOUT_SECONDS, …) are accepted where they mean the same, and settings that would switch a guarantee off are refused.",
      0,
    ),
    "",
    "Options: -h, --help    --version",
  );
  return `${lines.join("\n")}\n`;
}

/** Runs the CLI on `argv` (without node and the script); resolves with the exit code. */
export async function runCli(argv: readonly string[], io: Io = processIo, env: Readonly<Record<string, string | undefined>> = process.env): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    if (name === "help" && rest[0] !== undefined) return runCli([rest[0], "--help"], io, env);
    io.out(mainHelp());
    return name === undefined ? 2 : 0;
  }
  if (name === "--version" || name === "-v") {
    io.out(`tidemark ${await packageVersion()}\n`);
    return 0;
  }
  const spec = COMMANDS.find((c) => c.name === name);
  if (spec === undefined) {
    io.err(`tidemark: unknown command ${JSON.stringify(name)}\n\n${mainHelp()}`);
    return 2;
  }
  let cmd: ParsedCommand | undefined;
  try {
    cmd = parseCommand(spec, rest, env);
    if (cmd.values["help"] === true) {
      io.out(commandHelp(spec));
      return 0;
    }
    // Loaded on demand: a command loads its own modules (the client commands still load core/).
    switch (spec.name) {
      case "start":
      case "server":
      case "relay":
      case "consumer": {
        // Before the parts are built, so the instrumented clients are patched (core/tracing.ts).
        const tracing = await (await core()).startTracing(env, `tidemark-${spec.name}`);
        try {
          return await (await import("./run-process.js")).runProcess(cmd, io, await packageVersion(), spec.name);
        } finally {
          await tracing?.shutdown();
        }
      }
      case "migrate":
        return await (await import("./run-admin.js")).runMigrate(cmd, io);
      case "rebuild":
        return await (await import("./run-admin.js")).runRebuild(cmd, io);
      case "prune":
        return await (await import("./run-admin.js")).runPrune(cmd, io);
      case "token":
        return await (await import("./run-token.js")).runToken(cmd, io);
      case "keys":
        return await (await import("./run-keys.js")).runKeys(cmd, io);
      case "recover":
        return await (await import("./run-admin.js")).runRecover(cmd, io);
      case "verify":
        return await (await import("./run-admin.js")).runVerify(cmd, io);
      case "stream":
        return await (await import("./run-client.js")).runStream(cmd, io);
      case "tail":
        return await (await import("./run-client.js")).runTail(cmd, io);
      case "status":
        return await (await import("./run-client.js")).runStatus(cmd, io);
      case "dead-letters":
        return await (await import("./run-dead-letters.js")).runDeadLetters(cmd, io);
      case "stack":
        return await runStack(cmd.values["secure"] === true ? [...cmd.positionals, "--secure"] : cmd.positionals, io);
      default:
        throw new Error(`command ${spec.name} has no implementation`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`tidemark ${name}: ${e.message}\nRun \`tidemark ${name} --help\` for its usage.\n`);
      return 2;
    }
    // By name, as the next ones: an instanceof would load core/ for every command.
    if (e instanceof Error && e.name === "ConfigError") {
      io.err(`tidemark ${name}: ${nameFlags(e.message, cmd?.flagOf ?? new Map())}\n\nEvery setting is described in docs/CONFIGURATION.md.\n`);
      return 2;
    }
    if (e instanceof Error && e.name === "DataDirInUseError") {
      io.err(`tidemark ${name}: ${e.message}\n`);
      return 2;
    }
    const inUse = e instanceof Error ? /EADDRINUSE: address already in use (\S+)/.exec(e.message) : null;
    if (inUse !== null) {
      io.err(`tidemark ${name}: cannot listen on ${inUse[1]}: the address is in use (another server?). Choose another with --grpc-addr / TIDEMARK_GRPC_ADDR or --metrics-addr / TIDEMARK_METRICS_ADDR.\n`);
      return 1;
    }
    io.err(`tidemark ${name}: failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    return 1;
  }
}

/** `tidemark stack …`: scripts/stack.sh with the same arguments and exit code. */
async function runStack(args: readonly string[], io: Io): Promise<number> {
  if (args.length === 0) {
    io.err("tidemark stack: missing action: up, down, status or env\n");
    return 2;
  }
  const script = path.join((await core()).PACKAGE_ROOT, "scripts", "stack.sh");
  return new Promise((resolve) => {
    const child = spawn("bash", [script, ...args], { stdio: "inherit" });
    child.on("error", (e) => {
      io.err(`tidemark stack: ${e.message}\n`);
      resolve(1);
    });
    child.on("exit", (code, signal) => resolve(code ?? (signal === null ? 1 : 130)));
  });
}

/** Runs the CLI on this process's arguments and exits with its code (lingering clients must not keep it alive). */
export function main(): void {
  runCli(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`tidemark: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(1);
    },
  );
}

// Run when executed (node --import tsx cli/main.ts); the bin shim calls main() itself.
if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) main();

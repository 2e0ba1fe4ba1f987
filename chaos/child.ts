/**
 * Child processes of a chaos run: each in its own process group (so a signal reaches the whole
 * tree and a Ctrl-C of the harness reaches none of them directly), output appended to a log file,
 * and all of them SIGKILLed when the harness exits however it exits.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";

/** A running child and how it ended. */
export interface Child {
  readonly pid: number;
  readonly process: ChildProcess;
  /** Resolves with the exit code, or the signal's name. */
  readonly exited: Promise<number | NodeJS.Signals>;
  readonly running: () => boolean;
  /** Sends `signal` to the child's whole process group. */
  signal(signal: NodeJS.Signals): void;
}

const live = new Set<Child>();
process.on("exit", () => {
  for (const child of live) child.signal("SIGKILL");
});

/** Starts `command args` detached, stdout and stderr appended to `logFile`. */
export function spawnChild(command: string, args: readonly string[], options: { env: NodeJS.ProcessEnv; logFile: string; cwd?: string }): Child {
  const fd = fs.openSync(options.logFile, "a");
  const proc = spawn(command, args, { env: options.env, cwd: options.cwd, stdio: ["ignore", fd, fd], detached: true });
  fs.closeSync(fd);
  let running = true;
  const child: Child = {
    pid: proc.pid ?? -1,
    process: proc,
    exited: new Promise((resolve) => {
      proc.once("error", () => resolve(-1));
      proc.once("exit", (code, signal) => resolve(code ?? signal ?? -1));
    }),
    running: () => running,
    signal(signal) {
      if (!running || proc.pid === undefined) return;
      try {
        process.kill(-proc.pid, signal);
      } catch {}
    },
  };
  void child.exited.then(() => {
    running = false;
    live.delete(child);
    // Helpers the child left in its group (none expected) must not outlive it.
    try {
      if (proc.pid !== undefined) process.kill(-proc.pid, "SIGKILL");
    } catch {}
  });
  live.add(child);
  return child;
}

/** SIGKILLs the child's group and waits for its exit (a stopped child is continued first). */
export async function killChild(child: Child): Promise<void> {
  if (!child.running()) return;
  child.signal("SIGKILL");
  child.signal("SIGCONT");
  await child.exited;
}

/** A TCP port that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Polls `check` every `intervalMs` until it returns true; false once `timeoutMs` have passed. */
export async function until(check: () => Promise<boolean> | boolean, timeoutMs: number, intervalMs = 100): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return true;
    } catch {}
    if (Date.now() > deadline) return false;
    await delay(intervalMs);
  }
}

/** Resolves after `ms` (for pacing a schedule, never to wait for a condition). */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted === true) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** The bench's CPU accounting (bench/cpu-time.ts): a service's total must not drop when one of its processes exits. */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { describe, expect, it } from "vitest";
import { cpuMsOfStat, readCpuMs } from "../../bench/cpu-time.js";

describe("CPU time per process", () => {
  it("given a stat line whose command name holds spaces and parentheses, then sums utime, stime, cutime and cstime", () => {
    // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime ...
    const stat = "4242 (postgres: a (b) c) S 1 4242 4242 0 -1 4194560 10 0 0 0 120 30 400 50 20 0 1 0 100 0 0";
    expect(cpuMsOfStat(stat)).toBe(((120 + 30 + 400 + 50) * 1000) / 100);
  });

  it("given a child that burned CPU and was waited for, then its parent's time includes it", async () => {
    // The parent runs a CPU-bound child to its end, says so, and then waits on its stdin: the
    // child's time now lives only in the parent's cutime, as a finished PostgreSQL backend's
    // lives in the postmaster's.
    const parent = spawn("sh", ["-c", 'sh -c \'i=0; while [ "$i" -lt 200000 ]; do i=$((i+1)); done\'; echo reaped; read line'], { stdio: ["pipe", "pipe", "inherit"] });
    try {
      const lines = createInterface({ input: parent.stdout });
      const [line] = (await once(lines, "line")) as [string];
      expect(line).toBe("reaped");
      const ms = readCpuMs(parent.pid ?? -1);
      expect(ms).toBeDefined();
      // 200 000 iterations of a shell loop take well over 100 ms of CPU; the parent itself, a few.
      expect(ms).toBeGreaterThan(100);
    } finally {
      parent.stdin.end();
      await once(parent, "exit");
    }
  });
});

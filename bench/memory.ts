/**
 * Memory of the processes under test, from /proc/PID/status: VmRSS (resident now) and VmHWM (the
 * kernel's own peak of VmRSS). A sampler keeps a timeline per process for the soak's flatness check.
 */
import { readFileSync } from "node:fs";

/** Resident memory of a process, in MiB. */
export interface MemoryReading {
  readonly rssMiB: number;
  readonly hwmMiB: number;
}

/** The process's VmRSS and VmHWM, or undefined when it is gone (or /proc is missing). */
export function readMemory(pid: number): MemoryReading | undefined {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    return undefined;
  }
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? Number.NaN);
  return { rssMiB: kb("VmRSS") / 1024, hwmMiB: kb("VmHWM") / 1024 };
}

/** What the sampler knows about one process. */
export interface ProcessMemory {
  readonly name: string;
  readonly pid: number;
  /** Highest VmHWM seen (the kernel's peak RSS). */
  peakMiB: number;
  /** Last VmRSS seen. */
  lastMiB: number;
  /** (ms since the sampler started, VmRSS MiB) every sample. */
  readonly timeline: Array<[number, number]>;
}

/** Samples the memory of named processes every `intervalMs` until stopped. */
export class MemorySampler {
  private readonly processes = new Map<string, ProcessMemory>();
  private readonly started = Date.now();
  private readonly timer: NodeJS.Timeout;

  constructor(intervalMs = 500) {
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.timer.unref();
  }

  /** Starts tracking `pid` under `name` (a later process with the same name keeps the higher peak). */
  track(name: string, pid: number): void {
    const previous = this.processes.get(name);
    this.processes.set(name, { name, pid, peakMiB: previous?.peakMiB ?? 0, lastMiB: 0, timeline: previous?.timeline ?? [] });
    this.sample();
  }

  sample(): void {
    const t = Date.now() - this.started;
    for (const p of this.processes.values()) {
      const m = readMemory(p.pid);
      // A zombie (exited, not yet reaped) has no Vm* lines.
      if (m === undefined || !Number.isFinite(m.rssMiB) || !Number.isFinite(m.hwmMiB)) continue;
      p.peakMiB = Math.max(p.peakMiB, m.hwmMiB, m.rssMiB);
      p.lastMiB = m.rssMiB;
      p.timeline.push([t, m.rssMiB]);
    }
  }

  get(name: string): ProcessMemory | undefined {
    return this.processes.get(name);
  }

  all(): ProcessMemory[] {
    return [...this.processes.values()];
  }

  /** Milliseconds since the sampler started (the timeline's clock). */
  now(): number {
    return Date.now() - this.started;
  }

  stop(): void {
    this.sample();
    clearInterval(this.timer);
  }
}

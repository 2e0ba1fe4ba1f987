/**
 * The named points in the processing of a message where tests inject crashes (kill -9 in
 * test/integration/consumer-crash.test.ts). The event processor reaches the first four, on the
 * per-event path and on the group path alike; the partition scheduler reaches the last.
 */

/** Named points in the processing of one message where tests inject crashes. */
export type CrashPoint = "after-claim" | "before-side-effect" | "after-side-effect" | "before-done" | "before-offset-commit";

/** Where a crash point was reached. */
export interface CrashPointInfo {
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
  readonly eventId?: string;
  /** On the group path: how many events the group holds. */
  readonly groupSize?: number;
}

/** Test hook: runs at each crash point (a test child blocks here and is killed). */
export type CrashHook = (point: CrashPoint, info: CrashPointInfo) => Promise<void>;

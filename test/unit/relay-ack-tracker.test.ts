/** The checkpoint moves only over the contiguous acknowledged prefix (docs/CONTRACT.md R4). */
import { describe, expect, it } from "vitest";
import { AckTracker } from "../../relay/ack-tracker.js";

describe("acknowledged prefix", () => {
  it("does not pass an unacknowledged batch, whatever the order of acknowledgements", () => {
    const t = new AckTracker(10);
    t.register({ after: 10, last: 15 });
    t.register({ after: 15, last: 18 });
    t.register({ after: 18, last: 30 });
    expect(t.ack({ after: 18, last: 30 })).toBe(10);
    expect(t.ack({ after: 15, last: 18 })).toBe(10);
    expect(t.outstanding).toBe(3);
    expect(t.ack({ after: 10, last: 15 })).toBe(30);
    expect(t.outstanding).toBe(0);
  });

  it("moves batch by batch when acknowledgements come in order", () => {
    const t = new AckTracker(0);
    t.register({ after: 0, last: 4 });
    t.register({ after: 4, last: 9 });
    expect(t.ack({ after: 0, last: 4 })).toBe(4);
    expect(t.acknowledged).toBe(4);
    expect(t.ack({ after: 4, last: 9 })).toBe(9);
  });

  it("refuses a batch that would leave a hole in the sent range", () => {
    const t = new AckTracker(0);
    t.register({ after: 0, last: 4 });
    expect(() => t.register({ after: 5, last: 9 })).toThrow(/does not continue/);
    expect(() => t.register({ after: 4, last: 4 })).toThrow(/does not continue/);
    expect(() => t.ack({ after: 9, last: 12 })).toThrow(/not registered/);
  });
});

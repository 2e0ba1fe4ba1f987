import { describe, expect, it } from "vitest";
import { GroupQueue } from "../../consumers/group-queue.js";

/** A group runner that records each group and finishes it when told. */
function recorder() {
  const groups: number[][] = [];
  const finish: Array<() => void> = [];
  const run = (items: readonly number[]) => {
    groups.push([...items]);
    return new Promise<number[]>((resolve) => finish.push(() => resolve(items.map((n) => n * 10))));
  };
  return { groups, finish, run };
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));
/** A finished group frees its place in microtasks, and the next group starts a turn later. */
const afterFinish = async () => {
  await turn();
  await turn();
};

describe("GroupQueue", () => {
  it("groups what is submitted in one turn, and what arrives while the groups run", async () => {
    const r = recorder();
    const queue = new GroupQueue(r.run, 100, 1);
    const first = [1, 2, 3].map((n) => queue.submit(n));
    await turn();
    expect(r.groups).toEqual([[1, 2, 3]]);
    const later = [4, 5].map((n) => queue.submit(n));
    await turn();
    // One group at a time: 4 and 5 wait for the running group.
    expect(r.groups).toHaveLength(1);
    r.finish[0]!();
    expect(await Promise.all(first)).toEqual([10, 20, 30]);
    await afterFinish();
    expect(r.groups).toEqual([[1, 2, 3], [4, 5]]);
    r.finish[1]!();
    expect(await Promise.all(later)).toEqual([40, 50]);
  });

  it("caps the group size and runs up to `parallel` groups at once", async () => {
    const r = recorder();
    const queue = new GroupQueue(r.run, 2, 2);
    const all = [1, 2, 3, 4, 5].map((n) => queue.submit(n));
    await turn();
    expect(r.groups).toEqual([[1, 2], [3, 4]]);
    r.finish[1]!();
    await afterFinish();
    expect(r.groups).toEqual([[1, 2], [3, 4], [5]]);
    r.finish[0]!();
    r.finish[2]!();
    expect(await Promise.all(all)).toEqual([10, 20, 30, 40, 50]);
  });

  it("rejects every member of a failed group and keeps serving later ones", async () => {
    let fail = true;
    const queue = new GroupQueue<number, number>(async (items) => {
      if (fail) throw new Error("registry unreachable");
      return items.map((n) => n + 1);
    }, 10, 1);
    const failed = await Promise.allSettled([queue.submit(1), queue.submit(2)]);
    expect(failed.map((f) => f.status)).toEqual(["rejected", "rejected"]);
    fail = false;
    expect(await queue.submit(3)).toBe(4);
  });
});

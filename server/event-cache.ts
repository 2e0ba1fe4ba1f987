import type { EventEnvelope } from "../core/index.js";

/**
 * A bounded LRU of decoded events by slot key. Stored events never change (docs/CONTRACT.md W2), so a
 * cached copy can never be stale.
 */
export class EventCache {
  private readonly entries = new Map<string, EventEnvelope>();

  constructor(private readonly capacity: number) {}

  get(key: string): EventEnvelope | undefined {
    const hit = this.entries.get(key);
    if (hit !== undefined) {
      this.entries.delete(key);
      this.entries.set(key, hit);
    }
    return hit;
  }

  set(key: string, envelope: EventEnvelope): void {
    if (this.capacity <= 0) return;
    this.entries.delete(key);
    this.entries.set(key, envelope);
    if (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value!);
  }
}

/**
 * The pure parts of erasure by crypto-shredding (core/privacy.ts, docs/CONTRACT.md T5): the sealed
 * format, the master keyring, opening an envelope, and the subject id rules.
 */
import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { checkSubject, contentHash, ERASED_DATA, EventEnvelopeSchema, EventKind, isErased, MasterKeyring, openData, openEnvelope, sealData } from "../../core/index.js";

const key = () => randomBytes(32);

describe("T5 sealed data", () => {
  it("opens what it sealed, only with the same key, event and subject", () => {
    const k = key();
    const sealed = sealData(k, "e-1", "s-1", JSON.stringify({ email: "a@example.org", n: 1 }));
    expect(Buffer.from(sealed).toString("latin1")).not.toContain("a@example.org");
    expect(openData(k, "e-1", "s-1", sealed)).toEqual({ email: "a@example.org", n: 1 });
    expect(() => openData(key(), "e-1", "s-1", sealed)).toThrow();
    expect(() => openData(k, "e-2", "s-1", sealed)).toThrow();
    expect(() => openData(k, "e-1", "s-2", sealed)).toThrow();
  });

  it("seals one event's data to the same bytes every time (W4 retries), and other events or data to others", () => {
    const k = key();
    const a = sealData(k, "e-1", "s", '{"x":1}');
    expect(Buffer.from(sealData(k, "e-1", "s", '{"x":1}')).equals(Buffer.from(a))).toBe(true);
    expect(Buffer.from(sealData(k, "e-2", "s", '{"x":1}')).equals(Buffer.from(a))).toBe(false);
    expect(Buffer.from(sealData(k, "e-1", "s", '{"x":2}')).subarray(1, 13).equals(Buffer.from(a).subarray(1, 13))).toBe(false);
  });

  it("hashes the sealed bytes of an event with a subject, and events without one as before", () => {
    const base = { eventType: "T", aggregateType: "A", aggregateId: "d/1", data: {}, metadata: { kind: "domain" }, schemaVersion: 1, kind: EventKind.DOMAIN };
    expect(contentHash({ ...base, subject: "" })).toBe(contentHash(base));
    const one = contentHash({ ...base, subject: "s", sealedData: new Uint8Array([1, 2]) });
    expect(one).not.toBe(contentHash(base));
    expect(contentHash({ ...base, subject: "s", sealedData: new Uint8Array([1, 3]) })).not.toBe(one);
  });

  it("opens an envelope, or puts the erasure marker in place of its data when the key is gone", () => {
    const k = key();
    const envelope = create(EventEnvelopeSchema, { eventId: "e-1", aggregateId: "d/1", subject: "s", sealedData: sealData(k, "e-1", "s", '{"a":1}') });
    expect(openEnvelope(envelope, k).data).toEqual({ a: 1 });
    const erased = openEnvelope(envelope, null);
    expect(erased.data).toEqual(ERASED_DATA);
    expect(isErased(erased)).toBe(true);
    expect(erased).toMatchObject({ eventId: "e-1", subject: "s" });
    const plain = create(EventEnvelopeSchema, { eventId: "e-2", data: { "tidemark.erased": true } });
    expect(openEnvelope(plain, null)).toBe(plain);
    expect(isErased(plain)).toBe(false);
  });
});

describe("T5 master keyring", () => {
  const hex = () => randomBytes(32).toString("hex");

  it("wraps with the first key and unwraps with any; rotation rewraps under the new first key", () => {
    const [old, next] = [hex(), hex()];
    const before = MasterKeyring.parse(`# comment\nk1 ${old}\n`);
    const dataKey = key();
    const wrapped = before.wrap("db", "s", dataKey);
    expect(wrapped.keyId).toBe("k1");
    const after = MasterKeyring.parse(`k2 ${next}\n\nk1 ${old}\n`);
    expect(after.ids).toEqual(["k2", "k1"]);
    expect(after.unwrap("db", "s", "k1", wrapped.wrapped).equals(dataKey)).toBe(true);
    const rewrapped = after.wrap("db", "s", dataKey);
    expect(rewrapped.keyId).toBe("k2");
    expect(MasterKeyring.parse(`k2 ${next}`).unwrap("db", "s", "k2", rewrapped.wrapped).equals(dataKey)).toBe(true);
    // Bound to its subject, and unusable without its master key.
    expect(() => after.unwrap("db", "other", "k1", wrapped.wrapped)).toThrow();
    expect(() => MasterKeyring.parse(`k2 ${next}`).unwrap("db", "s", "k1", wrapped.wrapped)).toThrow(/k1/);
  });

  it("refuses a malformed file naming the line", () => {
    expect(() => MasterKeyring.parse("")).toThrow(/no key/);
    expect(() => MasterKeyring.parse(`k1 ${hex()}\nk1 ${hex()}`)).toThrow(/line 2.*twice/);
    expect(() => MasterKeyring.parse("k1 abc")).toThrow(/line 1/);
  });
});

describe("T5 subject ids", () => {
  it("accepts opaque ids and refuses what could be personal data or break the key", () => {
    for (const ok of ["s-1", "cust:42", "A.b_c-9", "x".repeat(128)]) expect(checkSubject(ok)).toBeUndefined();
    for (const bad of ["", "a@example.org", "a/b", "x".repeat(129), "two words", "-lead", "é"]) expect(checkSubject(bad)).toBeDefined();
  });
});

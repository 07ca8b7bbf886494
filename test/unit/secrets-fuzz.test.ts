/**
 * Seeded fuzz of the two secret parsers: the reference grammar (never throws, every accepted
 * reference is a valid stored record that round-trips) and the header swap (never hands a value to
 * an unbound host, never changes a header without a token, always swaps a whole token for a bound one).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { prng } from "../helpers/prng.ts";
import { SecretRefSchema, formatSecretRef, normalizeHost, tryParseSecretRef } from "../../src/secrets/ref.ts";
import { makePlaceholder, swapHeaders, type SwapSecret } from "../../src/secrets/placeholder.ts";
import { SecretValue } from "../../src/secrets/resolve.ts";

const PIECES = ["A", "TOKEN", "_x", "1", "=", "env:", "file:", "cmd:", "@", ",", ".", "-", "api.example.com", "EXAMPLE.COM.", "bücher.de", "127.0.0.1", "[::1]", "::1", ":443", "/", "./k", " ", "\n", "\u0000", "%41", "*", "x", "é", "\u2028", "ENV:", "@@", "a..b"];

test("secrets-fuzz: tryParseSecretRef never throws; accepted references validate and round-trip", () => {
  for (const seed of [1, 2, 3]) {
    const r = prng(0x5ec0 + seed);
    for (let i = 0; i < 4000; i++) {
      let text = "";
      const n = 1 + Math.floor(r() * 8);
      for (let j = 0; j < n; j++) text += PIECES[Math.floor(r() * PIECES.length)];
      let res;
      try {
        res = tryParseSecretRef(text, { baseDir: "/base" });
      } catch (e) {
        assert.fail(`seed ${seed} #${i}: ${JSON.stringify(text)} threw ${String(e)}`);
      }
      if (!res.ok) {
        assert.ok(res.reason.length > 0);
        // eslint-disable-next-line no-control-regex
        assert.ok(!/[\u0000\n\u2028]/.test(res.reason), `control characters escaped in ${JSON.stringify(res.reason)}`);
        continue;
      }
      const parsed = SecretRefSchema.safeParse(res.ref);
      assert.ok(parsed.success, `seed ${seed} #${i}: ${JSON.stringify(text)} -> ${JSON.stringify(res.ref)}`);
      const again = tryParseSecretRef(formatSecretRef(res.ref), { baseDir: "/base" });
      assert.ok(again.ok, `round trip of ${JSON.stringify(text)}: ${again.ok ? "" : again.reason}`);
      assert.deepEqual(again.ref, res.ref, JSON.stringify(text));
      for (const h of res.ref.hosts) assert.equal(normalizeHost(h), h);
    }
  }
});

test("secrets-fuzz: swapHeaders gives values only to bound hosts and changes nothing else", () => {
  const r = prng(0x5a9);
  const hosts = ["a.example", "b.example", "c.example"];
  for (let i = 0; i < 2000; i++) {
    const secrets: SwapSecret[] = hosts.map((h, k) => ({
      name: `S${k}`,
      token: makePlaceholder(),
      hosts: r() < 0.5 ? [h] : [h, hosts[(k + 1) % 3]!],
      value: new SecretValue(Buffer.from(`VALUE${k}-${i}`)),
    }));
    const bits = () => {
      const c = r();
      const s = secrets[Math.floor(r() * 3)]!;
      if (c < 0.3) return s.token;
      if (c < 0.4) return s.token.slice(0, 20 + Math.floor(r() * 30));
      if (c < 0.5) return `Basic ${Buffer.from(`u:${s.token}`).toString("base64")}`;
      if (c < 0.6) return `Bearer ${s.token}`;
      return ["x", " ", ";", "=", "masecret_", "abc", ":"][Math.floor(r() * 7)]!;
    };
    const headers: Array<[string, string]> = [];
    for (let h = 0; h < 1 + Math.floor(r() * 4); h++) {
      let v = "";
      for (let k = 0; k < 1 + Math.floor(r() * 3); k++) v += bits();
      headers.push([r() < 0.3 ? "Authorization" : `X-${h}`, v]);
    }
    const host = hosts[Math.floor(r() * 3)]!;
    const out = swapHeaders(headers, secrets, host);
    assert.equal(out.headers.length, headers.length);
    const all = JSON.stringify(out.headers) + out.headers.map(([, v]) => v.replace(/^\s*basic\s+/i, "")).map((v) => Buffer.from(v, "base64").toString("latin1")).join("");
    for (const s of secrets) {
      const bound = s.hosts.includes(host);
      if (!bound) assert.ok(!all.includes(s.value.reveal().toString()), `#${i}: ${s.name} leaked to ${host}`);
    }
    for (const [k, [name, value]] of out.headers.entries()) {
      assert.equal(name, headers[k]![0]);
      if (!headers[k]![1].includes("masecret_") && !/basic/i.test(headers[k]![1])) assert.equal(value, headers[k]![1]);
    }
    for (const e of out.events) {
      const s = secrets.find((x) => x.name === e.name)!;
      assert.equal(e.type, s.hosts.includes(host) ? "secret_swap" : "secret_swap_denied");
      assert.equal(e.host, host);
    }
    assert.ok(!JSON.stringify(out.events).includes("VALUE"));
  }
});

/**
 * Seeded, deterministic fuzzing of the guest-facing sniffers (research (c) piece 8): 10^5 mutated
 * inputs each. Whatever the bytes, the parsers return one of their tagged results, never throw,
 * never report a name that is not a DNS name, and a verdict reached on a prefix is the verdict on
 * the whole input (so segmenting cannot change the outcome). A failure prints its iteration; the
 * seed reproduces it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ClientHelloSniffer, parseClientHello } from "../../src/egress/clienthello.ts";
import { HttpHeadSniffer, parseHttpHead } from "../../src/egress/http-head.ts";
import { buildHandshake, records } from "../helpers/egress-tls-hello.ts";
import { prng } from "../helpers/prng.ts";

const ITERATIONS = 100_000;

function mutate(seed: Buffer, r: () => number, alphabet: number[]): Buffer {
  const b = [...seed];
  const n = 1 + Math.floor(r() * 4);
  for (let i = 0; i < n; i++) {
    const at = Math.floor(r() * (b.length + 1));
    const op = r();
    if (op < 0.35) b[at] = Math.floor(r() * 256);
    else if (op < 0.55) b[at] = alphabet[Math.floor(r() * alphabet.length)] as number;
    else if (op < 0.7) b.splice(at, 1 + Math.floor(r() * 8));
    else if (op < 0.85) b.splice(at, 0, ...Array.from({ length: 1 + Math.floor(r() * 4) }, () => alphabet[Math.floor(r() * alphabet.length)] as number));
    else b.length = Math.max(0, Math.min(b.length, at));
  }
  return Buffer.from(b);
}

const HELLOS = [
  records(buildHandshake({ sni: "api.example.com", alpn: ["h2", "http/1.1"] })),
  records(buildHandshake({ sni: "a.test", alpn: ["http/1.1"], padding: 1200 }), 300),
  records(buildHandshake({ sni: null, alpn: [] })),
  records(buildHandshake({ sni: "x.test", duplicateSni: true })),
];

test("egress-fuzz: ClientHello parser, 10^5 mutated hellos, tagged results only and prefix-stable", () => {
  const r = prng(Number(process.env.MICROAGENT_FUZZ_SEED ?? 0xc11e));
  const kinds = new Map<string, number>();
  const started = Date.now();
  for (let i = 0; i < ITERATIONS; i++) {
    const input = mutate(HELLOS[i % HELLOS.length] as Buffer, r, [0, 1, 3, 16, 22, 0x2e, 0xff, 0x80]);
    let res;
    try {
      res = parseClientHello(input);
    } catch (e) {
      assert.fail(`iteration ${i} threw ${String(e)}: ${input.toString("hex")}`);
    }
    kinds.set(res.kind, (kinds.get(res.kind) ?? 0) + 1);
    if (res.kind === "hello") {
      assert.ok(res.sni === null || /^[a-z0-9._-]{1,255}$/.test(res.sni), `iteration ${i}: sni ${res.sni}`);
      assert.ok(res.consumed <= input.length);
      assert.ok(res.alpn.every((p) => typeof p === "string" && p.length > 0));
    }
    // A verdict on a prefix must be the verdict on the whole (every 8th input, a random cut).
    if (i % 8 === 0 && input.length > 1) {
      const cut = 1 + Math.floor(r() * (input.length - 1));
      const pre = parseClientHello(input.subarray(0, cut));
      if (pre.kind !== "need-more") assert.equal(res.kind, pre.kind, `iteration ${i}: prefix ${cut} said ${pre.kind}, whole said ${res.kind}`);
      const s = new ClientHelloSniffer();
      s.push(input.subarray(0, cut));
      const viaSniffer = s.push(input.subarray(cut));
      assert.equal(viaSniffer.kind, pre.kind !== "need-more" ? pre.kind : res.kind, `iteration ${i}: sniffer (cut ${cut}) ${JSON.stringify(input.toString("latin1"))}`);
    }
  }
  for (const k of ["hello", "malformed", "need-more", "not-tls"]) assert.ok((kinds.get(k) ?? 0) > 100, `the fuzzer reaches ${k}: ${JSON.stringify([...kinds])}`);
  assert.ok(Date.now() - started < 10_000, `took ${Date.now() - started} ms`);
});

const HEADS = [
  "GET /v1/models HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/8.5\r\nAccept: */*\r\n\r\n",
  "POST /upload HTTP/1.1\r\nHost: a.test:8080\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
  "GET http://allowed.test/x HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
  "CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\n\r\n",
].map((s) => Buffer.from(s, "latin1"));

test("egress-fuzz: HTTP head parser, 10^5 mutated heads, tagged results only and prefix-stable", () => {
  const r = prng(Number(process.env.MICROAGENT_FUZZ_SEED ?? 0x4ead));
  const kinds = new Map<string, number>();
  const started = Date.now();
  const alphabet = [...Buffer.from("\r\n :/@[]?#.\t-", "latin1"), 0, 0x7f, 0xc3];
  for (let i = 0; i < ITERATIONS; i++) {
    const input = mutate(HEADS[i % HEADS.length] as Buffer, r, alphabet);
    let res;
    try {
      res = parseHttpHead(input);
    } catch (e) {
      assert.fail(`iteration ${i} threw ${String(e)}: ${JSON.stringify(input.toString("latin1"))}`);
    }
    kinds.set(res.kind, (kinds.get(res.kind) ?? 0) + 1);
    if (res.kind === "head") {
      assert.ok(res.host === null || /^[a-z0-9._:-]{1,300}$/.test(res.host), `iteration ${i}: host ${JSON.stringify(res.host)}`);
      assert.ok(res.headBytes <= input.length);
      assert.ok(res.headers.length <= 100);
    }
    if (i % 8 === 0 && input.length > 1) {
      const cut = 1 + Math.floor(r() * (input.length - 1));
      const pre = parseHttpHead(input.subarray(0, cut));
      if (pre.kind !== "need-more") assert.equal(res.kind, pre.kind, `iteration ${i}: prefix ${cut} said ${pre.kind}, whole said ${res.kind}: ${JSON.stringify(input.toString("latin1"))}`);
      const s = new HttpHeadSniffer();
      s.push(input.subarray(0, cut));
      const viaSniffer = s.push(input.subarray(cut));
      assert.equal(viaSniffer.kind, pre.kind !== "need-more" ? pre.kind : res.kind, `iteration ${i}: sniffer (cut ${cut}) ${JSON.stringify(input.toString("latin1"))}`);
    }
  }
  for (const k of ["head", "malformed", "need-more", "not-http"]) assert.ok((kinds.get(k) ?? 0) > 100, `the fuzzer reaches ${k}: ${JSON.stringify([...kinds])}`);
  assert.ok(Date.now() - started < 10_000, `took ${Date.now() - started} ms`);
});

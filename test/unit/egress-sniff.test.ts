/**
 * The ClientHello and HTTP-head sniffers: real first flights (Node's TLS client, openssl s_client)
 * fed whole, byte at a time and in random splits; synthetic hellos for what real clients don't do.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ClientHelloSniffer, parseClientHello } from "../../src/egress/clienthello.ts";
import { HttpHeadSniffer, parseHostValue, parseHttpHead } from "../../src/egress/http-head.ts";
import { buildHandshake, nodeClientHello, opensslClientHello, records } from "../helpers/egress-tls-hello.ts";
import { prng } from "../helpers/prng.ts";

function feed(sniffer: { push(c: Uint8Array): { kind: string } }, bytes: Buffer, sizes: () => number) {
  let r: { kind: string } = { kind: "need-more" };
  for (let i = 0; i < bytes.length && r.kind === "need-more"; ) {
    const n = Math.max(1, sizes());
    r = sniffer.push(bytes.subarray(i, i + n));
    i += n;
  }
  return r;
}

test("egress-sniff: Node's and openssl's real ClientHellos give SNI and ALPN, whole, byte at a time and split at random", async () => {
  const node = await nodeClientHello({ servername: "API.Example.com", alpn: ["h2", "http/1.1"] });
  const ossl = await opensslClientHello({ servername: "pinned.example.org", alpn: "h2,http/1.1" });
  const cases: Array<[Buffer, string, string[]]> = [
    [node, "api.example.com", ["h2", "http/1.1"]],
    [ossl, "pinned.example.org", ["h2", "http/1.1"]],
  ];
  const r = prng(11);
  for (const [bytes, sni, alpn] of cases) {
    assert.deepEqual(parseClientHello(bytes), { kind: "hello", sni, alpn, ech: false, consumed: bytes.length });
    assert.deepEqual(feed(new ClientHelloSniffer(), bytes, () => 1), { kind: "hello", sni, alpn, ech: false, consumed: bytes.length });
    for (let i = 0; i < 20; i++) assert.equal((feed(new ClientHelloSniffer(), bytes, () => Math.floor(r() * 300)) as { sni?: string }).sni, sni);
    for (let cut = 0; cut < bytes.length; cut += 97) assert.equal(parseClientHello(bytes.subarray(0, cut)).kind, "need-more", `prefix of ${cut}`);
  }
  const noSni = await nodeClientHello({});
  const res = parseClientHello(noSni);
  assert.equal(res.kind, "hello");
  assert.equal((res as { sni: string | null }).sni, null, "connecting by IP sends no SNI");
});

test("egress-sniff: a large hello fragmented over many records and segments (post-quantum key shares)", () => {
  const hs = buildHandshake({ sni: "big.example.com", alpn: ["http/1.1"], padding: 9000 });
  for (const recordSize of [16384, 1400, 200]) {
    const bytes = records(hs, recordSize);
    const s = new ClientHelloSniffer();
    const res = feed(s, bytes, () => 1460);
    assert.deepEqual(res, { kind: "hello", sni: "big.example.com", alpn: ["http/1.1"], ech: false, consumed: bytes.length }, `records of ${recordSize}`);
    assert.equal(s.bytes().length, bytes.length, "every byte is kept for replay");
  }
  assert.match((parseClientHello(records(hs, 50)) as { reason: string }).reason, /more than 64 records/);
});

test("egress-sniff: ClientHello malformations and not-TLS are told apart", () => {
  const m = (b: Buffer) => parseClientHello(b);
  assert.deepEqual(m(Buffer.from("GET / HTTP/1.1\r\n")), { kind: "not-tls", reason: "the first byte is not a TLS handshake record" });
  assert.equal(m(Buffer.from([0x80, 0x2e, 0x01])).kind, "not-tls", "SSLv2-style hello");
  assert.equal(m(Buffer.from([22, 9, 1])).kind, "not-tls");
  assert.match((m(records(buildHandshake({ sni: "a.test", duplicateSni: true }))) as { reason: string }).reason, /extension 0 appears twice/);
  const ech = m(records(buildHandshake({ sni: "public.example", extension: 0xfe0d })));
  assert.equal(ech.kind === "hello" && ech.ech, true, "an ECH extension is reported: the SNI is only the outer name");
  assert.match((m(records(buildHandshake({ sni: "a.test", twoHostNames: true }))) as { reason: string }).reason, /more than one host_name/);
  assert.match((m(records(buildHandshake({ sni: "a b.test" }))) as { reason: string }).reason, /not a DNS name/);
  const hs = buildHandshake({ sni: "a.test" });
  const wrongType = Buffer.from(hs);
  wrongType[0] = 2;
  assert.match((m(records(wrongType)) as { reason: string }).reason, /not ClientHello/);
  const overlong = Buffer.from(hs);
  overlong[3] = (overlong[3] as number) + 1; // declares one byte more than it carries, then another record type follows
  assert.equal(m(Buffer.concat([records(overlong), Buffer.from([23, 3, 3, 0, 1, 0])])).kind, "malformed");
  assert.match((m(Buffer.from([22, 3, 1, 0x40, 0x01])) as { reason: string }).reason, /a record of 16385 bytes/);
  assert.match((m(Buffer.from([22, 3, 1, 0, 4, 1, 0x01, 0, 0])) as { reason: string }).reason, /declares 65536 bytes/);
  assert.match((m(Buffer.from([22, 3, 1, 0, 0])) as { reason: string }).reason, /empty handshake record/);
  // a sniffer gives up at its bound instead of buffering forever
  const s = new ClientHelloSniffer({ maxHandshakeBytes: 1024 });
  const big = records(buildHandshake({ sni: "a.test", padding: 4000 }), 1000);
  assert.equal(feed(s, big, () => 10).kind, "malformed");
  assert.ok(s.buffered <= s.maxBufferedBytes + 10);
});

test("egress-sniff: HTTP heads give method, target and Host; dribbled or whole", () => {
  const head = Buffer.from("GET /v1/models?x=1 HTTP/1.1\r\nHost: API.Example.com:8080\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\nBODY");
  const want = parseHttpHead(head);
  assert.equal(want.kind, "head");
  if (want.kind !== "head") return;
  assert.equal(want.method, "GET");
  assert.equal(want.target, "/v1/models?x=1");
  assert.equal(want.host, "api.example.com");
  assert.equal(want.hostPort, 8080);
  assert.equal(want.headBytes, head.length - 4);
  assert.deepEqual(want.headers[1], ["user-agent", "curl/8"]);
  assert.deepEqual(feed(new HttpHeadSniffer(), head, () => 1), want);
  const r = prng(5);
  for (let i = 0; i < 50; i++) assert.deepEqual(feed(new HttpHeadSniffer(), head, () => Math.floor(r() * 20)), want);
  const proxy = parseHttpHead(Buffer.from("GET http://allowed.test/x HTTP/1.1\r\nHost: allowed.test\r\n\r\n"));
  assert.equal(proxy.kind === "head" && proxy.host, "allowed.test");
  const connect = parseHttpHead(Buffer.from("CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\n\r\n"));
  assert.equal(connect.kind === "head" && connect.host, "allowed.test");
  const http10 = parseHttpHead(Buffer.from("GET / HTTP/1.0\r\n\r\n"));
  assert.equal(http10.kind === "head" && http10.host, null);
  assert.deepEqual(parseHostValue("[fd00::1]:8080"), { host: "fd00::1", port: 8080 });
  assert.equal(parseHostValue("a b"), null);
});

test("egress-sniff: HTTP smuggling shapes and limits are malformed; other protocols are not-http", () => {
  const p = (s: string, limits = {}) => parseHttpHead(Buffer.from(s, "latin1"), limits);
  const malformed: Array<[string, RegExp]> = [
    ["GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", /more than one Host/],
    ["GET / HTTP/1.1\nHost: a.test\r\n\r\n", /LF without CR/],
    ["GET / HTTP/1.1\r\nHost: a.test\r\n folded\r\n\r\n", /obsolete line folding/],
    ["GET / HTTP/1.1\r\nHost : a.test\r\n\r\n", /not a token/],
    ["POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", /request smuggling/],
    ["POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", /conflicting Content-Length/],
    ["GET http://evil.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n", /target names evil\.test but Host is allowed\.test/],
    ["GET http://user@evil.test/ HTTP/1.1\r\n\r\n", /userinfo/],
    ["GET / HTTP/1.1\r\nHost: a.test/x\r\n\r\n", /not host\[:port\]/],
    ["GET / HTTP/2.0\r\n\r\n", /not HTTP\/1\.0 or 1\.1/],
    ["GET foo HTTP/1.1\r\n\r\n", /not origin-form/],
    ["GET / HTTP/1.1\r\nX: a\u0001b\r\n\r\n", /control characters/],
    ["GET / HTTP/1.1\r\nHost: a.test\r\rX: y\r\n\r\n", /CR not followed by LF/],
  ];
  for (const [s, re] of malformed) {
    const r = p(s);
    assert.equal(r.kind, "malformed", JSON.stringify(s));
    assert.match((r as { reason: string }).reason, re, JSON.stringify(s));
  }
  const many = `GET / HTTP/1.1\r\n${"X-A: b\r\n".repeat(101)}\r\n`;
  assert.match((p(many) as { reason: string }).reason, /more than 100 header fields/);
  assert.match((p(`GET / HTTP/1.1\r\n${"X-A: b\r\n".repeat(101)}`) as { reason: string }).reason, /more than 100 header fields/, "refused before the head completes");
  assert.match((p(`GET / HTTP/1.1\r\nX: ${"a".repeat(20000)}`) as { reason: string }).reason, /exceeds 16384 bytes/);
  assert.equal(p("GET / HTTP/1.1\r\nX: 12345\r\n\r\n", { maxHeadBytes: 20 }).kind, "malformed");
  assert.equal(p("\u0016\u0003\u0001").kind, "not-http");
  assert.equal(p("SSH-2.0-OpenSSH_9.2\r\n").kind, "not-http");
  assert.equal(p("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").kind, "not-http");
  assert.equal(p("ABCDEFGHIJKLMNOPQRSTUVWXYZ").kind, "not-http");
  assert.equal(p("GE").kind, "need-more");
  assert.equal(p("GET / HTTP/1.1\r\nHost: a").kind, "need-more");
});

/**
 * The workspace CA and its leaves, checked by two independent verifiers: Node's X509Certificate
 * and `openssl verify` (purpose sslserver, hostname / IP checks), plus a real TLS handshake on
 * loopback that trusts only the workspace CA. Hostile-guest case 26 (many SNIs) at the issuer.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { execFileSync } from "node:child_process";
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer } from "node:tls";
import { connect } from "node:tls";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { CA_CERT_FILE, CA_KEY_FILE, LeafIssuer, caFromPem, generateCa, loadOrCreateCa } from "../../src/egress/ca.ts";

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), "microagent-egress-ca-"));
}

function opensslVerify(dir: string, caPem: string, leafPem: string, extra: string[]): string {
  const ca = join(dir, "ca-check.pem");
  const leaf = join(dir, "leaf-check.pem");
  execFileSync("sh", ["-c", `cat > ${ca}`], { input: caPem });
  execFileSync("sh", ["-c", `cat > ${leaf}`], { input: leafPem });
  return execFileSync("openssl", ["verify", "-CAfile", ca, "-purpose", "sslserver", ...extra, leaf], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

test("egress-ca: the CA is ECDSA P-256, self-signed, a CA, key 0600; a reload gives the same CA", async () => {
  const dir = await tempDir();
  try {
    const ca = await loadOrCreateCa(join(dir, "ws"), { workspace: "demo" });
    const keySt = await stat(join(dir, "ws", CA_KEY_FILE));
    assert.equal(keySt.mode & 0o777, 0o600, "the key is host-only");
    assert.equal((await stat(join(dir, "ws", CA_CERT_FILE))).mode & 0o777, 0o600);
    assert.equal(ca.cert.ca, true);
    assert.equal(ca.cert.subject, "O=microagent\nCN=microagent egress CA demo");
    assert.equal(ca.cert.verify(ca.cert.publicKey), true, "self-signed");
    assert.equal(ca.key.asymmetricKeyDetails?.namedCurve, "prime256v1");
    const text = execFileSync("openssl", ["x509", "-noout", "-text"], { input: ca.certPem, encoding: "utf8" });
    assert.match(text, /CA:TRUE, pathlen:0/);
    assert.match(text, /Certificate Sign, CRL Sign/);
    assert.match(text, /ecdsa-with-SHA256/);
    const again = await loadOrCreateCa(join(dir, "ws"), { workspace: "demo" });
    assert.equal(again.fingerprint256, ca.fingerprint256, "loaded, not regenerated");
    assert.ok(!(await readFile(join(dir, "ws", CA_CERT_FILE), "utf8")).includes("PRIVATE KEY"), "the certificate file holds no key");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("egress-ca: a readable key, a mismatched pair or an unwritable dir fail with coded errors", async () => {
  const dir = await tempDir();
  try {
    await loadOrCreateCa(dir, { workspace: "w" });
    await chmod(join(dir, CA_KEY_FILE), 0o644);
    await assert.rejects(loadOrCreateCa(dir, { workspace: "w" }), (e: unknown) => isMicroagentError(e) && e.code === "EGRESS_CA_INVALID" && /readable by others/.test(e.message) && /chmod 600/.test(e.remediation));
    await chmod(join(dir, CA_KEY_FILE), 0o600);
    const other = generateCa({ workspace: "other" });
    await writeFile(join(dir, CA_CERT_FILE), other.certPem);
    await assert.rejects(loadOrCreateCa(dir, { workspace: "w" }), (e: unknown) => isMicroagentError(e) && e.code === "EGRESS_CA_INVALID" && /does not belong/.test(e.message));
    // a key without its certificate (a crash between the writes) is replaced
    await rm(join(dir, CA_CERT_FILE));
    const fresh = await loadOrCreateCa(dir, { workspace: "w" });
    assert.equal(fresh.cert.checkPrivateKey(fresh.key), true);
    const blocked = join(dir, "file");
    await writeFile(blocked, "x");
    await assert.rejects(loadOrCreateCa(join(blocked, "sub"), { workspace: "w" }), (e: unknown) => isMicroagentError(e) && e.code === "EGRESS_CA_WRITE_FAILED");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("egress-ca: leaves verify with X509Certificate and openssl, carry the SAN, are backdated 24 h and short-lived", async () => {
  const dir = await tempDir();
  try {
    const now = Date.parse("2026-06-01T12:00:00Z");
    const g = generateCa({ workspace: "w", now: new Date(now) });
    const ca = caFromPem(g.keyPem, g.certPem);
    const issuer = new LeafIssuer(ca, { now: () => now });
    const names = ["api.example.com", "xn--bcher-kva.de", `${"a".repeat(63)}.${"b".repeat(63)}.example.com`, "10.1.2.3", "2001:db8::1"];
    for (const n of names) {
      const leaf = issuer.issue(n);
      assert.ok(leaf);
      const x = new X509Certificate(leaf.certPem);
      assert.equal(x.verify(ca.cert.publicKey), true, n);
      assert.equal(x.checkIssued(ca.cert), true, n);
      assert.equal(x.ca, false);
      const isIp = n.includes(":") || /^\d/.test(n);
      if (isIp) assert.equal(x.checkIP(n), n);
      else assert.equal(x.checkHost(n), n);
      assert.equal(new Date(x.validFrom).getTime(), now - 24 * 3600_000, "backdated 24 h for skewed guest clocks");
      assert.equal(new Date(x.validTo).getTime(), now + 7 * 24 * 3600_000);
      const out = opensslVerify(dir, ca.certPem, leaf.certPem, ["-attime", String(now / 1000), ...(isIp ? ["-verify_ip", n] : ["-verify_hostname", n])]);
      assert.match(out, /: OK/, n);
      assert.equal(leaf.chainPem, leaf.certPem + ca.certPem);
    }
    // a guest clock 12 h behind still accepts the leaf (research (e) case 29, at the certificate)
    assert.match(opensslVerify(dir, ca.certPem, issuer.issue("api.example.com")!.certPem, ["-attime", String((now - 12 * 3600_000) / 1000)]), /: OK/);
    // and openssl refuses a leaf for another name: the check is real
    assert.throws(() => opensslVerify(dir, ca.certPem, issuer.issue("api.example.com")!.certPem, ["-attime", String(now / 1000), "-verify_hostname", "evil.test"]));
    assert.throws(() => issuer.issue("not a name"), (e: unknown) => isMicroagentError(e) && e.code === "EGRESS_LEAF_INVALID");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("egress-ca: a TLS client trusting only the workspace CA completes a handshake with a leaf", async () => {
  const g = generateCa({ workspace: "w" });
  const ca = caFromPem(g.keyPem, g.certPem);
  const issuer = new LeafIssuer(ca);
  const leaf = issuer.issue("mock.test")!;
  const server = createServer({ key: leaf.keyPem, cert: leaf.chainPem, ALPNProtocols: ["h2", "http/1.1"] }, (s) => s.end("hi"));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    const port = (server.address() as { port: number }).port;
    const got = await new Promise<string>((resolve, reject) => {
      const c = connect({ host: "127.0.0.1", port, servername: "mock.test", ca: ca.certPem, ALPNProtocols: ["http/1.1"] }, () => {
        assert.equal(c.alpnProtocol, "http/1.1");
      });
      let data = "";
      c.on("data", (d) => (data += d));
      c.on("end", () => resolve(data));
      c.on("error", reject);
    });
    assert.equal(got, "hi");
    await assert.rejects(
      new Promise((resolve, reject) => {
        const c = connect({ host: "127.0.0.1", port, servername: "other.test", ca: ca.certPem }, () => resolve(c));
        c.on("error", reject);
      }),
      /other\.test/,
    );
  } finally {
    server.close();
  }
});

test("egress-ca: case 26: one key for every leaf, an LRU of 256, and a cap on new names per second", () => {
  const g = generateCa({ workspace: "w" });
  const ca = caFromPem(g.keyPem, g.certPem);
  let now = 0;
  const issuer = new LeafIssuer(ca, { now: () => now, newNamesPerSecond: 16, newNamesBurst: 64 });
  const first = issuer.issue("n0.test")!;
  assert.equal(issuer.issue("N0.Test.")!, first, "cached, by normalized name");
  let issued = 1;
  let refused = 0;
  for (let i = 1; i < 10_000; i++) {
    if (i % 100 === 0) now += 1000;
    const l = issuer.issue(`n${i}.test`);
    if (l) {
      issued++;
      assert.equal(l.keyPem, first.keyPem, "one leaf key per CA");
    } else refused++;
  }
  assert.ok(issuer.size <= 256, `LRU bounded: ${issuer.size}`);
  assert.ok(issued <= 64 + 16 * 100 + 1, `rate-capped: ${issued} issued`);
  assert.ok(refused > 8000, `most of 10^4 names in 100 s are refused: ${refused}`);
  assert.equal(issuer.stats.rateLimited, refused);
  // an expiring cached leaf is reissued
  const unlimited = new LeafIssuer(ca, { now: () => now, newNamesPerSecond: Infinity, validityHours: 48 });
  const a = unlimited.issue("x.test")!;
  now += 30 * 3600_000;
  assert.notEqual(unlimited.issue("x.test"), a, "less than a day left: signed again");
});

test("egress-ca: leaf issuance is sub-millisecond work (p50 printed; bench/egress-leaf.ts measures the goal)", () => {
  const g = generateCa({ workspace: "w" });
  const ca = caFromPem(g.keyPem, g.certPem);
  const issuer = new LeafIssuer(ca, { newNamesPerSecond: Infinity, cacheSize: 1000 });
  const times: number[] = [];
  for (let i = 0; i < 500; i++) {
    const t0 = process.hrtime.bigint();
    issuer.issue(`host-${i}.bench.test`);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  times.sort((a, b) => a - b);
  const p50 = times[250] as number;
  console.log(`leaf issuance: p50 ${p50.toFixed(3)} ms, p99 ${(times[495] as number).toFixed(3)} ms`);
  // Not the 1 ms goal (timed goals live in bench/, this box is shared): a guard against a
  // regression to per-leaf key generation, which costs tens to hundreds of milliseconds.
  assert.ok(p50 <= 5, `p50 ${p50} ms`);
});

import { test } from "node:test";
import assert from "node:assert/strict";
import { parseByteSize, parseMediation, resolveEgressFlags } from "../../src/egress/flags.ts";
import { guestTrust, withGuestTrust, GUEST_BUNDLE_FILE, GUEST_BUNDLE_PATHS } from "../../src/egress/trust.ts";
import { caFromPem, generateCa } from "../../src/egress/ca.ts";

test("egress-flags: defaults, modes, sizes, mediation, and the usage errors", () => {
  const d = resolveEgressFlags({});
  assert.equal(d.mode, "guarded");
  assert.equal(d.maxConns, 256);
  assert.equal(d.maxTotalBytes, null);
  assert.equal(d.mediationRequired, true);
  assert.equal(resolveEgressFlags({ egress: "STRICT", egressAllow: ["api.example.com", ".example.org", "10.0.0.5:5432", "10.1.0.0/16"] }).mode, "strict");
  assert.equal(parseByteSize("x", "50GiB"), 50 * 1024 ** 3);
  assert.equal(parseByteSize("x", "500M"), 500e6);
  assert.deepEqual(parseMediation("7000=127.0.0.1:9000"), { guestPort: 7000, host: "127.0.0.1", port: 9000, source: "7000=127.0.0.1:9000" });
  assert.throws(() => resolveEgressFlags({ egress: "off", egressAllow: ["a.test"] }), { code: "EGRESS_ALLOW_CONFLICT" });
  assert.throws(() => resolveEgressFlags({ egress: "off", egressUpstreamCa: ["/x.pem"] }), { code: "EGRESS_ALLOW_CONFLICT" });
  assert.throws(() => resolveEgressFlags({ egress: "mitm" }), { code: "EGRESS_FLAG_INVALID" });
  assert.throws(() => resolveEgressFlags({ egressMaxConns: "0" }), { code: "EGRESS_FLAG_INVALID" });
  assert.throws(() => resolveEgressFlags({ egressMaxTotalBytes: "lots" }), { code: "EGRESS_FLAG_INVALID" });
  assert.throws(() => resolveEgressFlags({ mediation: ["7000:127.0.0.1:9000"] }), { code: "EGRESS_FLAG_INVALID" });
  assert.throws(() => resolveEgressFlags({ mediation: ["7000=a:1", "7000=b:2"] }), { code: "EGRESS_FLAG_INVALID" });
  assert.throws(() => resolveEgressFlags({ egressAllow: ["http://x.test/"] }), { code: "EGRESS_ALLOW_INVALID" });
  assert.throws(() => resolveEgressFlags({ egress: "strict" }, { network: "isolated" }), { code: "EGRESS_ALLOW_CONFLICT" });
});

test("egress-flags: the guest trust: merged bundle ends with the workspace CA, env points at it, bind targets listed", () => {
  const p = generateCa({ workspace: "w" });
  const ca = caFromPem(p.keyPem, p.certPem);
  const t = guestTrust(ca, ["-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"]);
  assert.ok(t.bundlePem.endsWith(ca.certPem.endsWith("\n") ? ca.certPem : `${ca.certPem}\n`));
  assert.ok(t.bundlePem.startsWith("-----BEGIN CERTIFICATE-----\nAAAA"));
  assert.ok(t.env.includes(`SSL_CERT_FILE=${GUEST_BUNDLE_FILE}`));
  for (const k of ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"]) assert.ok(t.env.some((e) => e.startsWith(`${k}=`)));
  assert.deepEqual(t.bindMounts[0]!.targets, GUEST_BUNDLE_PATHS);
  assert.ok(!t.bundlePem.includes("PRIVATE KEY"));
  const c = withGuestTrust({ env: ["SSL_CERT_FILE=/mine"], files: [] }, t) as { env: string[]; files: Array<{ path: string; contentBase64: string }> };
  assert.equal(c.env.at(-1), "SSL_CERT_FILE=/mine", "the user's own entry comes later and wins");
  assert.equal(Buffer.from(c.files[0]!.contentBase64, "base64").toString(), t.bundlePem);
});

test("egress-flags: createEgressMediation sets up CA (0600 key), audit and boot config; fails closed when the CA cannot be written", async () => {
  const { mkdtempSync, statSync, writeFileSync, rmSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const { createEgressMediation } = await import("../../src/egress/egress-service.ts");
  const dir = mkdtempSync(join(tmpdir(), "egress-svc-"));
  try {
    const eg = await createEgressMediation({ workspaceDir: dir, workspace: "w", egress: resolveEgressFlags({}), gateway: "10.200.0.1" });
    assert.equal(statSync(join(dir, "egress-ca-key.pem")).mode & 0o777, 0o600);
    assert.deepEqual(eg.stackDnsHosts, { "mediation.microagent.internal": "10.200.0.1", "gateway.microagent.internal": "10.200.0.1" });
    const c = eg.bootConfig({ env: [] }) as { env: string[]; files: Array<{ path: string }> };
    assert.deepEqual(c.files.map((f) => f.path), [GUEST_BUNDLE_FILE, "/run/microagent/egress/workspace-ca.crt"]);
    assert.ok(!JSON.stringify(c).includes("PRIVATE KEY"), "the CA key never goes to the guest");
    assert.equal((eg.describe() as { mode: string }).mode, "guarded");
    eg.stop();
    writeFileSync(join(dir, "file"), "x");
    await assert.rejects(createEgressMediation({ workspaceDir: join(dir, "file", "sub"), workspace: "w", egress: resolveEgressFlags({}), gateway: "10.200.0.1" }), { code: "EGRESS_CA_WRITE_FAILED" });
    await assert.rejects(createEgressMediation({ workspaceDir: dir, workspace: "w", egress: resolveEgressFlags({ egressUpstreamCa: [join(dir, "none.pem")] }), gateway: "10.200.0.1" }), { code: "EGRESS_FLAG_INVALID" });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("egress-flags: the host's roots hold each certificate once, however the stores spell it", async () => {
  const { X509Certificate } = await import("node:crypto");
  const { hostRootCertificates, uniqueCertificates } = await import("../../src/egress/trust.ts");
  const roots = hostRootCertificates();
  assert.ok(roots.length > 0);
  const fingerprints = roots.map((p) => new X509Certificate(p).fingerprint256);
  assert.equal(new Set(fingerprints).size, roots.length, "no certificate twice in the bundle the guest parses per process");
  const p = generateCa({ workspace: "w" }).certPem.trim();
  const rewrapped = p.replace(/\n/g, "\r\n").replace(/(-----BEGIN CERTIFICATE-----)\r\n/, "$1\n");
  assert.deepEqual(uniqueCertificates([p, `${p}\n`, rewrapped]), [`${p}\n`]);
});

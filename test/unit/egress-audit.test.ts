/**
 * The egress audit log: schema, coalescing (hostile-guest case 32: 10^6 denies stay under 1 MiB),
 * rotation, and the reader (missing log, torn last line, rotated files merged in time order).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { appendFile, mkdir, mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { EGRESS_LOG, EgressAuditLog, EgressRecordSchema, dnsRecord, formatDst, parseEgress, readEgress, verdictRecord } from "../../src/egress/audit.ts";
import { decideEgress, resolvePolicyConfig } from "../../src/egress/policy.ts";
import { decideDnsQuery } from "../../src/egress/dns-policy.ts";
import dnsPacket from "dns-packet";

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), "microagent-egress-audit-"));
}

const DENY = { type: "egress_deny", proto: "tcp", dst: "10.0.0.5:443", name: null, decision: "deny", reason: "10.0.0.5 (private) is an inside destination", signal: "inside-destination" } as const;

test("egress-audit: case 32: 10^6 identical denies in one burst stay under 1 MiB, counted exactly", async () => {
  const dir = await tempDir();
  try {
    let now = Date.parse("2026-01-01T00:00:00Z");
    const log = new EgressAuditLog(dir, { workspace: "w", now: () => now });
    for (let i = 0; i < 1_000_000; i++) {
      if (i % 1000 === 0) now += 1; // the burst spans 1,000 ms of fake time
      log.write(DENY);
    }
    log.close();
    const size = (await stat(join(dir, EGRESS_LOG))).size;
    assert.ok(size <= 1024 * 1024, `${size} bytes`);
    const records = await readEgress(dir);
    assert.equal(records.reduce((n, r) => n + (r.count ?? 1), 0), 1_000_000);
    assert.ok(records.length <= 2, `${records.length} records`);
    assert.equal((await stat(join(dir, EGRESS_LOG))).mode & 0o777, 0o600);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("egress-audit: 10^6 denies to distinct destinations over 100 s stay under 1 MiB through the per-window cap", async () => {
  const dir = await tempDir();
  try {
    let now = 0;
    const log = new EgressAuditLog(dir, { workspace: "w", now: () => now });
    for (let i = 0; i < 1_000_000; i++) {
      if (i % 10_000 === 0) now += 1000;
      log.write({ ...DENY, dst: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:${1 + (i % 60000)}` });
    }
    log.close();
    const size = (await stat(join(dir, EGRESS_LOG))).size;
    const records = await readEgress(dir);
    assert.ok(size <= 1024 * 1024, `${size} bytes`);
    assert.equal(records.reduce((n, r) => n + (r.count ?? 1), 0), 1_000_000, "every deny is counted somewhere");
    const overflow = records.filter((r) => r.dst === null);
    assert.equal(overflow.length, 100, "one overflow record per window");
    assert.match(overflow[0]?.reason ?? "", /more than 32 distinct denies in 1000 ms/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("egress-audit: allows are written at once, denies per window with count and lastTime; the reader sorts by time", async () => {
  const dir = await tempDir();
  try {
    let now = Date.parse("2026-01-01T00:00:00Z");
    const log = new EgressAuditLog(dir, { workspace: "demo", now: () => now });
    log.write(DENY);
    now += 200;
    log.write({ type: "egress_allow", proto: "tcp", dst: "93.184.216.34:443", name: "allowed.test", sni: "allowed.test", decision: "allow", reason: "allowed.test is on the allow list", signal: null, mitm: true, flowId: "f1" });
    now += 100;
    log.write(DENY);
    now += 100;
    log.write({ type: "egress_close", proto: "tcp", dst: "93.184.216.34:443", name: "allowed.test", decision: "allow", reason: "closed", signal: null, flowId: "f1", bytesUp: 120, bytesDown: 53_000, durationMs: 412 });
    // on disk now: the allow and the close; the denies wait for their window
    const before = await readEgress(dir);
    assert.deepEqual(before.map((r) => r.type), ["egress_allow", "egress_close"]);
    now += 1000;
    log.write({ type: "egress_dns_allow", proto: "dns", dst: "10.200.0.1:53", name: "allowed.test", qtype: "A", answers: ["93.184.216.34"], decision: "allow", reason: "forwarded", signal: null });
    log.close();
    const all = await readEgress(dir);
    assert.deepEqual(all.map((r) => r.type), ["egress_deny", "egress_allow", "egress_close", "egress_dns_allow"], "time order, not file order");
    const d = all[0];
    assert.equal(d?.count, 2);
    assert.equal(d?.time, "2026-01-01T00:00:00.000Z");
    assert.equal(d?.lastTime, "2026-01-01T00:00:00.300Z");
    assert.equal(d?.workspace, "demo");
    assert.equal(all[2]?.bytesDown, 53_000);
    const strictLog = new EgressAuditLog(dir, { workspace: "w" });
    assert.throws(() => strictLog.write({ ...DENY, signal: "made-up" as "denied" }), /signal|Invalid/, "the signal list is closed");
    strictLog.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("egress-audit: rotation keeps maxFiles files of at most maxFileBytes, and the reader merges them in order", async () => {
  const dir = await tempDir();
  try {
    let now = Date.parse("2026-01-01T00:00:00Z");
    const log = new EgressAuditLog(dir, { workspace: "w", now: () => now, maxFileBytes: 16 * 1024, maxFiles: 3 });
    for (let i = 0; i < 2000; i++) {
      now += 1;
      log.write({ type: "egress_allow", proto: "tcp", dst: `93.184.216.34:${1000 + i}`, name: null, decision: "allow", reason: `flow ${i}`, signal: "direct-ip-no-sni" });
    }
    log.close();
    const files = (await readdir(dir)).sort();
    assert.deepEqual(files, [EGRESS_LOG, `${EGRESS_LOG}.1`, `${EGRESS_LOG}.2`]);
    for (const f of files) assert.ok((await stat(join(dir, f))).size <= 16 * 1024, f);
    const records = await readEgress(dir);
    const nums = records.map((r) => Number(r.reason.split(" ")[1]));
    assert.ok(nums.length > 100 && nums.length < 2000, `older files were dropped: ${nums.length} kept`);
    assert.deepEqual(nums, [...nums].sort((a, b) => a - b), "oldest first across files");
    assert.equal(nums[nums.length - 1], 1999);
    assert.equal(nums[1]! - nums[0]!, 1, "no gaps inside what was kept");
    assert.equal(log.stats.rotations > 0, true);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("egress-audit: the reader: missing log is empty, a torn last line is skipped, a corrupt middle line is an error", async () => {
  const dir = await tempDir();
  try {
    assert.deepEqual(await readEgress(join(dir, "nowhere")), []);
    const log = new EgressAuditLog(dir, { workspace: "w" });
    log.write({ type: "egress_udp_deny", proto: "udp", dst: "1.1.1.1:443", name: null, decision: "deny", reason: "QUIC", signal: "quic-udp443" });
    log.close();
    await appendFile(join(dir, EGRESS_LOG), '{"type":"egress_allow","ti');
    const r = await readEgress(dir);
    assert.equal(r.length, 1);
    assert.equal(r[0]?.signal, "quic-udp443");
    await writeFile(join(dir, EGRESS_LOG), 'not json\n{"also":"bad"}\n');
    await assert.rejects(readEgress(dir), (e: unknown) => isMicroagentError(e) && e.code === "EGRESS_AUDIT_CORRUPT" && /line 1 is not JSON/.test(e.message));
    assert.throws(() => parseEgress('{"also":"bad"}\n'), (e: unknown) => isMicroagentError(e) && /line 1 is not an egress record/.test(e.message));
    assert.ok(EgressRecordSchema.safeParse({ ...DENY, time: "t", workspace: "w" }).success);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("egress-audit: an unwritable directory fails closed with EGRESS_AUDIT_WRITE_FAILED", async () => {
  const dir = await tempDir();
  try {
    await writeFile(join(dir, "file"), "x");
    assert.throws(() => new EgressAuditLog(join(dir, "file"), { workspace: "w" }), (e: unknown) => isMicroagentError(e) && e.code === "EGRESS_AUDIT_WRITE_FAILED");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("egress-audit: a verdict becomes a record that says what was proved apart from what was claimed", async () => {
  const cfg = resolvePolicyConfig({ mode: "guarded", gateway: "10.200.0.1", allow: ["allowed.test"] });
  const f = { proto: "tcp" as const, dstIp: "::ffff:45.33.32.66", dstPort: 443, l7: "tls" as const, sni: "allowed.test", dnsPinnedNames: [] };
  const rec = verdictRecord(decideEgress(cfg, f), f, { flowId: "f9" });
  assert.equal(rec.type, "egress_allow");
  assert.equal(rec.dst, "45.33.32.66:443");
  assert.equal(rec.name, null, "never audited under the asserted name");
  assert.equal(rec.sni, "allowed.test");
  assert.equal(rec.hostAsserted, "allowed.test");
  assert.equal(rec.signal, "name-destination-mismatch");
  const udp = { proto: "udp" as const, dstIp: "1.1.1.1", dstPort: 443, l7: "opaque" as const, dnsPinnedNames: [] };
  const u = verdictRecord(decideEgress(cfg, udp), udp);
  assert.equal(u.type, "egress_udp_deny");
  assert.equal(u.signal, "quic-udp443");
  assert.equal(formatDst("fd00::1", 80), "[fd00::1]:80");
  const strict = resolvePolicyConfig({ mode: "strict", gateway: "10.200.0.1", allow: ["allowed.test"] });
  const q = dnsPacket.decode(dnsPacket.encode({ id: 1, type: "query", questions: [{ name: "evil.test", type: "A" }] }));
  const dns = dnsRecord(decideDnsQuery(strict, q, { dstIp: "1.1.1.1", proto: "udp" }), { dstIp: "1.1.1.1", proto: "udp" });
  assert.equal(dns.type, "egress_dns_deny");
  assert.equal(dns.dst, "1.1.1.1:53");
  assert.equal(dns.name, "evil.test");
  assert.equal(dns.signal, "foreign-resolver");
  assert.match(dns.reason, /^REFUSED: evil\.test is not on the allow list/);
  const dir = await tempDir();
  try {
    const log = new EgressAuditLog(dir, { workspace: "w" });
    log.write(rec);
    log.write(u);
    log.write(dns);
    log.close();
    assert.deepEqual((await readEgress(dir)).map((r) => r.type).sort(), ["egress_allow", "egress_dns_deny", "egress_udp_deny"]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("egress-audit: held denies reach the disk on their own when the window closes; a failing background write is reported, not thrown", async () => {
  const dir = await tempDir();
  try {
    const log = new EgressAuditLog(dir, { workspace: "w", coalesceWindowMs: 30 });
    log.write(DENY);
    log.write(DENY);
    assert.deepEqual(await readEgress(dir), [], "held for the window");
    await new Promise((r) => setTimeout(r, 120));
    const r = await readEgress(dir);
    assert.equal(r.length, 1);
    assert.equal(r[0]?.count, 2);
    log.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const dir2 = await tempDir();
  try {
    const errors: Error[] = [];
    const log = new EgressAuditLog(dir2, { workspace: "w", coalesceWindowMs: 30, maxFileBytes: 10, onError: (e) => errors.push(e) });
    log.write({ type: "egress_allow", proto: "tcp", dst: "93.184.216.34:443", name: null, decision: "allow", reason: "x", signal: null });
    await mkdir(join(dir2, `${EGRESS_LOG}.1`, "blocker"), { recursive: true });
    log.write(DENY);
    await new Promise((r) => setTimeout(r, 120));
    assert.equal(errors.length, 1, "reported once through onError");
    assert.ok(isMicroagentError(errors[0]) && errors[0].code === "EGRESS_AUDIT_WRITE_FAILED");
    assert.equal(log.stats.backgroundErrors, 1);
    log.close();
  } finally {
    await rm(dir2, { recursive: true, force: true });
  }
});

test("egress-audit: the status/run summary counts the log by decision and type (coalesced denies by count); off has none", async () => {
  const { egressSummary } = await import("../../src/egress/summary.ts");
  const { resolveEgressFlags } = await import("../../src/egress/flags.ts");
  const dir = mkdtempSync(join(tmpdir(), "egress-sum-"));
  try {
    const log = new EgressAuditLog(dir, { workspace: "w" });
    const base = { proto: "tcp" as const, dst: "93.184.216.34:443", name: "a.test", reason: "r", signal: null };
    log.write({ ...base, type: "egress_allow", decision: "allow" });
    log.write({ ...base, type: "egress_close", decision: "allow" });
    for (let i = 0; i < 5; i++) log.write({ ...base, type: "egress_deny", decision: "deny", name: null, signal: "denied" });
    log.write({ ...base, proto: "dns", dst: "10.200.0.1:53", type: "egress_dns_allow", decision: "allow" });
    log.close();
    const s = await egressSummary(dir, resolveEgressFlags({ egress: "strict", egressAllow: ["a.test"], mediation: ["7000=127.0.0.1:9"] }));
    assert.deepEqual(s.counts, { allow: 2, deny: 5 });
    assert.deepEqual(s.byType, { egress_allow: 1, egress_close: 1, egress_deny: 5, egress_dns_allow: 1 });
    assert.equal(s.mode, "strict");
    assert.deepEqual(s.allow, ["a.test"]);
    assert.deepEqual(s.mediation, ["7000=127.0.0.1:9"]);
    assert.equal(s.audit, join(dir, "egress.jsonl"));
    const off = await egressSummary(dir, resolveEgressFlags({ egress: "off" }));
    assert.deepEqual([off.counts, off.audit], [{ allow: 0, deny: 0 }, null]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

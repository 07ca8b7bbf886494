/**
 * The network service without a VM: a fake QEMU connects to its stream socket and speaks the 4-byte
 * framing (an ARP request for the gateway gets the gateway's answer), the link deadline fails closed,
 * a taken published port is named, the boot config carries eth0 and the per-boot files, and the
 * resolver forwards to (and times out on) UDP servers on 127.0.0.1. Loopback and Unix sockets only.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createSocket } from "node:dgram";
import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NetworkService } from "../../src/supervisor/network-service.ts";
import { ForwardingResolver, hostResolvers } from "../../src/supervisor/net-host.ts";
import type { RunningVm, VmLaunchSpec } from "../../src/backend/types.ts";
import type { ServiceContext } from "../../src/supervisor/service.ts";
import { StreamFrameDecoder, encodeStreamFrame } from "../../src/net/index.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { arpFrame, gwIp, ip } from "../helpers/net-guest.ts";
import { parseMac } from "../../src/net/addr.ts";

const MAC = "52:54:00:aa:bb:cc";

function service(dir: string, extra: Partial<ConstructorParameters<typeof NetworkService>[0]> = {}) {
  return new NetworkService({ workspace: "w", socketPath: join(dir, "net.sock"), mac: MAC, settings: { mode: "user" }, log: () => {}, resolvConf: join(dir, "none"), ...extra });
}

const spec = { workspace: "w" } as VmLaunchSpec;
function ctx(ms: number, exited: Promise<never> = new Promise(() => {})): ServiceContext {
  return { workspace: "w", vm: { exited } as unknown as RunningVm, launch: spec, remainingMs: () => ms, log: () => {} };
}

test("supervisor-network: the NIC socket carries framed Ethernet both ways; the boot config names eth0 and the per-boot files", async () => {
  const dir = mkdtempSync(join(tmpdir(), "sup-net-"));
  const s = service(dir, { settings: { mode: "user", addHosts: [{ name: "db.test", ip: "10.99.0.7" }] }, hostname: "box" });
  try {
    const launched = await s.beforeLaunch(spec);
    assert.deepEqual(launched.network, { kind: "stream", socketPath: join(dir, "net.sock"), mac: MAC });
    const qemu = connect(join(dir, "net.sock"));
    await s.afterLaunch(ctx(5000));
    const mac = parseMac(MAC)!;
    const got = new Promise<Buffer>((resolve) => {
      const dec = new StreamFrameDecoder();
      qemu.on("data", (c: Buffer) => {
        const f = dec.push(c);
        if (f.length) resolve(f[0]!);
      });
    });
    qemu.write(encodeStreamFrame(arpFrame(1, mac, ip("10.200.0.2"), gwIp)));
    const reply = await got;
    assert.equal(reply.readUInt16BE(12), 0x0806, "an ARP frame");
    assert.equal(reply.readUInt16BE(14 + 6), 2, "a reply");
    assert.deepEqual([...reply.subarray(0, 6)], [...mac], "addressed to the guest's MAC");
    assert.equal(reply.readUInt32BE(14 + 14), gwIp, "for the gateway");
    const d = s.describe() as { link: string; counters: { framesIn: number; framesOut: number } };
    assert.equal(d.link, "connected");
    assert.equal(d.counters.framesIn, 1);
    assert.equal(d.counters.framesOut, 1);
    const cfg = s.bootConfig({ argv: [] }) as { network: Record<string, unknown> };
    assert.deepEqual({ ...cfg.network, resolvConf: undefined, hosts: undefined }, { iface: "eth0", mac: MAC, address: "10.200.0.2", prefix: 24, gateway: "10.200.0.1", mtu: 65520, resolvConf: undefined, hosts: undefined });
    assert.match(cfg.network.resolvConf as string, /^nameserver 10\.200\.0\.1$/m);
    assert.match(cfg.network.hosts as string, /^10\.200\.0\.1\thost\.microagent\.internal$/m);
    assert.match(cfg.network.hosts as string, /^10\.99\.0\.7\tdb\.test$/m);
    assert.match(cfg.network.hosts as string, /^10\.200\.0\.2\tbox$/m);
    // Quarantine: later frames are dropped, nothing answers.
    s.sever("test");
    qemu.write(encodeStreamFrame(arpFrame(1, mac, ip("10.200.0.2"), gwIp)));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal((s.describe() as { counters: { framesOut: number } }).counters.framesOut, 1);
    qemu.destroy();
  } finally {
    await s.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("supervisor-network: no NIC connection within the deadline fails closed with NETWORK_LINK_FAILED", async () => {
  const dir = mkdtempSync(join(tmpdir(), "sup-net-"));
  const s = service(dir);
  try {
    await s.beforeLaunch(spec);
    await assert.rejects(s.afterLaunch(ctx(100)), (e: unknown) => isMicroagentError(e) && e.code === "NETWORK_LINK_FAILED" && /did not connect its NIC/.test(e.message) && /fail closed/.test(e.message));
  } finally {
    await s.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("supervisor-network: a taken published port fails before launch, naming it", async () => {
  const dir = mkdtempSync(join(tmpdir(), "sup-net-"));
  const taken = createServer();
  await new Promise<void>((r) => taken.listen(0, "127.0.0.1", () => r()));
  const port = (taken.address() as AddressInfo).port;
  const s = service(dir, { settings: { mode: "user", forwards: [{ hostIp: "127.0.0.1", hostPort: port, guestPort: 80, proto: "tcp" }] } });
  try {
    await assert.rejects(s.beforeLaunch(spec), (e: unknown) => isMicroagentError(e) && e.code === "NETWORK_PORT_IN_USE" && e.message.includes(`127.0.0.1:${port} is already in use`));
  } finally {
    await s.stop();
    taken.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("supervisor-network: the resolver forwards raw queries to a loopback upstream and times out on a silent one", async () => {
  const up = createSocket("udp4");
  up.on("message", (m, r) => up.send(Buffer.concat([m.subarray(0, 2), Buffer.from("answer-tail-0123")]), r.port, r.address));
  await new Promise<void>((r) => up.bind(0, "127.0.0.1", () => r()));
  const silent = createSocket("udp4");
  await new Promise<void>((r) => silent.bind(0, "127.0.0.1", () => r()));
  const counters = { denied: {}, connectErrors: 0, dnsForwarded: 0, dnsFailed: 0 };
  try {
    const q = Buffer.alloc(20, 1);
    q.writeUInt16BE(0xbeef, 0);
    const ok = new ForwardingResolver([{ ip: "127.0.0.1", port: up.address().port }], 2000, counters);
    const a = await ok.query(q);
    assert.equal(a.readUInt16BE(0), 0xbeef);
    assert.equal(a.subarray(2).toString(), "answer-tail-0123");
    const bad = new ForwardingResolver([{ ip: "127.0.0.1", port: silent.address().port }], 300, counters);
    await assert.rejects(bad.query(q), /did not answer within/);
    await assert.rejects(new ForwardingResolver([], 300, counters).query(q), /no upstream resolver/);
    assert.deepEqual([counters.dnsForwarded, counters.dnsFailed], [1, 1]);
    assert.deepEqual(hostResolvers("/nonexistent"), []);
  } finally {
    up.close();
    silent.close();
  }
});

test("supervisor-network: guarded egress: the mediator is set up before launch, the boot config carries the CA (validated), describe and readiness report it", async () => {
  const { parseBootConfig } = await import("../../src/channel/boot-config.ts");
  const { GUEST_BUNDLE_FILE, GUEST_BUNDLE_PATHS } = await import("../../src/egress/trust.ts");
  const dir = mkdtempSync(join(tmpdir(), "sup-net-eg-"));
  const listener = createServer((c) => c.destroy());
  await new Promise<void>((r) => listener.listen(0, "127.0.0.1", () => r()));
  const port = (listener.address() as AddressInfo).port;
  const s = service(dir, { workspaceDir: dir, settings: { mode: "user", egress: { mode: "guarded", mediation: [`7000=127.0.0.1:${port}`] } } });
  try {
    assert.equal(s.egress.mode, "guarded");
    await s.beforeLaunch(spec);
    assert.ok(s.mediation, "the mediator exists after beforeLaunch");
    const cfg = parseBootConfig(s.bootConfig({ argv: [], env: ["A=1"] }));
    assert.ok(cfg.network, "eth0 is still configured");
    assert.deepEqual(cfg.egressTrust?.bindMounts, [{ source: GUEST_BUNDLE_FILE, targets: [...GUEST_BUNDLE_PATHS] }]);
    const bundle = cfg.files.find((f) => f.path === GUEST_BUNDLE_FILE);
    assert.ok(bundle && Buffer.from(bundle.contentBase64, "base64").toString().includes(s.mediation.trust.caPem.trim()), "the bundle holds the workspace CA");
    assert.ok(cfg.env.includes(`SSL_CERT_FILE=${GUEST_BUNDLE_FILE}`) && cfg.env.at(-1) === "A=1", "trust env first, the user's env after (it wins)");
    const bytes = Buffer.byteLength(JSON.stringify(cfg));
    assert.ok(bytes < 4 * 1024 * 1024, `the boot config fits the guest's 4 MiB frame (${bytes} bytes)`);
    const d = s.describe() as { egress: { mode: string; caFingerprint256: string; audit: { path: string } } };
    assert.equal(d.egress.mode, "guarded");
    assert.match(d.egress.caFingerprint256, /^[0-9A-F:]+$/);
    assert.equal(d.egress.audit.path, join(dir, "egress.jsonl"));
    assert.deepEqual((await s.readiness()).map((r) => [r.name, r.ready]), [["mediationReady", true]]);
    listener.close();
    await new Promise((r) => setTimeout(r, 20));
    const down = await s.readiness();
    assert.equal(down[0]?.ready, false);
    assert.match(down[0]?.detail ?? "", /^error: mediation channel required but unreachable/);
    assert.equal(down[0]?.code, "MEDIATION_UNREACHABLE");
  } finally {
    listener.close();
    await s.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("supervisor-network: a mediator that cannot be set up refuses the start (fail closed) with cause and fix; off and old manifests stay unmediated", async () => {
  const dir = mkdtempSync(join(tmpdir(), "sup-net-eg-"));
  const missing = join(dir, "no-such-ca.pem");
  const s = service(dir, { workspaceDir: dir, settings: { mode: "user", egress: { mode: "strict", upstreamCa: [missing] } } });
  try {
    await assert.rejects(s.beforeLaunch(spec), (e: unknown) => {
      assert.ok(isMicroagentError(e));
      assert.equal(e.code, "EGRESS_SETUP_FAILED");
      assert.match(e.message, new RegExp(`^egress: strict mediation unavailable for workspace w — --egress-upstream-ca ${missing}: cannot read it: .*; fix it or use --egress off$`));
      assert.match(e.remediation, /--egress off/);
      return true;
    });
    assert.equal(s.mediation, undefined);
  } finally {
    await s.stop();
  }
  for (const settings of [{ mode: "user" as const }, { mode: "user" as const, egress: { mode: "off" as const } }]) {
    const plain = service(dir, { settings });
    try {
      assert.equal(plain.egress.mode, "off");
      await plain.beforeLaunch(spec);
      assert.equal(plain.mediation, undefined);
      const cfg = plain.bootConfig({ argv: [] }) as Record<string, unknown>;
      assert.equal(cfg.egressTrust, undefined, "no CA in the guest with egress off");
      assert.deepEqual((plain.describe() as { egress: unknown }).egress, { mode: "off" });
    } finally {
      await plain.stop();
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

test("supervisor-network: an audit that cannot be written severs the mediator and the NIC (a mediated workspace never runs unaudited)", async () => {
  const dir = mkdtempSync(join(tmpdir(), "sup-net-eg-"));
  const logs: string[] = [];
  const s = service(dir, { workspaceDir: dir, settings: { mode: "user", egress: { mode: "guarded" } }, log: (m) => logs.push(m) });
  try {
    await s.beforeLaunch(spec);
    const eg = s.mediation!;
    eg.audit.write = () => {
      throw new Error("ENOSPC: no space left on device");
    };
    // A flow the policy denies is audited at once: the write fails.
    const d = eg.policy.decide({ proto: "tcp", dstIp: "10.9.9.9", dstPort: 80, guestPort: 40000 });
    assert.equal(d.verdict, "deny");
    assert.equal((s.describe() as { link: string }).link, "severed", "the NIC goes with the mediator");
    assert.ok(logs.some((l) => /egress audit failed \(ENOSPC.*severing the workspace's network \(fail closed\)/.test(l)), logs.join("\n"));
    assert.deepEqual(eg.policy.decide({ proto: "tcp", dstIp: "93.184.216.34", dstPort: 443, guestPort: 40001 }), { verdict: "deny", reason: "severed" }, "later flows are refused");
  } finally {
    await s.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

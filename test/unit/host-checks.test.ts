import { test } from "node:test";
import assert from "node:assert/strict";
import { buildChecks, detectBackend, verdictOf, type HostCheck } from "../../src/host/checks.ts";
import type { HostFacts, LinuxFacts } from "../../src/host/facts.ts";
import type { KvmProbeResult } from "../../src/host/kvm.ts";
import type { KernelStatus } from "../../src/kernel/status.ts";
import { formatDoctorText } from "../../src/host/format.ts";
import { doctorFailure, type HostResponse } from "../../src/host/doctor.ts";
import { HostErrors } from "../../src/host/errors.ts";
import { capabilityTable } from "../../src/backend/capabilities.ts";
import { listBackends } from "../../src/backend/registry.ts";
import type { BackendName } from "../../src/contract/backend.ts";

const kvmSlow: KvmProbeResult = {
  usable: false,
  code: "slow",
  reason: "KVM runs guest code at only 1.5M instructions/s",
  remediation: "Move to a host with hardware virtualization",
  devicePath: "/dev/kvm",
  devicePresent: true,
  paravirtual: true,
  stages: [],
  guestIps: 1_500_000,
};
const kvmOk: KvmProbeResult = { ...kvmSlow, usable: true, code: "ok", reason: "KVM ran guest code at 2.4G instructions/s", remediation: "", paravirtual: false, guestIps: 2.4e9 };
const tool = (name: string, path: string) => ({ name, available: true, path, source: "path" as const, version: "1.0", detail: `${path} 1.0` });
const missing = (name: string) => ({ name, available: false, detail: `${name} not found on PATH` });

/** The development machine as doctor sees it: qemu + TCG, paravirtual KVM, no vsock, no firecracker. */
function thisMachine(over: Partial<LinuxFacts> = {}, top: Partial<HostFacts> = {}): HostFacts {
  return {
    platform: "linux",
    hostArch: "amd64",
    guestArch: "amd64",
    supervisor: { path: "/pkg/dist/supervisor/main.js", available: true, source: "default", detail: "/pkg/dist/supervisor/main.js" },
    guestInit: { path: "/pkg/guest/build/microagent-init", available: true, source: "default", detail: "/pkg/guest/build/microagent-init" },
    linux: {
      kvm: kvmSlow,
      qemu: tool("qemu-system-x86_64", "/usr/bin/qemu-system-x86_64"),
      qemuFeatures: { accels: ["tcg", "kvm"], virtserialport: true, microvm: true },
      firecracker: missing("firecracker"),
      vsock: { available: false, detail: "/dev/vhost-vsock does not exist" },
      tun: { available: true, detail: "/dev/net/tun present and opens read-write" },
      pasta: tool("pasta", "/usr/bin/pasta"),
      userns: { available: true, detail: "created a user namespace and wrote uid_map as uid 0", remediation: "" },
      mke2fs: tool("mke2fs", "/usr/sbin/mke2fs"),
      debugfs: tool("debugfs", "/usr/sbin/debugfs"),
      ...over,
    },
    ...top,
  };
}

const kernelMissing: KernelStatus = { status: "missing", backend: "linux-qemu", arch: "amd64", path: "/s/kernels/linux-qemu/amd64/vmlinuz" };
const kernelOk: KernelStatus = { ...kernelMissing, status: "installed", sha256: "a".repeat(64), version: "6.1.0-56-cloud-amd64" };

const byName = (checks: HostCheck[]) => new Map(checks.map((c) => [c.name, c]));

test("host-checks: linux-qemu here: required checks pass, KVM optional and unusable -> degraded", () => {
  const checks = buildChecks("linux-qemu", thisMachine(), kernelOk);
  const m = byName(checks);
  for (const name of ["vmm", "accel", "mke2fs", "guest-init", "console", "supervisor"]) {
    assert.equal(m.get(name)?.required, true, name);
    assert.equal(m.get(name)?.ok, true, name);
  }
  assert.match(m.get("accel")?.detail ?? "", /^tcg/);
  assert.equal(m.get("kvm")?.ok, false);
  assert.equal(m.get("kvm")?.required, false);
  assert.match(m.get("kvm")?.detail ?? "", /1\.5M.*TCG/);
  assert.equal(m.has("vsock"), false, "linux-qemu talks over virtio-serial, vsock is not its check");
  assert.equal(verdictOf(checks), "degraded");
  for (const c of checks) assert.equal(c.remediation === "", c.ok, `${c.name}: remediation exactly when failing`);
});

test("host-checks: linux-qemu on a hardware KVM host is ok with accel kvm", () => {
  const checks = buildChecks("linux-qemu", thisMachine({ kvm: kvmOk }), kernelOk);
  assert.equal(verdictOf(checks), "ok");
  assert.equal(byName(checks).get("accel")?.detail, "kvm");
});

test("host-checks: missing required pieces fail with their fix", () => {
  const noQemu = byName(buildChecks("linux-qemu", thisMachine({ qemu: missing("qemu-system-x86_64") }), kernelOk));
  assert.equal(noQemu.get("vmm")?.ok, false);
  assert.match(noQemu.get("vmm")?.remediation ?? "", /apt install qemu-system-x86/);
  assert.equal(noQemu.get("console")?.ok, false);
  const noMicrovm = byName(buildChecks("linux-qemu", thisMachine({ qemuFeatures: { accels: ["tcg"], virtserialport: true, microvm: false } }), kernelOk));
  assert.match(noMicrovm.get("vmm")?.detail ?? "", /no microvm machine/);
  const noTcg = byName(buildChecks("linux-qemu", thisMachine({ qemuFeatures: { accels: ["kvm"], virtserialport: true, microvm: true } }), kernelOk));
  assert.equal(noTcg.get("accel")?.ok, false);
  const noVirtio = byName(buildChecks("linux-qemu", thisMachine({ qemuFeatures: { accels: ["tcg"], virtserialport: false, microvm: true } }), kernelOk));
  assert.match(noVirtio.get("console")?.detail ?? "", /virtserialport/);
  const noMke2fs = buildChecks("linux-qemu", thisMachine({ mke2fs: missing("mke2fs") }), kernelOk);
  assert.match(byName(noMke2fs).get("mke2fs")?.remediation ?? "", /e2fsprogs.*--mke2fs/);
  assert.equal(verdictOf(noMke2fs), "failed");
  const flagSupervisor = thisMachine({}, { supervisor: { path: "/nope", available: false, source: "flag", detail: "/nope (from --supervisor) does not exist" } });
  assert.match(byName(buildChecks("linux-qemu", flagSupervisor, kernelOk)).get("supervisor")?.remediation ?? "", /--supervisor/);
});

test("host-checks: kernel and user networking are optional", () => {
  const checks = buildChecks("linux-qemu", thisMachine({ pasta: missing("pasta"), tun: { available: false, detail: "/dev/net/tun does not exist" } }), kernelMissing);
  const m = byName(checks);
  assert.equal(m.get("kernel")?.ok, false);
  assert.match(m.get("kernel")?.remediation ?? "", /microagent kernel install/);
  assert.match(m.get("pasta")?.remediation ?? "", /apt install passt/);
  assert.match(m.get("tun")?.remediation ?? "", /modprobe tun/);
  // Egress mediation is userspace on linux-qemu: reported, never the TPROXY failure of seed 001.
  assert.equal(m.get("egress")?.ok, true);
  assert.match(m.get("egress")?.detail ?? "", /without TPROXY modules, nftables or root/);
  assert.equal(verdictOf(checks), "degraded");
  const broken = byName(buildChecks("linux-qemu", thisMachine(), { ...kernelMissing, status: "error", error: "the installed kernel /x is missing" }));
  assert.match(broken.get("kernel")?.detail ?? "", /is missing/);
});

test("host-checks: linux-kvm here fails on firecracker, KVM and vsock", () => {
  const checks = buildChecks("linux-kvm", thisMachine(), kernelOk);
  const failed = checks.filter((c) => c.required && !c.ok).map((c) => c.name);
  assert.deepEqual(failed.sort(), ["console", "kvm", "vmm", "vsock"]);
  assert.match(byName(checks).get("vmm")?.remediation ?? "", /MICROAGENT_FIRECRACKER/);
  assert.equal(verdictOf(checks), "failed");
});

test("host-checks: apple-vf and windows-hyperv on Linux fail every required check with 'wrong host OS'", () => {
  for (const backend of ["apple-vf", "windows-hyperv"] as BackendName[]) {
    const checks = buildChecks(backend, thisMachine(), kernelOk);
    assert.ok(checks.length >= 4);
    for (const c of checks) {
      assert.equal(c.required, true);
      assert.equal(c.ok, false);
      assert.match(c.detail, /^wrong host OS: .* this host runs Linux/);
      assert.match(c.remediation, /--backend linux-qemu/);
    }
    assert.equal(verdictOf(checks), "failed");
  }
  const linuxOnMac = buildChecks("linux-qemu", { ...thisMachine(), platform: "darwin", linux: undefined }, kernelOk);
  assert.ok(linuxOnMac.every((c) => !c.ok && /needs Linux, this host runs macOS/.test(c.detail)));
});

test("host-checks: default backend", () => {
  assert.equal(detectBackend(thisMachine()), "linux-qemu");
  assert.equal(detectBackend(thisMachine({ kvm: kvmOk })), "linux-qemu", "KVM alone is not enough: firecracker is missing");
  assert.equal(detectBackend(thisMachine({ kvm: kvmOk, firecracker: tool("firecracker", "/usr/bin/firecracker") })), "linux-kvm");
  assert.equal(detectBackend(thisMachine({ kvm: kvmSlow, firecracker: tool("firecracker", "/usr/bin/firecracker") })), "linux-qemu");
  assert.equal(detectBackend({ ...thisMachine(), platform: "darwin" }), "apple-vf");
  assert.equal(detectBackend({ ...thisMachine(), platform: "win32" }), "windows-hyperv");
});

function response(backend: BackendName, checks: HostCheck[]): HostResponse {
  const verdict = verdictOf(checks);
  return {
    ok: verdict !== "failed",
    verdict,
    backend,
    kernel: kernelOk,
    host: {
      backend,
      architecture: "amd64",
      hostArchitecture: "amd64",
      hostOs: "linux",
      virtualizationSupported: true,
      accel: "tcg",
      binaryPath: "/usr/bin/qemu-system-x86_64",
      binaryVersion: "7.2.22",
      kvmAvailable: false,
      vsockAvailable: false,
      tunAvailable: true,
      userNetworkingAvailable: true,
      userNetworkingBinary: "/usr/bin/pasta",
      userNamespacesAvailable: true,
      mke2fsAvailable: true,
      debugfsAvailable: true,
      supervisorPath: "/pkg/dist/supervisor/main.js",
      supervisorAvailable: true,
      guestInitPath: "/pkg/guest/build/microagent-init",
      guestInitAvailable: true,
      consoleAvailable: true,
      consoleMode: "interactive",
      isolatedNetworkReady: true,
      userNetworkReady: true,
      pauseResumeAvailable: false,
      snapshotAvailable: false,
      checks,
    },
    backends: capabilityTable(listBackends()),
  };
}

test("host-checks: text summary has the seed's lines and a fix under each failing check", () => {
  const r = response("linux-qemu", buildChecks("linux-qemu", thisMachine(), kernelOk));
  const text = formatDoctorText(r);
  const lines = text.split("\n");
  assert.equal(lines[0], "Backend: linux-qemu");
  assert.equal(lines[1], "Status: degraded (1 optional check failed)");
  assert.match(lines[2] ?? "", /^Host: amd64, qemu=\/usr\/bin\/qemu-system-x86_64 \(7\.2\.22\), accel=tcg, supervisor=\/pkg\/dist\/supervisor\/main\.js, supervisor available, virtualization supported, KVM unavailable, vsock unavailable$/);
  assert.equal(lines[3], "Console: available (interactive)");
  assert.equal(lines[4], "Kernel: installed (/s/kernels/linux-qemu/amd64/vmlinuz)");
  assert.match(lines[5]!, /^Networking: isolated ready; user ready \(the default; datapath userspace-stack: .*needs no root, no tap device, no nftables\); passt .*present \(not used by user mode\)$/);
  const kvmLine = lines.findIndex((l) => /^ {2}! KVM /.test(l));
  assert.ok(kvmLine > 0, text);
  assert.match(lines[kvmLine + 1] ?? "", /^ {6}fix: Move to a host with hardware virtualization/);
  assert.ok(!text.includes("\u001b["), "no colour unless asked");
  assert.ok(formatDoctorText(r, { color: true }).includes("\u001b[32m✓"));
});

test("host-checks: doctor failure error carries the failed checks", () => {
  const r = response("apple-vf", buildChecks("apple-vf", thisMachine(), kernelOk));
  const e = doctorFailure(r);
  assert.equal(e.code, "HOST_CHECKS_FAILED");
  assert.equal(e.kind, "unsupported");
  assert.match(e.message, /^apple-vf: 4 required checks failed \(Virtualization\.framework: wrong host OS/);
  const failed = (e.details?.failed ?? []) as HostCheck[];
  assert.equal(failed.length, 4);
  assert.match(e.remediation, /macOS/);
});

test("host-checks: error codes", () => {
  for (const [make, code, kind] of [
    [HostErrors.HOST_CHECKS_FAILED, "HOST_CHECKS_FAILED", "unsupported"],
    [HostErrors.HOST_PROBE_FAILED, "HOST_PROBE_FAILED", "permanent"],
  ] as const) {
    const e = make({ message: "m" });
    assert.equal(e.code, code);
    assert.equal(e.kind, kind);
    assert.equal(e.retryable, false);
    assert.ok(e.remediation.length > 10);
  }
});

/**
 * doctor and host against the real machine: real KVM probe (native/build/kvm-probe), real QEMU,
 * real unshare, real device nodes. The expectations are this development machine's facts: a
 * paravirtual /dev/kvm that cannot run a stock guest (so linux-qemu runs with TCG), no
 * /dev/vhost-vsock, /dev/net/tun, pasta and working user namespaces (we run as root).
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { doctor, hostReport } from "../../src/host/doctor.ts";
import { decideKvm, gatherKvmFacts, probeKvm, selectAccel } from "../../src/host/kvm.ts";
import { runTool } from "../../src/host/exec.ts";
import { kernelDir, writeManifest } from "../../src/kernel/manifest.ts";
import { packageRoot } from "../../src/util/exec-path.ts";
import type { HostCheck } from "../../src/host/checks.ts";
import { scratchDir } from "../helpers/scratch.ts";
import { runCli } from "../helpers/cli.ts";

const root = packageRoot();
let dir: string;
let stateDir: string;
let supervisor: string;

before(() => {
  // The KVM probe is a small C helper; scripts/setup builds it too. Building here keeps the test
  // honest on a fresh checkout (make is a no-op when it is up to date).
  execFileSync("make", ["-s", "-C", join(root, "native")], { stdio: "inherit", timeout: 60_000 });
  assert.ok(existsSync(join(root, "native/build/kvm-probe")), "native/build/kvm-probe was not built");
  dir = scratchDir("host-doctor");
  stateDir = join(dir, "state");
  // A stand-in supervisor file so the verdict does not depend on whether dist/ was built.
  supervisor = join(dir, "supervisor.js");
  writeFileSync(supervisor, "// stand-in\n");
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const byName = (checks: HostCheck[]) => new Map(checks.map((c) => [c.name, c]));

test("host-doctor: the KVM probe reports this paravirtual /dev/kvm unusable, with the reason, in < 3 s", async () => {
  const t0 = performance.now();
  const kvm = await probeKvm();
  const ms = performance.now() - t0;
  assert.equal(kvm.devicePresent, true, "/dev/kvm exists here");
  assert.equal(kvm.usable, false, `KVM must be unusable here: ${kvm.reason}`);
  assert.equal(kvm.code, "slow", kvm.reason);
  // Real-mode and long-mode snippets did run: the device is not simply broken, it is slow.
  assert.deepEqual(
    kvm.stages.filter((s) => s.stage === "real" || s.stage === "long").map((s) => s.ok),
    [true, true],
  );
  assert.ok((kvm.guestIps ?? Infinity) < 20_000_000, `measured ${kvm.guestIps} guest instructions/s`);
  assert.match(kvm.reason, /instructions\/s/);
  assert.ok(ms < 3000, `probe took ${ms} ms`);
  const accel = await selectAccel();
  assert.equal(accel.accel, "tcg");
  assert.match(accel.reason, /^KVM unusable: .*using TCG software emulation$/);
});

test("host-doctor: linux-qemu here: TCG, required checks pass, verdict degraded", async () => {
  const t0 = performance.now();
  const r = await doctor({ stateDir, supervisor });
  const ms = performance.now() - t0;
  assert.equal(r.backend, "linux-qemu", "default backend: no firecracker, no usable KVM");
  const m = byName(r.host.checks);
  for (const name of ["vmm", "accel", "mke2fs", "debugfs", "supervisor", "tun", "pasta", "userns"]) {
    assert.equal(m.get(name)?.ok, true, `${name}: ${m.get(name)?.detail}`);
  }
  assert.equal(r.host.binaryPath, "/usr/bin/qemu-system-x86_64");
  assert.match(r.host.binaryVersion ?? "", /^\d+\.\d+/);
  assert.equal(r.host.accel, "tcg");
  assert.equal(r.host.kvmAvailable, false);
  assert.equal(m.get("kvm")?.ok, false);
  assert.equal(m.get("kvm")?.required, false);
  assert.equal(r.host.vsockAvailable, false, "no /dev/vhost-vsock on this machine");
  assert.equal(r.host.tunAvailable, true);
  assert.equal(r.host.userNetworkingAvailable, true);
  assert.equal(r.host.userNetworkingBinary, "/usr/bin/pasta");
  assert.equal(r.host.userNamespacesAvailable, true);
  assert.equal(r.host.mke2fsPath, "/usr/sbin/mke2fs");
  // A fresh state dir has no kernel: optional, with the install command as the fix.
  assert.equal(r.kernel.status, "missing");
  assert.match(m.get("kernel")?.remediation ?? "", /microagent kernel install/);
  // Build artifacts: judged against what is on disk right now.
  const initBuilt = existsSync(join(root, "guest/build/microagent-init"));
  assert.equal(m.get("guest-init")?.ok, initBuilt);
  assert.equal(m.get("console")?.ok, initBuilt);
  assert.equal(r.ok, initBuilt);
  assert.equal(r.verdict, initBuilt ? "degraded" : "failed");
  assert.equal(r.host.isolatedNetworkReady, true);
  assert.equal(r.host.userNetworkReady, true);
  assert.ok(ms < 5000, `doctor took ${ms} ms`);
});

test("host-doctor: the default supervisor check matches dist/ on disk", async () => {
  const r = await doctor({ stateDir });
  const built = existsSync(join(root, "dist/supervisor/main.js"));
  assert.equal(r.host.supervisorPath, join(root, "dist/supervisor/main.js"));
  assert.equal(r.host.supervisorAvailable, built);
  assert.equal(byName(r.host.checks).get("supervisor")?.ok, built);
});

test("host-doctor: CLI --json doctor: Response shape and exit code", async () => {
  const res = await runCli(["--json", "doctor", "--state-dir", stateDir, "--supervisor", supervisor]);
  const doc = JSON.parse(res.out);
  assert.equal(res.code, doc.ok ? 0 : 1);
  assert.equal(doc.backend, "linux-qemu");
  assert.ok(["ok", "degraded", "failed"].includes(doc.verdict));
  for (const field of ["kvmAvailable", "vsockAvailable", "tunAvailable", "userNamespacesAvailable", "userNetworkingAvailable", "consoleAvailable", "supervisorAvailable"]) {
    assert.equal(typeof doc.host[field], "boolean", field);
  }
  for (const c of doc.host.checks) assert.deepEqual(Object.keys(c).sort(), ["detail", "label", "name", "ok", "remediation", "required"]);
  assert.equal(doc.kernel.backend, "linux-qemu");
  assert.equal(res.err, "");
});

test("host-doctor: CLI text doctor prints the summary lines", async () => {
  const res = await runCli(["doctor", "--state-dir", stateDir, "--supervisor", supervisor]);
  const lines = res.out.split("\n");
  assert.equal(lines[0], "Backend: linux-qemu");
  assert.match(lines[1] ?? "", /^Status: (ok|degraded|failed)/);
  assert.match(lines[2] ?? "", /^Host: amd64, qemu=\/usr\/bin\/qemu-system-x86_64 .*accel=tcg.*KVM unavailable, vsock unavailable$/);
  assert.match(lines[3] ?? "", /^Console: /);
  assert.equal(lines[4], "Kernel: not installed (run `microagent kernel install`)");
  assert.match(lines[5] ?? "", /^Networking: isolated ready; user ready/);
  assert.match(res.out, /\n {2}! KVM .*instructions\/s.*\n {6}fix: /);
});

test("host-doctor: apple-vf and windows-hyperv on Linux fail every required check (exit 1, AX envelope)", async () => {
  for (const backend of ["apple-vf", "windows-hyperv"]) {
    const json = await runCli(["--json", "doctor", "--backend", backend, "--state-dir", stateDir]);
    assert.equal(json.code, 1);
    const doc = JSON.parse(json.out);
    assert.equal(doc.ok, false);
    assert.equal(doc.verdict, "failed");
    assert.equal(doc.backend, backend);
    const required = doc.host.checks.filter((c: HostCheck) => c.required);
    assert.ok(required.length >= 4);
    for (const c of required) {
      assert.equal(c.ok, false);
      assert.match(c.detail, /^wrong host OS/);
    }
    const ax = await runCli(["--mode", "ax", "doctor", "--backend", backend, "--state-dir", stateDir]);
    assert.equal(ax.code, 1);
    const env = JSON.parse(ax.out);
    assert.deepEqual(Object.keys(env).sort(), ["error", "ok"]);
    assert.equal(env.ok, false);
    assert.equal(env.error.code, "HOST_CHECKS_FAILED");
    assert.equal(env.error.kind, "unsupported");
    assert.equal(env.error.details.failed.length, required.length);
  }
});

test("host-doctor: a missing --supervisor fails doctor but not host", async () => {
  const doc = await runCli(["--json", "doctor", "--state-dir", stateDir, "--supervisor", join(dir, "nope.js")]);
  assert.equal(doc.code, 1);
  const failed = JSON.parse(doc.out).host.checks.filter((c: HostCheck) => !c.ok && c.required);
  assert.ok(failed.some((c: HostCheck) => c.name === "supervisor" && /--supervisor/.test(c.remediation)));
  const host = await runCli(["--json", "host", "--state-dir", stateDir, "--supervisor", join(dir, "nope.js")]);
  assert.equal(host.code, 0, "host exits 0 whenever the probes ran");
  const h = JSON.parse(host.out);
  assert.equal(h.ok, true);
  assert.equal(h.verdict, "failed");
  assert.equal(h.host.capabilities.exec.supported, true);
  assert.equal(h.host.capabilities.exec.ready, false);
  assert.match(h.host.capabilities.exec.detail, /supervisor/);
});

test("host-doctor: host capability report", async () => {
  const r = await hostReport({ stateDir, supervisor });
  const caps = r.host.capabilities;
  assert.ok(caps);
  // Read off linux-qemu's capability objects: it has `pause` (QMP stop/cont) and `snapshot`.
  assert.equal(caps.pauseResume.supported, true);
  assert.equal(caps.snapshots.supported, true);
  assert.equal(caps.networking.isolated.supported, true);
  assert.equal(caps.networking.user.supported, true);
  assert.equal(caps.networking.user.ready, r.host.userNetworkReady);
  const text = await runCli(["host", "--state-dir", stateDir, "--supervisor", supervisor]);
  assert.equal(text.code, 0);
  assert.match(text.out, /^Backend: linux-qemu\n/);
  assert.match(text.out, /\nCapabilities:\n {2}console /);
  assert.match(text.out, /\n {2}pause {8}(ready \(`pause`\/`resume` and quarantine freeze the VM with it\)|supported, not ready)/);
  assert.match(text.out, /\n {2}snapshots {4}(ready|supported, not ready)/);
  assert.match(text.out, /\nBackends:\n {2}linux-kvm {7}not implemented in this build\n {2}linux-qemu {6}channel virtio-serial; disk qcow2\/raw; network isolated, stream socket; pause yes; snapshot yes\n {2}apple-vf {8}not implemented in this build\n {2}windows-hyperv {2}not implemented in this build\n/);
});

test("host-doctor: --help never runs a probe", async () => {
  const marker = join(dir, "probe-ran");
  const wrapper = join(dir, "kvm-probe-wrapper");
  writeFileSync(wrapper, `#!/bin/sh\ntouch '${marker}'\nexec '${join(root, "native/build/kvm-probe")}' "$@"\n`);
  chmodSync(wrapper, 0o755);
  const env = { MICROAGENT_KVM_PROBE: wrapper };
  for (const args of [["doctor", "--help"], ["host", "--help"], ["--json", "doctor", "--help"]]) {
    const res = await runCli([...args, "--state-dir", stateDir], env);
    assert.equal(res.code, 0, args.join(" "));
    assert.match(res.out, /Usage: microagent (doctor|host)/);
    assert.equal(existsSync(marker), false, `${args.join(" ")} ran the KVM probe`);
  }
  // The seam is real: a plain doctor does run the wrapper.
  await runCli(["--json", "doctor", "--state-dir", stateDir, "--supervisor", supervisor], env);
  assert.equal(existsSync(marker), true);
});

test("host-doctor: an unprivileged user is told it cannot open /dev/kvm (real probe as nobody)", async () => {
  // /dev/kvm is root-only (0600) here: run the real helper as uid 65534 and decide on its output.
  const facts = await gatherKvmFacts();
  assert.ok(facts.probePath);
  const run = await runTool("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", facts.probePath, "/dev/kvm"], { timeoutMs: 5000 });
  assert.equal(run.spawnErrno, undefined, "setpriv (util-linux) is needed for this test");
  const r = decideKvm({ ...facts, probeRun: { code: run.code, signal: run.signal, stdout: run.stdout, stderr: run.stderr, timedOut: run.timedOut } });
  assert.equal(r.usable, false);
  assert.equal(r.code, "no_access", r.reason);
  assert.match(r.reason, /cannot open it \(EACCES\)/);
  assert.match(r.remediation, /usermod -aG kvm/);
});

test("host-doctor: the kernel line reads the kernel area's manifest (installed, then damaged)", async () => {
  const sd = join(dir, "state-kernel");
  const kdir = kernelDir(sd, "linux-qemu", "amd64");
  mkdirSync(kdir, { recursive: true });
  const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
  const kernelBytes = Buffer.from("not really a kernel\n");
  const initrdBytes = Buffer.from("not really an initramfs\n");
  writeFileSync(join(kdir, "vmlinuz"), kernelBytes);
  writeFileSync(join(kdir, "initramfs.cpio"), initrdBytes);
  await writeManifest(kdir, {
    schemaVersion: 1,
    backend: "linux-qemu",
    arch: "amd64",
    version: "6.1.0-test",
    kernel: { file: "vmlinuz", sha256: sha(kernelBytes), sizeBytes: kernelBytes.length },
    initramfs: { file: "initramfs.cpio", sha256: sha(initrdBytes), sizeBytes: initrdBytes.length, compression: "none" },
    init: { sha256: sha(Buffer.from("init")), sizeBytes: 4, path: "/x/microagent-init" },
    modules: [],
    builtinModules: [],
    unavailableModules: [],
    source: { kind: "file", path: "/x/vmlinuz", sha256: sha(kernelBytes) },
    installedAt: new Date(0).toISOString(),
  });
  const ok = await doctor({ stateDir: sd, supervisor });
  const k = byName(ok.host.checks).get("kernel");
  assert.equal(ok.kernel.status, "installed");
  assert.equal(k?.ok, true);
  assert.equal(k?.detail, `${join(kdir, "vmlinuz")} (6.1.0-test) sha256:${sha(kernelBytes)}`);
  const text = await runCli(["doctor", "--state-dir", sd, "--supervisor", supervisor]);
  assert.match(text.out, new RegExp(`\nKernel: installed \\(${join(kdir, "vmlinuz").replace(/[/.]/g, "\\$&")}\\)\n`));
  rmSync(join(kdir, "vmlinuz"));
  const broken = await doctor({ stateDir: sd, supervisor });
  assert.equal(broken.kernel.status, "error");
  assert.equal(byName(broken.host.checks).get("kernel")?.ok, false);
  assert.match(byName(broken.host.checks).get("kernel")?.remediation ?? "", /kernel install/);
});

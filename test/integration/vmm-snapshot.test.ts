/**
 * Snapshot primitives against real QEMU (TCG, microvm): pause/resume keeps a running guest's memory; a
 * save (frozen disk layer + memory/device state file) restored twice gives two VMs running side by side
 * that still hold the source's memory (a tmpfs file, a process's environment, the kernel boot id) and its
 * disk as of the snapshot, each writing to its own overlay; the source goes on writing above the frozen
 * layer, which stays byte-identical. Also the refusals: a missing state file, a machine that does not
 * match the stream, a QEMU that is not waiting for state, a running VM.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import { buildTinyRootfs, installTestKernel } from "../helpers/tiny-rootfs.ts";
import { scratchDir } from "../helpers/scratch.ts";
import { connectChannel, launchRestoreVm, launchSnapVm, sh, snapVmSpec, withDeadline, type SnapVm } from "../helpers/snapshot-vm.ts";
import type { InstallKernelResult } from "../../src/kernel/install.ts";
import { createOverlayImage, freezeDisk, pauseVm, restoreVmState, resumeVm, saveVmState } from "../../src/vmm/qemu/snapshot.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { sha256File } from "../../src/util/hash.ts";

let kernel: InstallKernelResult;
let root: string;
let basePath: string;
const vms: SnapVm[] = [];

before(async () => {
  root = scratchDir("vmm-snapshot");
  kernel = await installTestKernel(join(root, "state"));
  basePath = (await buildTinyRootfs(root)).imagePath;
});

after(async () => {
  for (const vm of vms) await vm.dispose();
});

const codeOf = (e: unknown) => (isMicroagentError(e) ? e.code : String(e));

test("vmm snapshot: pause/resume, save with a frozen disk, two restores side by side keep memory and diverge on disk", { timeout: 600_000 }, async (t) => {
  const srcDir = join(root, "src");
  execFileSync("mkdir", ["-p", srcDir]);
  const disk0 = join(srcDir, "disk.qcow2");
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "raw", "-b", basePath, disk0, "64M"]);
  const spec = snapVmSpec({ dir: srcDir, kernelPath: kernel.kernelPath, initramfsPath: kernel.initramfsPath, diskPath: disk0 });
  const src = await launchSnapVm(srcDir, spec);
  vms.push(src);
  const ch = await connectChannel(src);
  const secret = randomBytes(12).toString("hex");
  // The workload holds the secret only in its own memory (its environment, on its stack).
  await ch.sendBootConfig({ hostname: "snap-src", argv: ["sh", "-c", `export HELD=${secret}; exec sleep 100000`] });
  const pid = ch.workloadStarted?.pid;
  assert.ok(pid && pid > 1);
  assert.equal((await sh(ch, "stat -f -c %T /run")).trim(), "tmpfs", "/run is RAM");
  await sh(ch, `echo ${secret} > /run/in-ram; echo on-disk > /root/before; sync`);
  const bootId = (await sh(ch, "cat /proc/sys/kernel/random/boot_id")).trim();

  // Pause: the guest stops answering; resume: it answers again with the same memory.
  const p = await pauseVm(src.qmp);
  assert.equal((await src.qmp.queryStatus()).status, "paused");
  await assert.rejects(ch.ping(700), (e) => codeOf(e) === "CHANNEL_TIMEOUT", "a paused guest does not answer");
  await resumeVm(src.qmp);
  await ch.ping(10_000);
  assert.equal((await sh(ch, `cat /run/in-ram; tr '\\0' '\\n' < /proc/${pid}/environ | grep ^HELD=`)), `${secret}\nHELD=${secret}\n`);
  t.diagnostic(`pause ${p.ms.toFixed(1)} ms`);

  // Refusals before any snapshot: freezing or saving a running VM.
  await assert.rejects(freezeDisk(src.qmp, { device: "disk0", newOverlayPath: join(srcDir, "x.qcow2") }), (e) => codeOf(e) === "SNAPSHOT_VM_NOT_PAUSED");
  await assert.rejects(saveVmState(src.qmp, join(srcDir, "x.state")), (e) => codeOf(e) === "SNAPSHOT_VM_NOT_PAUSED");

  // Snapshot: pause, freeze the disk, save the state, resume.
  const snapDir = join(root, "snap");
  execFileSync("mkdir", ["-p", snapDir]);
  const guestSecondsBefore = Number((await sh(ch, "date +%s")).trim());
  await pauseVm(src.qmp);
  // The frozen layer stays where it is (QEMU reopens its disks by name on `cont` after a save, so files
  // it has open must never be moved); the new overlay names it relatively, as a workspace dir would.
  const snapDisk = disk0;
  const live = join(srcDir, "disk-1.qcow2");
  const frozen = await freezeDisk(src.qmp, { device: "disk0", newOverlayPath: live, backingFile: "disk.qcow2" });
  assert.equal(frozen.frozenPath, disk0);
  assert.equal(frozen.frozenFormat, "qcow2");
  assert.equal(frozen.virtualSizeBytes, 64 * 1024 * 1024);
  const statePath = join(snapDir, "state");
  const saved = await saveVmState(src.qmp, statePath, { timeoutMs: 120_000 });
  assert.equal(saved.bytes, statSync(statePath).size);
  assert.equal(statSync(statePath).mode & 0o777, 0o600);
  assert.ok(saved.bytes > 1024 * 1024 && saved.bytes < 256 * 1024 * 1024, `state of a 256 MiB guest: ${saved.bytes} bytes`);
  assert.deepEqual(execFileSync("ls", ["-A", snapDir]).toString().split("\n").filter(Boolean), ["state"], "no temp files left");
  assert.equal(statSync(live).mode & 0o777, 0o600);
  const st = await src.qmp.queryStatus();
  assert.equal(st.status, "postmigrate");
  // Read-only from now on, also for the source's own QEMU (which reopens its backing on `cont`).
  chmodSync(snapDisk, 0o400);
  await resumeVm(src.qmp);
  t.diagnostic(`save ${saved.ms.toFixed(0)} ms, ${(saved.bytes / 1048576).toFixed(1)} MiB`);
  const frozenSha = await sha256File(snapDisk);
  // The source goes on, writing above the frozen layer.
  await sh(ch, "echo src-after > /root/after; sync");
  assert.equal(await sha256File(snapDisk), frozenSha, "the frozen layer is not written after the switch");
  // On disk the chain is now disk-1.qcow2 -> disk.qcow2 (relative) -> the base: what a later cold start opens.
  const chain = JSON.parse(execFileSync("qemu-img", ["info", "-U", "--output=json", "--backing-chain", live]).toString()) as Array<{ filename: string; "backing-filename"?: string }>;
  assert.deepEqual(chain.map((c) => resolve(c.filename)), [live, disk0, basePath]);
  assert.equal(chain[0]!["backing-filename"], "disk.qcow2");

  // Two restores of the one snapshot, side by side, each on its own overlay over the frozen layer.
  const forks: SnapVm[] = [];
  const chans = [];
  for (const name of ["fork1", "fork2"]) {
    const dir = join(root, name);
    execFileSync("mkdir", ["-p", dir]);
    const overlay = join(dir, "disk.qcow2");
    await createOverlayImage(overlay, { backingFile: snapDisk, backingFormat: "qcow2", virtualSizeBytes: frozen.virtualSizeBytes });
    const vm = await launchRestoreVm(dir, spec, overlay);
    vms.push(vm);
    forks.push(vm);
    assert.equal((await vm.qmp.queryStatus()).status, "inmigrate");
    const r = await restoreVmState(vm.qmp, statePath, { timeoutMs: 120_000, stderrTail: () => vm.qemu.stderrTail() });
    assert.equal(r.loadedStatus, "paused", "the stream carries the source's paused run state");
    assert.equal((await vm.qmp.queryStatus()).status, "running");
    t.diagnostic(`${name}: restore ${r.ms.toFixed(0)} ms`);
    // The host end is a new connection: the guest learns of it by the hello request, answers "running".
    const fc = await withDeadline(connectChannel(vm, 30_000), 40_000, `${name} channel`);
    assert.equal(fc.hello.state, "running");
    chans.push(fc);
  }
  for (const [i, fc] of chans.entries()) {
    // Memory: the tmpfs file, the workload's environment, the same kernel boot.
    assert.equal(await sh(fc, `cat /run/in-ram; tr '\\0' '\\n' < /proc/${pid}/environ | grep ^HELD=; cat /proc/sys/kernel/random/boot_id; hostname`), `${secret}\nHELD=${secret}\n${bootId}\nsnap-src\n`);
    // Disk as of the snapshot: the earlier file, not the source's later one.
    assert.equal(await sh(fc, "cat /root/before; test ! -e /root/after && echo no-after"), "on-disk\nno-after\n");
    await sh(fc, `echo fork${i + 1} > /root/mine; sync`);
    // The serial console works after the restore (the new QEMU's log).
    await sh(fc, `echo serial-after-restore-${i + 1} > /dev/console`);
  }
  assert.equal(await sh(chans[0]!, "cat /root/mine"), "fork1\n");
  assert.equal(await sh(chans[1]!, "cat /root/mine"), "fork2\n", "each fork writes its own overlay");
  assert.equal(await sh(ch, "cat /root/after; test ! -e /root/mine && echo none"), "src-after\nnone\n");
  assert.equal(await sha256File(snapDisk), frozenSha, "three VMs over the frozen (0400) layer and it is unchanged");
  for (const [i, vm] of forks.entries()) {
    const log = readFileSync(vm.serialPath, "utf8");
    assert.match(log, new RegExp(`serial-after-restore-${i + 1}`));
    // The restored QEMU starts with no host on the port: the guest sees the port close, then our connect.
    t.diagnostic(`fork${i + 1} init log: ${JSON.stringify(log.split("\n").filter((l) => /host/.test(l)))}`);
  }

  // A second snapshot of the same VM: the chain grows by one layer, the VM goes on.
  await pauseVm(src.qmp);
  const again = await freezeDisk(src.qmp, { device: "disk0", newOverlayPath: join(srcDir, "disk-2.qcow2"), backingFile: "disk-1.qcow2" });
  assert.equal(again.frozenPath, live);
  const saved2 = await saveVmState(src.qmp, join(snapDir, "state-2"), { timeoutMs: 120_000 });
  await resumeVm(src.qmp);
  assert.ok(saved2.bytes > 1024 * 1024);
  assert.equal(await sh(ch, "cat /root/after /run/in-ram"), `src-after\n${secret}\n`);

  // Observations for the guest-side design (recorded, not asserted: the guest does not act on a restore yet).
  const hostNow = Math.floor(Date.now() / 1000);
  const guestNow = Number((await sh(chans[0]!, "date +%s")).trim());
  const rand = await Promise.all(chans.map((c) => sh(c, "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'")));
  const srcRand = await sh(ch, "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'");
  t.diagnostic(`guest clock after restore: guest ${guestNow}, host ${hostNow} (behind by ${hostNow - guestNow} s; snapshot taken at guest ${guestSecondsBefore})`);
  t.diagnostic(`urandom fork1 ${rand[0]} fork2 ${rand[1]} source ${srcRand}: ${rand[0] === rand[1] ? "SAME stream" : "different"}`);
  for (const c of [ch, ...chans]) c.close();
});

test("vmm snapshot: restore refusals (missing file, not incoming, mismatched machine); another drive id is fine", { timeout: 300_000 }, async () => {
  const dir = join(root, "refuse");
  execFileSync("mkdir", ["-p", dir]);
  const disk = join(dir, "disk.qcow2");
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "raw", "-b", basePath, disk, "64M"]);
  const spec = snapVmSpec({ dir, kernelPath: kernel.kernelPath, initramfsPath: kernel.initramfsPath, diskPath: disk });
  // A running VM (not waiting for incoming state) refuses a restore.
  const vm = await launchSnapVm(dir, spec);
  vms.push(vm);
  const state = join(dir, "state");
  await pauseVm(vm.qmp);
  const saved = await saveVmState(vm.qmp, state, { timeoutMs: 60_000 });
  assert.ok(saved.bytes > 0);
  await assert.rejects(restoreVmState(vm.qmp, state), (e) => codeOf(e) === "SNAPSHOT_NOT_INCOMING");
  await assert.rejects(restoreVmState(vm.qmp, join(dir, "absent")), (e) => codeOf(e) === "SNAPSHOT_STATE_MISSING");
  await vm.dispose();
  // The stream names devices by their place on the bus, not drive ids or files: another id restores.
  const renamed = await launchRestoreVm(join(root, "refuse-id"), { ...spec, rootDisk: { ...spec.rootDisk!, id: "other" } }, disk);
  vms.push(renamed);
  assert.equal((await restoreVmState(renamed.qmp, state, { timeoutMs: 60_000, stderrTail: () => renamed.qemu.stderrTail() })).loadedStatus, "paused");
  assert.equal((await renamed.qmp.queryStatus()).status, "running");
  await renamed.dispose();
  // A machine with another memory size cannot take the stream: QEMU exits, we say why.
  const otherDir = join(root, "refuse-mem");
  const other = await launchRestoreVm(otherDir, { ...spec, memoryMib: 128 }, disk);
  vms.push(other);
  const err = await restoreVmState(other.qmp, state, { timeoutMs: 60_000, stderrTail: () => other.qemu.stderrTail() }).catch((e: unknown) => e);
  assert.equal(codeOf(err), "SNAPSHOT_RESTORE_FAILED", String(err));
  assert.match((err as Error).message, /Length mismatch|load of migration failed|error while loading state/i);
});

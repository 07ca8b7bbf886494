/**
 * Snapshots under QEMU (TCG, microvm) with a 512 MiB guest: pause/resume latency (p50 of the QMP round
 * trips), snapshot create time (pause + freeze disk + save state + resume) and state file size, and, in
 * the same run, restore-to-first-reply against cold-boot-to-first-reply. "First reply" is what `run`
 * needs: the guest's hello, its boot config acknowledged, then `true` executed. The snapshot is taken
 * right after the hello, before any boot config, as a warm `run` snapshot would be. Prints a table and a
 * JSON line; records, it does not assert.
 *
 *   node bench/snapshot.ts [--runs 3] [--pauses 20] [--memory 512] [--state-dir DIR]
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { buildTinyRootfs, installTestKernel } from "../test/helpers/tiny-rootfs.ts";
import { connectChannel, launchRestoreVm, launchSnapVm, snapVmSpec, type SnapVm } from "../test/helpers/snapshot-vm.ts";
import { createOverlayImage, freezeDisk, pauseVm, restoreVmState, resumeVm, saveVmState } from "../src/vmm/qemu/snapshot.ts";
import type { GuestChannel } from "../src/channel/guest-channel.ts";

const { values } = parseArgs({
  options: { runs: { type: "string", default: "3" }, pauses: { type: "string", default: "20" }, memory: { type: "string", default: "512" }, "state-dir": { type: "string" } },
});
const runs = Number(values.runs);
const pauses = Number(values.pauses);
const memoryMib = Number(values.memory);
const work = mkdtempSync(join(tmpdir(), "bench-snapshot-"));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function firstReply(ch: GuestChannel): Promise<void> {
  await ch.sendBootConfig({});
  const r = await ch.exec({ argv: ["true"], timeoutMs: 30_000 });
  if (r.exitCode !== 0) throw new Error(`first exec failed: ${JSON.stringify(r)}`);
}

const vms: SnapVm[] = [];
try {
  const kernel = await installTestKernel(values["state-dir"] ?? join(work, "state"));
  const base = (await buildTinyRootfs(work)).imagePath;
  const overlay = (dir: string) => {
    mkdirSync(dir, { recursive: true });
    const p = join(dir, "disk.qcow2");
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "raw", "-b", base, p, "64M"]);
    return p;
  };

  const bootVm = async (name: string) => {
    const dir = join(work, name);
    const spec = snapVmSpec({ dir, kernelPath: kernel.kernelPath, initramfsPath: kernel.initramfsPath, diskPath: overlay(dir), memoryMib });
    const vm = await launchSnapVm(dir, spec);
    vms.push(vm);
    return { vm, spec, ch: await connectChannel(vm, 120_000) };
  };

  // Cold boots to the first reply.
  const coldMs: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const { vm, ch } = await bootVm(`cold${i}`);
    await firstReply(ch);
    coldMs.push(performance.now() - t0);
    ch.close();
    await vm.dispose();
    process.stderr.write(`cold ${i}: first reply after ${coldMs.at(-1)!.toFixed(0)} ms\n`);
  }
  // The snapshot's source: booted to its hello, not configured (the warm `run` snapshot point).
  const src = await bootVm("source");

  // Snapshot create: pause, freeze the disk, save the state, resume.
  const snapDir = join(work, "snap");
  mkdirSync(snapDir);
  const t0 = performance.now();
  const paused = await pauseVm(src.vm.qmp);
  const tFreeze = performance.now();
  const frozen = await freezeDisk(src.vm.qmp, { device: "disk0", newOverlayPath: join(src.vm.dir, "disk-1.qcow2") });
  const freezeMs = performance.now() - tFreeze;
  const saved = await saveVmState(src.vm.qmp, join(snapDir, "state"), { timeoutMs: 300_000 });
  const resumed = await resumeVm(src.vm.qmp);
  const createMs = performance.now() - t0;
  process.stderr.write(`snapshot: ${createMs.toFixed(0)} ms, ${(saved.bytes / 1048576).toFixed(1)} MiB\n`);

  // Pause/resume latency on the running source.
  const pauseMs: number[] = [];
  const resumeMs: number[] = [];
  await src.ch.ping(10_000);
  for (let i = 0; i < pauses; i++) {
    pauseMs.push((await pauseVm(src.vm.qmp)).ms);
    resumeMs.push((await resumeVm(src.vm.qmp)).ms);
    await src.ch.ping(10_000);
  }
  src.ch.close();
  await src.vm.dispose();

  // Restores: a new overlay over the frozen layer, QEMU waiting for state, load, cont, hello, first reply.
  const restoreMs: number[] = [];
  const loadMs: number[] = [];
  for (let i = 0; i < runs; i++) {
    const dir = join(work, `restore${i}`);
    mkdirSync(dir);
    const disk = join(dir, "disk.qcow2");
    const t = performance.now();
    await createOverlayImage(disk, { backingFile: frozen.frozenPath, backingFormat: frozen.frozenFormat, virtualSizeBytes: frozen.virtualSizeBytes });
    const vm = await launchRestoreVm(dir, src.spec, disk);
    vms.push(vm);
    const r = await restoreVmState(vm.qmp, saved.path, { timeoutMs: 300_000, stderrTail: () => vm.qemu.stderrTail() });
    const ch = await connectChannel(vm, 60_000);
    await firstReply(ch);
    restoreMs.push(performance.now() - t);
    loadMs.push(r.ms);
    ch.close();
    await vm.dispose();
    process.stderr.write(`restore ${i}: first reply after ${restoreMs.at(-1)!.toFixed(0)} ms (state load ${r.ms.toFixed(0)} ms)\n`);
  }

  const summary = {
    memoryMib,
    runs,
    snapshotCreateMs: Math.round(createMs),
    snapshotPauseMs: Number(paused.ms.toFixed(1)),
    snapshotFreezeDiskMs: Math.round(freezeMs),
    snapshotSaveMs: Math.round(saved.ms),
    snapshotResumeMs: Number(resumed.ms.toFixed(1)),
    stateBytes: saved.bytes,
    stateMiB: Number((saved.bytes / 1048576).toFixed(1)),
    pauseP50Ms: Number(median(pauseMs).toFixed(2)),
    resumeP50Ms: Number(median(resumeMs).toFixed(2)),
    medianColdToFirstReplyMs: Math.round(median(coldMs)),
    medianRestoreToFirstReplyMs: Math.round(median(restoreMs)),
    medianStateLoadMs: Math.round(median(loadMs)),
    restoreOverColdRatio: Number((median(restoreMs) / median(coldMs)).toFixed(2)),
  };
  console.log("phase | ms");
  console.log(`cold boot -> first reply (median of ${coldMs.length}) | ${summary.medianColdToFirstReplyMs}`);
  console.log(`restore -> first reply (median of ${restoreMs.length}) | ${summary.medianRestoreToFirstReplyMs} (state load ${summary.medianStateLoadMs})`);
  console.log(`snapshot create (pause + freeze + save + resume) | ${summary.snapshotCreateMs} (${summary.stateMiB} MiB state)`);
  console.log(`pause p50 / resume p50 (${pauses} each) | ${summary.pauseP50Ms} / ${summary.resumeP50Ms}`);
  console.log(JSON.stringify(summary));
} finally {
  for (const vm of vms) await vm.dispose().catch(() => {});
  rmSync(work, { recursive: true, force: true });
}

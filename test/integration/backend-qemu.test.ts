/**
 * The linux-qemu backend's capabilities against real tools: its disk capability makes a qcow2 overlay
 * over a raw base (qemu-img says so), its lifecycle boots that disk under TCG with a NIC attached to a
 * stream socket this test listens on, and its pause capability really stops the vCPUs (an exec sent
 * while paused is answered only after resume).
 */
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import { createServer, type Socket } from "node:net";
import { join } from "node:path";
import { buildTinyRootfs, installTestKernel } from "../helpers/tiny-rootfs.ts";
import { scratchDir } from "../helpers/scratch.ts";
import type { InstallKernelResult } from "../../src/kernel/install.ts";
import { linuxQemuBackend, macFor } from "../../src/backend/linux-qemu.ts";
import { qemuImgInfo } from "../../src/backend/qemu-img.ts";
import type { RunningVm, VmLaunchSpec } from "../../src/backend/types.ts";
import { GuestChannel } from "../../src/channel/guest-channel.ts";

let kernel: InstallKernelResult;
let root: string;

before(async () => {
  root = scratchDir("backend-qemu");
  kernel = await installTestKernel(join(root, "state"));
});

function deadline<T>(p: PromiseLike<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(`${what} took over ${ms} ms`)), ms)))]).finally(() => clearTimeout(t));
}

/**
 * The VM's run state as QEMU reports it (query-status), over the VM's own QMP connection: QEMU's
 * monitor serves one client at a time, and the backend keeps that one open for events.
 */
async function qmpStatus(vm: RunningVm) {
  assert.ok(vm.runState, "linux-qemu VMs report their run state");
  const { status, running } = await vm.runState();
  return { status, running };
}

test("backend linux-qemu: disk capability makes a qcow2 overlay over the raw base", { timeout: 120_000 }, async () => {
  const dir = join(root, "disk");
  await mkdir(dir, { recursive: true });
  const base = await buildTinyRootfs(dir);
  const disk = linuxQemuBackend.disk;
  assert.ok(disk);
  assert.deepEqual(disk.formats, ["qcow2", "raw"]);
  const made = await disk.createDisk({ base: base.imagePath, baseFormat: "raw", path: join(dir, "disk.qcow2"), sizeMib: 96 });
  assert.deepEqual(made, { path: join(dir, "disk.qcow2"), format: "qcow2" });
  const info = await qemuImgInfo(made.path);
  assert.equal(info.format, "qcow2");
  assert.equal(info["backing-filename"], base.imagePath);
  assert.equal(info["backing-filename-format"], "raw");
  assert.equal(info["virtual-size"], 96 * 1024 * 1024);
  await assert.rejects(disk.createDisk({ base: join(dir, "missing.ext4"), baseFormat: "raw", path: join(dir, "d2.qcow2"), sizeMib: 96 }), (e: Error & { code?: string }) => {
    assert.equal(e.code, "DISK_CREATE_FAILED", e.message);
    assert.match(e.message, /missing\.ext4/);
    return true;
  });
});

test("backend linux-qemu: boots its own disk with a NIC on a stream socket; pause stops the vCPUs, resume restarts them", { timeout: 300_000 }, async () => {
  const dir = join(root, "vm");
  await mkdir(dir, { recursive: true });
  const base = await buildTinyRootfs(dir);
  const disk = await linuxQemuBackend.disk!.createDisk({ base: base.imagePath, baseFormat: "raw", path: join(dir, "disk.qcow2"), sizeMib: 64 });

  // The supervisor's side of `-netdev stream`: listen first, QEMU connects at launch.
  const netSocket = join(dir, "net.sock");
  let peer: Socket | undefined;
  const connected = new Promise<Socket>((resolve) => {
    const server = createServer((s) => {
      peer = s;
      s.on("error", () => {});
      resolve(s);
    });
    server.listen(netSocket);
    server.unref();
  });

  const spec: VmLaunchSpec = {
    workspace: "backend-qemu-test",
    kernelPath: kernel.kernelPath,
    initramfsPath: kernel.initramfsPath,
    disk,
    memoryMib: 256,
    cpus: 1,
    accel: "tcg",
    serialLogPath: join(dir, "serial.log"),
    channelSocketPath: join(dir, "ch.sock"),
    controlSocketPath: join(dir, "qmp.sock"),
    network: { kind: "stream", socketPath: netSocket },
  };
  let vm: RunningVm | undefined;
  try {
    vm = await linuxQemuBackend.lifecycle.launch(spec);
    await deadline(connected, 15_000, "QEMU connecting to the network socket");
    const stream = await linuxQemuBackend.channel!.openChannel(vm, spec);
    const ch = await GuestChannel.connect(stream, { helloTimeoutMs: 90_000 });
    await ch.sendBootConfig({ argv: [], hostname: "net-test" });

    // The guest has the NIC with the MAC derived from the workspace name, on the disk we made.
    const r = await deadline(ch.exec({ argv: ["sh", "-c", "cat /sys/class/net/eth0/address; grep -c ' / ext4 ' /proc/mounts"] }), 30_000, "exec");
    assert.equal(r.exitCode, 0, r.stderr.toString());
    assert.equal(r.stdout.toString(), `${macFor(spec.workspace)}\n1\n`);

    const pause = linuxQemuBackend.pause;
    assert.ok(pause);
    await pause.pause(vm, spec);
    assert.deepEqual(await qmpStatus(vm), { status: "paused", running: false });
    const pending = Promise.resolve(ch.exec({ argv: ["true"] }));
    const early = await Promise.race([pending.then(() => "answered"), new Promise((r) => setTimeout(() => r("silent"), 2000))]);
    assert.equal(early, "silent", "a paused guest answered an exec");
    await pause.resume(vm, spec);
    assert.deepEqual(await qmpStatus(vm), { status: "running", running: true });
    const after = await deadline(pending, 30_000, "exec after resume");
    assert.equal(after.exitCode, 0);
    ch.close();
  } finally {
    peer?.destroy();
    if (vm) {
      const exit = await vm.kill();
      assert.equal(exit.signal, "SIGKILL");
    }
  }
});

import { test } from "node:test";
import assert from "node:assert/strict";
import { qemuSpecFor, linuxQemuBackend } from "../../src/backend/linux-qemu.ts";
import { getBackend, capabilitiesOf } from "../../src/backend/index.ts";
import { buildQemuArgs } from "../../src/vmm/qemu/args.ts";
import type { VmLaunchSpec } from "../../src/backend/types.ts";

const spec: VmLaunchSpec = {
  workspace: "w",
  kernelPath: "/k/vmlinuz",
  initramfsPath: "/k/initramfs.cpio",
  disk: { path: "/ws/disk.qcow2", format: "qcow2" },
  memoryMib: 256,
  cpus: 1,
  accel: "tcg",
  serialLogPath: "/ws/serial.log",
  channelSocketPath: "/run/x/channel.sock",
  controlSocketPath: "/run/x/qmp.sock",
};

test("backend: the linux-qemu command line is a pure function of the launch spec", () => {
  const argv = buildQemuArgs(qemuSpecFor(spec, 2_400_000));
  const joined = argv.join(" ");
  assert.match(joined, /-M microvm,acpi=on/);
  assert.match(joined, /-accel tcg,tb-size=64 /, "the TCG translation cache is capped per VM");
  assert.match(joined, /-m 256M -smp 1/);
  assert.match(joined, /file=\/ws\/disk\.qcow2,format=qcow2/);
  assert.match(joined, /virtserialport,bus=vser0\.0,chardev=channel0,name=microagent/);
  assert.match(joined, /socket,id=channel0,path=\/run\/x\/channel\.sock,server=on,wait=off/);
  assert.match(joined, /file,id=serial0,path=\/ws\/serial\.log/);
  assert.match(joined, /-mon chardev=qmp0,mode=control/);
  assert.match(joined, /tsc_early_khz=2400000/);
  // Isolated: no NIC of any kind.
  assert.doesNotMatch(joined, /-netdev|virtio-net/);
  assert.deepEqual(buildQemuArgs(qemuSpecFor(spec, 2_400_000)), argv, "same input, same argv");
});

test("backend: KVM gets no TSC override; capabilities say what is unsupported", () => {
  const argv = buildQemuArgs(qemuSpecFor({ ...spec, accel: "kvm" }, undefined)).join(" ");
  assert.match(argv, /-accel kvm -cpu host/);
  assert.doesNotMatch(argv, /tsc_early_khz/);
  const caps = capabilitiesOf(linuxQemuBackend);
  assert.equal(caps.pause, true, "QMP stop/cont");
  assert.equal(caps.snapshot, false);
  assert.equal(caps.exec, true);
  assert.equal(getBackend(undefined), linuxQemuBackend);
  assert.throws(() => getBackend("linux-kvm"), (e: Error & { code?: string }) => e.code === "BACKEND_UNSUPPORTED");
});

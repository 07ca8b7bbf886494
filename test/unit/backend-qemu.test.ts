import { test } from "node:test";
import assert from "node:assert/strict";
import { qemuSpecFor, linuxQemuBackend, macFor } from "../../src/backend/linux-qemu.ts";
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
  // The console is QEMU's stdout (the supervisor writes serial.log, capped), never a file chardev.
  assert.match(joined, /-serial stdio/);
  assert.doesNotMatch(joined, /file,id=serial0|serial\.log/);
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
  assert.equal(caps.snapshot, true, "migration to a file + a frozen disk layer");
  assert.equal(caps.exec, true);
  assert.equal(getBackend(undefined), linuxQemuBackend);
  assert.throws(() => getBackend("linux-kvm"), (e: Error & { code?: string }) => e.code === "BACKEND_UNSUPPORTED");
});

test("backend: a network attachment becomes -netdev stream to the socket + a virtio-net NIC with a stable MAC", () => {
  const argv = buildQemuArgs(qemuSpecFor({ ...spec, network: { kind: "stream", socketPath: "/run/x/net.sock" } }, 2_400_000));
  const at = (flag: string) => argv.flatMap((a, i) => (a === flag ? [argv[i + 1]] : []));
  assert.deepEqual(at("-netdev"), ["stream,id=net0,server=off,addr.type=unix,addr.path=/run/x/net.sock"]);
  const mac = macFor("w");
  assert.match(mac, /^52:54:00(:[0-9a-f]{2}){3}$/);
  assert.equal(macFor("w"), mac, "same workspace, same MAC");
  assert.notEqual(macFor("other"), mac);
  assert.deepEqual(at("-device").filter((d) => d?.startsWith("virtio-net")), [`virtio-net-device,netdev=net0,mac=${mac}`]);
  // An explicit MAC wins; without network the argv is exactly the isolated one.
  const explicit = buildQemuArgs(qemuSpecFor({ ...spec, network: { kind: "stream", socketPath: "/run/x/net.sock", mac: "02:00:00:00:00:01" } }, 2_400_000));
  assert.ok(explicit.includes("virtio-net-device,netdev=net0,mac=02:00:00:00:00:01"));
  const isolated = buildQemuArgs(qemuSpecFor(spec, 2_400_000));
  const i = argv.indexOf("-netdev");
  assert.deepEqual([...argv.slice(0, i), ...argv.slice(i + 4)], isolated, "the NIC only adds its four arguments");
});

import { test } from "node:test";
import assert from "node:assert/strict";
import { buildQemuArgs, kernelCmdline, type QemuSpec } from "../../src/vmm/qemu/args.ts";
import { tscKhz, findQemu } from "../../src/vmm/qemu/host.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";

const base: QemuSpec = {
  accel: "tcg",
  memoryMib: 512,
  cpus: 2,
  kernelPath: "/k/vmlinuz",
  initramfsPath: "/k/initramfs.cpio",
  tscKhz: 2596120,
  serial: { kind: "file", path: "/ws/serial.log" },
};

/** The value following `flag` each time it appears. */
function values(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1] as string] : []));
}

test("vmm args: full spec gives the expected command line", () => {
  const args = buildQemuArgs({
    ...base,
    rootDisk: { path: "/ws/disk.qcow2", format: "qcow2" },
    extraDisks: [{ path: "/data/extra.img", format: "raw", readOnly: true, cache: "unsafe" }],
    channel: { socketPath: "/run/m/ch.sock" },
    qmpSocketPath: "/run/m/qmp.sock",
    kernelArgs: ["microagent.boot=1"],
    rng: false,
  });
  assert.deepEqual(args, [
    "-M", "microvm,acpi=on,isa-serial=on,auto-kernel-cmdline=off",
    "-accel", "tcg",
    "-cpu", "max",
    "-m", "512M",
    "-smp", "2",
    "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
    "-kernel", "/k/vmlinuz",
    "-initrd", "/k/initramfs.cpio",
    "-append", "console=ttyS0 loglevel=4 panic=-1 reboot=t i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on edd=off tsc_early_khz=2596120 microagent.boot=1",
    "-drive", "id=disk0,file=/ws/disk.qcow2,format=qcow2,if=none,cache=writeback,discard=unmap",
    "-device", "virtio-blk-device,drive=disk0",
    "-drive", "id=disk1,file=/data/extra.img,format=raw,if=none,cache=unsafe,discard=unmap,read-only=on",
    "-device", "virtio-blk-device,drive=disk1",
    "-chardev", "socket,id=channel0,path=/run/m/ch.sock,server=on,wait=off",
    "-device", "virtio-serial-device,id=vser0,max_ports=2",
    "-device", "virtserialport,bus=vser0.0,chardev=channel0,name=microagent",
    "-chardev", "file,id=serial0,path=/ws/serial.log",
    "-serial", "chardev:serial0",
    "-chardev", "socket,id=qmp0,path=/run/m/qmp.sock,server=on,wait=off",
    "-mon", "chardev=qmp0,mode=control",
  ]);
});

test("vmm args: isolated by default, rng on by default, no NIC unless asked", () => {
  const args = buildQemuArgs(base);
  assert.ok(!args.some((a) => a.includes("virtio-net")));
  assert.ok(!args.includes("-netdev"));
  assert.ok(values(args, "-device").includes("virtio-rng-device,rng=rng0"));
  const withNet = buildQemuArgs({ ...base, network: { kind: "stream", socketPath: "/run/m/net.sock", mac: "52:54:00:12:34:56" } });
  assert.deepEqual(values(withNet, "-netdev"), ["stream,id=net0,server=off,addr.type=unix,addr.path=/run/m/net.sock"]);
  assert.ok(values(withNet, "-device").includes("virtio-net-device,netdev=net0,mac=52:54:00:12:34:56"));
});

test("vmm args: KVM uses -cpu host and no tsc_early_khz; TCG without a TSC value omits it", () => {
  const kvm = buildQemuArgs({ ...base, accel: "kvm" });
  assert.deepEqual(values(kvm, "-cpu"), ["host"]);
  assert.deepEqual(values(kvm, "-accel"), ["kvm"]);
  assert.ok(!values(kvm, "-append")[0]?.includes("tsc_early_khz"));
  assert.ok(!kernelCmdline({ accel: "tcg" }).includes("tsc_early_khz"));
  assert.deepEqual(values(buildQemuArgs({ ...base, cpu: "qemu64" }), "-cpu"), ["qemu64"]);
  // The TCG translation cache cap applies to TCG only.
  assert.deepEqual(values(buildQemuArgs({ ...base, tcgCacheMib: 64 }), "-accel"), ["tcg,tb-size=64"]);
  assert.deepEqual(values(buildQemuArgs({ ...base, accel: "kvm", tcgCacheMib: 64 }), "-accel"), ["kvm"]);
});

test("vmm args: commas in paths are doubled; serial variants", () => {
  const args = buildQemuArgs({ ...base, rootDisk: { path: "/a,b/disk.raw", format: "raw" }, serial: { kind: "socket", path: "/r/s,1.sock" } });
  assert.ok(values(args, "-drive")[0]?.includes("file=/a,,b/disk.raw,"));
  assert.ok(values(args, "-chardev").includes("socket,id=serial0,path=/r/s,,1.sock,server=on,wait=off"));
  assert.deepEqual(values(buildQemuArgs({ ...base, serial: { kind: "stdio" } }), "-serial"), ["stdio"]);
  assert.deepEqual(values(buildQemuArgs({ ...base, serial: { kind: "none" } }), "-serial"), ["none"]);
});

test("vmm args: invalid specs fail with stable codes", () => {
  const code = (spec: QemuSpec) => {
    try {
      buildQemuArgs(spec);
    } catch (e) {
      assert.ok(isMicroagentError(e));
      return e.code;
    }
    return "none";
  };
  const long = `/tmp/${"x".repeat(110)}.sock`;
  assert.equal(code({ ...base, qmpSocketPath: long }), "SOCKET_PATH_TOO_LONG");
  assert.equal(code({ ...base, channel: { socketPath: long } }), "SOCKET_PATH_TOO_LONG");
  assert.equal(code({ ...base, qmpSocketPath: `/${"y".repeat(106)}` }), "none", "107 bytes is the longest bindable path");
  assert.equal(code({ ...base, memoryMib: 10 }), "INVALID_VM_SPEC");
  assert.equal(code({ ...base, cpus: 0 }), "INVALID_VM_SPEC");
  assert.equal(code({ ...base, kernelArgs: ["two words"] }), "INVALID_VM_SPEC");
  assert.equal(code({ ...base, rootDisk: { path: "/a", format: "raw", id: "x" }, extraDisks: [{ path: "/b", format: "raw", id: "x" }] }), "INVALID_VM_SPEC");
  assert.equal(code({ ...base, network: { kind: "stream", socketPath: "/n.sock", mac: "zz" } }), "INVALID_VM_SPEC");
});

test("vmm host: tscKhz parses /proc/cpuinfo; findQemu explains what is missing", () => {
  assert.equal(tscKhz("processor\t: 0\ncpu MHz\t\t: 2596.120\n"), 2596120);
  assert.equal(tscKhz("processor\t: 0\n"), undefined);
  const real = tscKhz();
  assert.ok(real === undefined || real > 100_000);
  assert.throws(
    () => findQemu({ env: { PATH: "/nonexistent" } }),
    (e: unknown) => isMicroagentError(e) && e.code === "QEMU_NOT_FOUND" && /apt install qemu-system-x86/.test(e.remediation),
  );
  assert.throws(() => findQemu({ env: { PATH: "", MICROAGENT_QEMU: "/nope/qemu" } }), /MICROAGENT_QEMU/);
});

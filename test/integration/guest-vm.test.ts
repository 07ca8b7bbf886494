/**
 * microagent-init as PID 1 in a real VM: the installed Debian cloud kernel + our initramfs, a tiny
 * busybox ext4 root disk, QEMU microvm under TCG, the channel over virtio-serial. One VM serves many
 * assertions (boot config, exec in all its outcomes, console, reaping) and ends with a graceful
 * shutdown that must make QEMU exit by itself. A second, shell-less image proves exec runs argv directly.
 */
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { buildTinyRootfs, bootTestVm, initramfsWithPowerButton, installTestKernel } from "../helpers/tiny-rootfs.ts";
import { QmpClient } from "../../src/vmm/qemu/qmp.ts";
import type { TestVm } from "../helpers/tiny-rootfs.ts";
import { scratchDir } from "../helpers/scratch.ts";
import type { InstallKernelResult } from "../../src/kernel/install.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { GuestChannel } from "../../src/channel/guest-channel.ts";
import { UnixSocketTransport } from "../../src/channel/transport.ts";

let kernel: InstallKernelResult;
let root: string;

before(async () => {
  root = scratchDir("guest-vm");
  kernel = await installTestKernel(join(root, "state"));
});

async function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(`${what} took over ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(t);
  }
}

test("guest vm: boot, boot config, exec outcomes, console, reaping, graceful power off", { timeout: 300_000 }, async () => {
  const dir = join(root, "vm1");
  const { mkdir } = await import("node:fs/promises");
  await mkdir(dir, { recursive: true });
  const rootfs = await buildTinyRootfs(dir, { files: { "/etc/motd": "from the image\n" } });
  let vm: TestVm | undefined;
  try {
    vm = await bootTestVm({ dir, kernel, rootfsPath: rootfs.imagePath });
    let ch = vm.channel;
    assert.equal(ch.hello.pid1, true);
    assert.equal(ch.hello.protocol, 1);
    assert.equal(ch.hello.state, "awaiting-config");

    let workloadOut = "";
    ch.onWorkloadOutput((c) => (workloadOut += c.data.toString()));
    const boot = await ch.sendBootConfig({
      hostname: "guest-vm-test",
      env: ["FROM_CONFIG=yes"],
      files: [{ path: "/etc/microagent/greeting", mode: 0o600, uid: 1000, gid: 1000, contentBase64: Buffer.from("hello file\n").toString("base64") }],
      setup: ["echo setup-ran > /tmp/setup-marker"],
      argv: ["sh", "-c", "echo workload-up; exec sleep 1000"],
      streamOutput: true,
    });
    assert.ok(boot.workload && boot.workload.pid > 1);

    // Structured exec: exit codes, env, hostname, files, setup, mounts, lo.
    const r = await ch.exec({
      argv: [
        "sh",
        "-c",
        "hostname; echo $FROM_CONFIG; cat /etc/motd /etc/microagent/greeting /tmp/setup-marker; stat -c '%a %u %g' /etc/microagent/greeting; " +
          "grep -c -E ' /(dev/pts|dev/shm|run|tmp) ' /proc/mounts; ip link show lo | grep -c UP; exit 5",
      ],
    });
    assert.equal(r.status, "exited");
    assert.equal(r.exitCode, 5);
    assert.equal(r.stdout.toString(), "guest-vm-test\nyes\nfrom the image\nhello file\nsetup-ran\n600 1000 1000\n4\n1\n");

    // Streamed output arrives as chunks in order.
    const h = ch.exec({ argv: ["sh", "-c", "for i in 1 2 3 4 5; do echo line-$i; done; echo err-line >&2"] });
    const seen: string[] = [];
    for await (const c of h) seen.push(`${c.stream}:${c.data.toString()}`);
    assert.match(seen.join(""), /stdout:line-1\n(stdout:)?line-2\n/);
    assert.ok(seen.join("").includes("stderr:err-line\n"));
    assert.equal((await h).exitCode, 0);

    // A signal, a timeout, a missing binary, another user.
    const sig = await ch.exec({ argv: ["sh", "-c", "kill -KILL $$"] });
    assert.equal(sig.status, "signaled");
    assert.equal(sig.signal, "SIGKILL");
    const to = await ch.exec({ argv: ["sleep", "60"], timeoutMs: 500 });
    assert.equal(to.status, "timed_out");
    const missing = await ch.exec({ argv: ["/usr/bin/not-here"] });
    assert.equal(missing.status, "failed_to_start");
    assert.equal(missing.error?.code, "ENOENT");
    const who = await ch.exec({ argv: ["sh", "-c", "id -un; id -G; echo $HOME; pwd"], user: "tester" });
    assert.equal(who.stdout.toString(), "tester\n1000 2000\n/home/tester\n/home/tester\n");

    // Orphans are reaped by PID 1: no zombies left behind.
    await ch.exec({ argv: ["sh", "-c", "(sleep 0.2 &) ; exit 0"] });
    await new Promise((res) => setTimeout(res, 1500));
    const z = await ch.exec({ argv: ["sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null | awk '$3 == \"Z\"' | wc -l"] });
    assert.equal(z.stdout.toString().trim(), "0");

    // The host goes away and comes back (a restarted supervisor): the guest says hello again, knows it
    // is configured, killed the old host's exec sessions and kept the workload.
    const abandoned = ch.exec({ argv: ["sleep", "777"] });
    Promise.resolve(abandoned).catch(() => {});
    await new Promise((res) => setTimeout(res, 300));
    assert.match(workloadOut, /workload-up/);
    ch.close();
    ch = await GuestChannel.connect(await new UnixSocketTransport(join(dir, "ch.sock")).connect(), { helloTimeoutMs: 30_000 });
    assert.equal(ch.hello.state, "running");
    assert.equal((await ch.sendBootConfig({})).alreadyConfigured, true);
    const ps = await ch.exec({ argv: ["ps", "-o", "args"] });
    assert.match(ps.stdout.toString(), /sleep 1000/);
    assert.doesNotMatch(ps.stdout.toString(), /sleep 777/);

    // The console: a PTY running the shell, echo and resize.
    const con = ch.openConsole({ cols: 90, rows: 20 });
    let out = "";
    con.onData((d) => (out += d.toString()));
    const waitFor = async (re: RegExp) => {
      const deadline = Date.now() + 30_000;
      while (!re.test(out)) {
        if (Date.now() > deadline) throw new Error(`console never showed ${re}: ${JSON.stringify(out.slice(-500))}`);
        await new Promise((res) => setTimeout(res, 25));
      }
    };
    await con.write("stty size; tty; echo CON-$((6*7))\n");
    await waitFor(/CON-42/);
    assert.match(out, /20 90/);
    assert.match(out, /\/dev\/pts\/\d+/);
    con.resize(132, 50);
    await new Promise((res) => setTimeout(res, 200));
    await con.write("stty size\n");
    await waitFor(/50 132/);
    await con.write("exit\n");
    assert.equal((await withDeadline(con.exited, 30_000, "console exit")).exitCode, 0);

    assert.match(await vm.serialTail(), /workload-up/, "the workload's output is in the serial log");

    // Graceful shutdown: stop signal to the workload, result, power off, QEMU exits on its own.
    const resultP = ch.result();
    const t0 = Date.now();
    await ch.shutdown({ timeoutMs: 10_000 });
    const result = await resultP;
    assert.equal(result.signal, "SIGTERM");
    const exit = await withDeadline(vm.qemu.exited, 30_000, "QEMU exit after power off");
    assert.equal(exit.code, 0, `QEMU exit ${JSON.stringify(exit)}`);
    assert.ok(Date.now() - t0 < 30_000);
    const serial = await vm.serialTail();
    assert.match(serial, /microagent-init: \[\d+\.\d{3}\] powering off/);
    assert.match(serial, /reboot: Power down/);
    // Remounted read-only before power off: the journal needs no recovery at the next boot.
    const { stdout: features } = await promisify(execFile)("dumpe2fs", ["-h", rootfs.imagePath]);
    assert.match(features, /Filesystem state:\s+clean/);
    assert.doesNotMatch(features, /needs_recovery/);
  } catch (e) {
    if (vm) process.stderr.write(`--- serial tail ---\n${await vm.serialTail()}\n`);
    throw e;
  } finally {
    await vm?.dispose();
  }
});

test("guest vm: an image without a shell runs exec argv directly; setup failure is reported", { timeout: 300_000 }, async () => {
  const dir = join(root, "vm2");
  const { mkdir } = await import("node:fs/promises");
  await mkdir(dir, { recursive: true });
  const rootfs = await buildTinyRootfs(dir, { shell: false });
  let vm: TestVm | undefined;
  try {
    vm = await bootTestVm({ dir, kernel, rootfsPath: rootfs.imagePath });
    const ch = vm.channel;
    // No /bin/sh: the setup step cannot start, which stops the boot with a clear error.
    await assert.rejects(ch.sendBootConfig({ setup: ["true"], argv: ["/bin/busybox", "sleep", "1000"] }), (e: unknown) => {
      assert.ok(isMicroagentError(e) && e.code === "CHANNEL_BOOT_FAILED");
      assert.match(e.message, /setup step 1 \(true\) could not start: exec \/bin\/sh: No such file or directory/);
      return true;
    });
    assert.match(await vm.serialTail(), /boot failed: setup step 1/);
    const r = await ch.exec({ argv: ["/bin/busybox", "echo", "no shell needed"] });
    assert.equal(r.stdout.toString(), "no shell needed\n");
    const viaPath = await ch.exec({ argv: ["busybox", "true"], env: { PATH: "/bin" } });
    assert.equal(viaPath.exitCode, 0);
    const sh = await ch.exec({ argv: ["sh", "-c", "true"] });
    assert.equal(sh.status, "failed_to_start");
    await ch.shutdown({ timeoutMs: 2000 });
    const exit = await withDeadline(vm.qemu.exited, 30_000, "QEMU exit after power off");
    assert.equal(exit.code, 0);
  } catch (e) {
    if (vm) process.stderr.write(`--- serial tail ---\n${await vm.serialTail()}\n`);
    throw e;
  } finally {
    await vm?.dispose();
  }
});

test("guest vm: QMP system_powerdown (the ACPI power button) shuts the guest down gracefully", { timeout: 300_000 }, async () => {
  const dir = join(root, "vm3");
  const { mkdir } = await import("node:fs/promises");
  await mkdir(dir, { recursive: true });
  const rootfs = await buildTinyRootfs(dir);
  const initramfsPath = await initramfsWithPowerButton(kernel, dir);
  let vm: TestVm | undefined;
  let qmp: QmpClient | undefined;
  try {
    vm = await bootTestVm({ dir, kernel, initramfsPath, rootfsPath: rootfs.imagePath, qmp: true });
    let out = "";
    vm.channel.onWorkloadOutput((c) => (out += c.data.toString()));
    await vm.channel.sendBootConfig({
      argv: ["sh", "-c", "trap 'echo stopping-on-hup; exit 0' HUP; echo trap-set; while true; do sleep 0.1; done"],
      stopSignal: "SIGHUP",
      streamOutput: true,
    });
    for (let i = 0; i < 300 && !out.includes("trap-set"); i++) await new Promise((res) => setTimeout(res, 50));
    assert.match(out, /trap-set/);
    assert.match(await vm.serialTail(), /watching \/dev\/input\/event\d+ for the ACPI power button/);
    const resultP = vm.channel.result();
    qmp = await QmpClient.connect(join(dir, "qmp.sock"));
    await qmp.systemPowerdown();
    const result = await withDeadline(resultP, 30_000, "workload result");
    assert.equal(result.exitCode, 0, JSON.stringify(result));
    const exit = await withDeadline(vm.qemu.exited, 30_000, "QEMU exit after the power button");
    assert.equal(exit.code, 0);
    const serial = await vm.serialTail();
    assert.match(serial, /power button pressed/);
    assert.match(serial, /stopping-on-hup/);
    assert.match(serial, /reboot: Power down/);
  } catch (e) {
    if (vm) process.stderr.write(`--- serial tail ---\n${await vm.serialTail()}\n`);
    throw e;
  } finally {
    qmp?.close();
    await vm?.dispose();
  }
});

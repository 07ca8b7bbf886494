/**
 * Test fixture: a tiny ext4 root filesystem built from busybox-static with `mke2fs -d`, for booting
 * real VMs without pulling an image.
 *
 *   const rootfs = await buildTinyRootfs(dir, { files: { "/etc/motd": "hi\n" } });
 *   // rootfs.imagePath is a raw ext4 image: QEMU's root disk (/dev/vda in the guest)
 *
 * Contents: /bin/busybox and one symlink per applet under /bin, /etc/passwd (root, and `tester`
 * uid 1000 gid 1000), /etc/group, empty /dev /proc /sys /tmp /run, plus the files you pass.
 * With `shell: false` there is no /bin/sh (and no applet symlinks): an image without a shell.
 */
import { execFile } from "node:child_process";
import { chmod, copyFile, mkdir, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export const BUSYBOX_PATH = "/bin/busybox";

export interface TinyRootfsOptions {
  /** Extra files: absolute guest path -> content. */
  files?: Record<string, string>;
  /** Include /bin/sh and the applet symlinks. Default true. */
  shell?: boolean;
  /** Image size in MiB. Default 32. */
  sizeMib?: number;
}

export interface TinyRootfs {
  imagePath: string;
  treePath: string;
}

export async function buildTinyRootfs(dir: string, opts: TinyRootfsOptions = {}): Promise<TinyRootfs> {
  const tree = join(dir, "rootfs-tree");
  const image = join(dir, "rootfs.ext4");
  await rm(tree, { recursive: true, force: true });
  for (const d of ["bin", "etc", "dev", "proc", "sys", "tmp", "run", "root", "home/tester", "usr/bin", "sbin"]) {
    await mkdir(join(tree, d), { recursive: true });
  }
  await chmod(join(tree, "tmp"), 0o1777);
  await copyFile(BUSYBOX_PATH, join(tree, "bin/busybox"));
  await chmod(join(tree, "bin/busybox"), 0o755);
  if (opts.shell ?? true) {
    const { stdout } = await run(BUSYBOX_PATH, ["--list"]);
    for (const applet of stdout.split("\n").filter((a) => /^[a-z0-9_.[-]+$/.test(a) && a !== "busybox")) {
      await symlink("busybox", join(tree, "bin", applet)).catch(() => {});
    }
  }
  await writeFile(join(tree, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\ntester:x:1000:1000:tester:/home/tester:/bin/sh\n");
  await writeFile(join(tree, "etc/group"), "root:x:0:\ntester:x:1000:\nextra:x:2000:tester\n");
  await writeFile(join(tree, "etc/hostname"), "tiny\n");
  for (const [path, content] of Object.entries(opts.files ?? {})) {
    const target = join(tree, path);
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, content);
  }
  await run("chown", ["-R", "1000:1000", join(tree, "home/tester")]).catch(() => {});
  await rm(image, { force: true });
  await run("mke2fs", ["-q", "-F", "-t", "ext4", "-L", "tinyroot", "-d", tree, image, `${opts.sizeMib ?? 32}M`]);
  return { imagePath: image, treePath: tree };
}

/* ---- booting it: one VM under QEMU (TCG) with the guest channel connected ---- */

import { tmpdir } from "node:os";
import { GuestChannel } from "../../src/channel/guest-channel.ts";
import type { GuestChannelOptions } from "../../src/channel/guest-channel.ts";
import { UnixSocketTransport } from "../../src/channel/transport.ts";
import { installKernel } from "../../src/kernel/install.ts";
import type { InstallKernelResult } from "../../src/kernel/install.ts";
import { launchQemu } from "../../src/vmm/qemu/launch.ts";
import type { QemuHandle } from "../../src/vmm/qemu/launch.ts";
import { tailFile } from "../../src/vmm/qemu/serial.ts";
import { tscKhz } from "../../src/vmm/qemu/host.ts";
import { writeCpio } from "../../src/kernel/cpio.ts";

/** Installs the default kernel into `stateDir`, reusing downloaded .debs across runs. */
export async function installTestKernel(stateDir: string): Promise<InstallKernelResult> {
  const cacheDir = process.env.MICROAGENT_KERNEL_CACHE ?? join(tmpdir(), "microagent-test-kernel-cache");
  return installKernel({ stateDir, cacheDir });
}

/**
 * A copy of the installed initramfs with the ACPI power-button drivers (`button`, `evdev`) appended
 * as a second cpio archive (the kernel unpacks concatenated archives; the later load-order wins).
 * Taken from the same cached kernel .deb. For testing QMP system_powerdown.
 */
export async function initramfsWithPowerButton(kernel: InstallKernelResult, dir: string): Promise<string> {
  const cacheDir = process.env.MICROAGENT_KERNEL_CACHE ?? join(tmpdir(), "microagent-test-kernel-cache");
  const source = kernel.manifest.source as { package?: string };
  const debName = (await readdir(cacheDir)).find((f) => source.package !== undefined && f.startsWith(`${source.package}_`) && f.endsWith(".deb"));
  if (!debName) throw new Error(`no cached .deb for ${source.package} in ${cacheDir}`);
  const extract = join(dir, "deb");
  await mkdir(extract, { recursive: true });
  const version = kernel.manifest.version;
  const wanted = ["kernel/drivers/acpi/button.ko", "kernel/drivers/input/evdev.ko"];
  await run("sh", ["-c", `dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" ${wanted.map((w) => `./lib/modules/${version}/${w}`).join(" ")}`, "sh", join(cacheDir, debName), extract]);
  const loadOrder = [...kernel.manifest.modules.map((m) => m.path), ...wanted];
  const extra = writeCpio([
    ...(await Promise.all(wanted.map(async (w) => ({ path: `lib/modules/${w}`, type: "file" as const, data: await readFile(join(extract, "lib/modules", version, w)) })))),
    { path: "lib/modules/load-order", type: "file", data: loadOrder.map((l) => `${l}\n`).join("") },
  ]);
  const out = join(dir, "initramfs-power-button.cpio");
  await writeFile(out, Buffer.concat([await readFile(kernel.initramfsPath), extra]));
  return out;
}

export interface TestVm {
  qemu: QemuHandle;
  channel: GuestChannel;
  serialPath: string;
  /** ms from QEMU spawn to the guest's hello. */
  helloMs: number;
  serialTail(): Promise<string>;
  /** Kills QEMU if it still runs (always call in finally). */
  dispose(): Promise<void>;
}

export interface BootTestVmOptions {
  dir: string;
  kernel: { kernelPath: string; initramfsPath: string };
  /** Boot this initramfs instead of the kernel's own. */
  initramfsPath?: string;
  rootfsPath: string;
  /** Bound on QEMU start + guest hello. Default 90 s (TCG on a busy machine). */
  bootTimeoutMs?: number;
  memoryMib?: number;
  /** Hard cap on the VM's lifetime. Default 10 min. */
  maxLifetimeMs?: number;
  channel?: GuestChannelOptions;
  /** Also serve QMP on `<dir>/qmp.sock`. */
  qmp?: boolean;
}

export async function bootTestVm(o: BootTestVmOptions): Promise<TestVm> {
  const serialPath = join(o.dir, "serial.log");
  const socketPath = join(o.dir, "ch.sock");
  const t0 = performance.now();
  const khz = tscKhz();
  const qemu = await launchQemu(
    {
      accel: "tcg",
      memoryMib: o.memoryMib ?? 256,
      cpus: 1,
      kernelPath: o.kernel.kernelPath,
      initramfsPath: o.initramfsPath ?? o.kernel.initramfsPath,
      ...(khz !== undefined ? { tscKhz: khz } : {}),
      rootDisk: { path: o.rootfsPath, format: "raw" },
      channel: { socketPath },
      serial: { kind: "file", path: serialPath },
      ...(o.qmp ? { qmpSocketPath: join(o.dir, "qmp.sock") } : {}),
    },
    { maxLifetimeMs: o.maxLifetimeMs ?? 600_000 },
  );
  let lastTail = "";
  const serialTail = async () => (lastTail = await tailFile(serialPath, 4096).catch(() => lastTail));
  const dispose = async () => {
    await qemu.kill(1000);
  };
  try {
    const duplex = await new UnixSocketTransport(socketPath, { connectTimeoutMs: 10_000 }).connect();
    const channel = await GuestChannel.connect(duplex, {
      helloTimeoutMs: o.bootTimeoutMs ?? 90_000,
      describeDeath: () => lastTail,
      ...o.channel,
    });
    const helloMs = performance.now() - t0;
    void serialTail();
    return { qemu, channel, serialPath, helloMs, serialTail, dispose };
  } catch (e) {
    const tail = await serialTail();
    await dispose();
    throw new Error(`test VM did not come up: ${(e as Error).message}\n--- serial tail ---\n${tail}\n--- qemu stderr ---\n${qemu.stderrTail()}`, { cause: e });
  }
}

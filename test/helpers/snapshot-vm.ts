/**
 * Test and bench fixture for snapshots: a tiny VM whose root disk is a qcow2 overlay (as a workspace's
 * is), with QMP and the guest channel, launched either to boot or to receive a saved state
 * (`incoming: "defer"`). Every wait is bounded.
 */
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { GuestChannel } from "../../src/channel/guest-channel.ts";
import { UnixSocketTransport } from "../../src/channel/transport.ts";
import type { QemuSpec } from "../../src/vmm/qemu/args.ts";
import { launchQemu, type QemuHandle } from "../../src/vmm/qemu/launch.ts";
import { QmpClient } from "../../src/vmm/qemu/qmp.ts";
import { tailFile } from "../../src/vmm/qemu/serial.ts";
import { tscKhz } from "../../src/vmm/qemu/host.ts";
import { restoreLaunchSpec } from "../../src/vmm/qemu/snapshot.ts";

export interface SnapVm {
  dir: string;
  spec: QemuSpec;
  qemu: QemuHandle;
  qmp: QmpClient;
  serialPath: string;
  channelPath: string;
  serialTail(): Promise<string>;
  /** Quits QEMU (kill after 1 s); safe to call twice. */
  dispose(): Promise<void>;
}

export function snapVmSpec(o: { dir: string; kernelPath: string; initramfsPath: string; diskPath: string; memoryMib?: number }): QemuSpec {
  const khz = tscKhz();
  return {
    accel: "tcg",
    memoryMib: o.memoryMib ?? 256,
    cpus: 1,
    kernelPath: o.kernelPath,
    initramfsPath: o.initramfsPath,
    ...(khz !== undefined ? { tscKhz: khz } : {}),
    rootDisk: { path: o.diskPath, format: "qcow2", id: "disk0" },
    channel: { socketPath: join(o.dir, "ch.sock") },
    serial: { kind: "file", path: join(o.dir, "serial.log") },
    qmpSocketPath: join(o.dir, "qmp.sock"),
  };
}

/** Launch `spec` (booting, or waiting for incoming state) and connect QMP. */
export async function launchSnapVm(dir: string, spec: QemuSpec, opts: { maxLifetimeMs?: number } = {}): Promise<SnapVm> {
  await mkdir(dir, { recursive: true });
  const qemu = await launchQemu(spec, { timeoutMs: 30_000, maxLifetimeMs: opts.maxLifetimeMs ?? 600_000 });
  let qmp: QmpClient;
  try {
    qmp = await QmpClient.connect(spec.qmpSocketPath!, { timeoutMs: 10_000 });
  } catch (e) {
    await qemu.kill(500);
    throw e;
  }
  const serialPath = spec.serial.kind === "file" ? spec.serial.path : "";
  let lastTail = "";
  return {
    dir,
    spec,
    qemu,
    qmp,
    serialPath,
    channelPath: spec.channel!.socketPath,
    serialTail: async () => (lastTail = await tailFile(serialPath, 4096).catch(() => lastTail)),
    dispose: async () => {
      qmp.close();
      await qemu.kill(1000);
    },
  };
}

/** A VM launched to receive a state saved from a VM of `source`, its own sockets and serial log in `dir`. */
export function launchRestoreVm(dir: string, source: QemuSpec, diskPath: string): Promise<SnapVm> {
  const spec = restoreLaunchSpec(source, {
    rootDisk: { ...source.rootDisk!, path: diskPath },
    channel: { socketPath: join(dir, "ch.sock") },
    serial: { kind: "file", path: join(dir, "serial.log") },
    qmpSocketPath: join(dir, "qmp.sock"),
  });
  return launchSnapVm(dir, spec);
}

/** Connect the host end of the guest channel and wait for the guest's hello (bounded). */
export async function connectChannel(vm: SnapVm, helloTimeoutMs = 90_000): Promise<GuestChannel> {
  const duplex = await new UnixSocketTransport(vm.channelPath, { connectTimeoutMs: 10_000 }).connect();
  try {
    return await GuestChannel.connect(duplex, { helloTimeoutMs, describeDeath: () => undefined });
  } catch (e) {
    const tail = await vm.serialTail();
    throw new Error(`no guest hello: ${(e as Error).message}\n--- serial tail ---\n${tail}\n--- qemu stderr ---\n${vm.qemu.stderrTail()}`, { cause: e });
  }
}

/** Run a shell line in the guest; returns stdout, throws on a non-zero exit. */
export async function sh(ch: GuestChannel, script: string, timeoutMs = 30_000): Promise<string> {
  const r = await ch.exec({ argv: ["sh", "-c", script], timeoutMs });
  if (r.status !== "exited" || r.exitCode !== 0) throw new Error(`guest: ${script}: ${r.status} ${r.exitCode ?? r.signal ?? ""} ${r.stderr.toString()}`);
  return r.stdout.toString();
}

export async function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(`${what} took over ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(t);
  }
}

/**
 * Bench: cold `microagent run --cold IMAGE true` against booting the same kernel, initramfs and rootfs
 * with a bare `qemu-system-x86_64` command in the same run (goal: ratio <= 1.15), and `run` from the
 * warm snapshot (the default) against the cold run (goal: ratio <= 0.3).
 *
 *   npm run -s build && node bench/workspace-run.ts [--runs N]
 *
 * Setup (not timed): a real docker-registry on loopback with a busybox image (umoci/skopeo), a state
 * dir, one warm-up `run` that pulls the image, installs the kernel and builds the base rootfs. Then,
 * alternating, N times each:
 *   cli:     `node bin/microagent.js run IMAGE true` as a child process (what a user types: Node
 *            start-up, create from cached image, supervisor spawn, boot, workload, teardown, delete);
 *   library: runWorkspace({image, cmd: ["true"]}) in this process (the same minus the CLI's Node start);
 *   bare:    qemu-system-x86_64 with the same argv builder, kernel, initramfs and a fresh qcow2 overlay
 *            over the same base rootfs, driven by a minimal host (GuestChannel: hello, boot config
 *            argv=["true"], result, shutdown) until QEMU exits. No state dir, no supervisor.
 * Prints medians and ratios. A script, not a test: it never fails on the numbers.
 */
import { execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { connect, type Socket } from "node:net";
import { startRegistry } from "../test/helpers/registry.ts";
import { buildBusyboxImage, pushImage } from "../test/helpers/oci-image.ts";
import { runWorkspace } from "../src/api/run.ts";
import { buildQemuArgs } from "../src/vmm/qemu/args.ts";
import { findQemu, tscKhz } from "../src/vmm/qemu/host.ts";
import { GuestChannel } from "../src/channel/guest-channel.ts";
import { chooseAccel } from "../src/supervisor/accel.ts";
import { runtimeRoot } from "../src/supervisor/spawn.ts";
import { readManifest as readKernelManifest, kernelDir } from "../src/kernel/manifest.ts";
import { baseCacheDir } from "../src/rootfs/build.ts";

const execFileP = promisify(execFile);
const runs = Number(process.argv[process.argv.indexOf("--runs") + 1] || 5) || 5;
const root = new URL("..", import.meta.url).pathname;
const bin = join(root, "bin/microagent.js");
if (!existsSync(join(root, "dist/cli/main.js"))) {
  console.error("dist/ is missing: run `npm run -s build` first");
  process.exit(2);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const work = mkdtempSync(join(tmpdir(), "microagent-bench-run-"));
const stateDir = join(work, "state");
const registry = await startRegistry();
const image = await buildBusyboxImage({});
try {
  const ref = (await pushImage(image, registry, "bench/busybox:1")).ref;
  const env = {
    ...process.env,
    MICROAGENT_INSECURE_REGISTRIES: registry.host,
    MICROAGENT_KERNEL_CACHE: process.env.MICROAGENT_KERNEL_CACHE ?? join(tmpdir(), "microagent-test-kernel-cache"),
  };
  Object.assign(process.env, env);

  const cliRun = async (cold = true) => {
    const t = performance.now();
    await execFileP(process.execPath, [bin, "--state-dir", stateDir, "run", ...(cold ? ["--cold"] : []), ref, "true"], { env });
    return performance.now() - t;
  };
  const first = await cliRun();
  console.log(`first run (pull + kernel install + rootfs build + boot): ${first.toFixed(0)} ms`);

  const kernel = await readKernelManifest(kernelDir(stateDir, "linux-qemu", "amd64"));
  if (!kernel) throw new Error("kernel manifest missing after the warm-up run");
  const kdir = kernelDir(stateDir, "linux-qemu", "amd64");
  const bases = readdirSync(baseCacheDir(stateDir), { recursive: true }).map(String).filter((f) => f.endsWith(".ext4"));
  if (bases.length === 0) throw new Error(`no base rootfs under ${baseCacheDir(stateDir)}`);
  const base = join(baseCacheDir(stateDir), bases[0] as string);
  const { accel } = await chooseAccel(process.env, runtimeRoot());

  const bare = async (i: number) => {
    const dir = join(work, `bare-${i}`);
    await execFileP("mkdir", ["-p", dir]);
    const disk = join(dir, "disk.qcow2");
    await execFileP("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "raw", "-b", base, disk]);
    const sock = join(dir, "ch.sock");
    const args = buildQemuArgs({
      accel,
      memoryMib: 512,
      cpus: 2,
      kernelPath: join(kdir, kernel.kernel.file),
      initramfsPath: join(kdir, kernel.initramfs.file),
      ...(accel === "tcg" && tscKhz() ? { tscKhz: tscKhz() as number } : {}),
      rootDisk: { path: disk, format: "qcow2" },
      channel: { socketPath: sock },
      serial: { kind: "file", path: join(dir, "serial.log") },
    });
    const t = performance.now();
    const qemu = spawn(findQemu(), args, { stdio: "ignore" });
    const exited = new Promise((r) => qemu.on("exit", r));
    let s;
    for (;;) {
      s = await new Promise<Socket | undefined>((res) => {
        const c = connect(sock);
        c.once("connect", () => res(c));
        c.once("error", () => res(undefined));
      });
      if (s) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    const ch = await GuestChannel.connect(s);
    await ch.sendBootConfig({ argv: ["true"] });
    await ch.result();
    await ch.shutdown({ timeoutMs: 5000 }).catch(() => {});
    await exited;
    return performance.now() - t;
  };

  const cli: number[] = [];
  const lib: number[] = [];
  const raw: number[] = [];
  const cliWarm: number[] = [];
  const libWarm: number[] = [];
  await cliRun(false); // captures the warm snapshot (not timed)
  for (let i = 0; i < runs; i++) {
    raw.push(await bare(i));
    cli.push(await cliRun());
    cliWarm.push(await cliRun(false));
    let t = performance.now();
    await runWorkspace({ image: ref, cmd: ["true"], stateDir, cold: true });
    lib.push(performance.now() - t);
    t = performance.now();
    const w = await runWorkspace({ image: ref, cmd: ["true"], stateDir });
    if (!w.warm?.restored) throw new Error("the warm run was not restored from the warm snapshot");
    libWarm.push(performance.now() - t);
  }
  const b = median(raw);
  console.log(`accel: ${accel}; runs: ${runs}`);
  console.log(`bare qemu + minimal host:  median ${b.toFixed(0)} ms  [${raw.map((x) => x.toFixed(0)).join(", ")}]`);
  console.log(`microagent run (CLI):      median ${median(cli).toFixed(0)} ms  [${cli.map((x) => x.toFixed(0)).join(", ")}]  ratio ${(median(cli) / b).toFixed(2)}x`);
  console.log(`runWorkspace (library):    median ${median(lib).toFixed(0)} ms  [${lib.map((x) => x.toFixed(0)).join(", ")}]  ratio ${(median(lib) / b).toFixed(2)}x`);
  console.log(`run, warm snapshot (CLI):  median ${median(cliWarm).toFixed(0)} ms  [${cliWarm.map((x) => x.toFixed(0)).join(", ")}]  ${(median(cliWarm) / median(cli)).toFixed(2)}x of the cold CLI run`);
  console.log(`runWorkspace, warm (lib):  median ${median(libWarm).toFixed(0)} ms  [${libWarm.map((x) => x.toFixed(0)).join(", ")}]  ${(median(libWarm) / median(lib)).toFixed(2)}x of the cold library run`);
} finally {
  await registry.stop();
  await image.cleanup();
  rmSync(work, { recursive: true, force: true });
}

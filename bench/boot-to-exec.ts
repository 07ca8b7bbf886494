/**
 * Boot-to-first-exec: QEMU spawn -> guest hello -> boot config acknowledged -> first exec result, for
 * N boots of the installed kernel + initramfs (our init) and a tiny busybox root disk under TCG.
 * Also reports the exec round trip on a running VM, exec stdout throughput (8 MiB through the
 * channel) and power off -> QEMU exit. Prints a table and a
 * JSON line; records, it does not assert.
 *
 *   node bench/boot-to-exec.ts [--boots 5] [--state-dir DIR]
 */
import { mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { bootTestVm, buildTinyRootfs, installTestKernel } from "../test/helpers/tiny-rootfs.ts";

const { values } = parseArgs({ options: { boots: { type: "string", default: "5" }, "state-dir": { type: "string" } } });
const boots = Number(values.boots);
const work = mkdtempSync(join(tmpdir(), "bench-boot-to-exec-"));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

try {
  const kernel = await installTestKernel(values["state-dir"] ?? join(work, "state"));
  const rootfs = await buildTinyRootfs(work);
  const rows: Array<{ helloMs: number; readyMs: number; firstExecMs: number; execRttMs: number; execMiBps: number; powerOffMs: number }> = [];
  for (let i = 0; i < boots; i++) {
    const dir = join(work, `boot${i}`);
    mkdirSync(dir);
    const t0 = performance.now();
    const vm = await bootTestVm({ dir, kernel, rootfsPath: rootfs.imagePath, bootTimeoutMs: 120_000 });
    try {
      const helloMs = performance.now() - t0;
      await vm.channel.sendBootConfig({});
      const readyMs = performance.now() - t0;
      const r = await vm.channel.exec({ argv: ["true"] });
      if (r.exitCode !== 0) throw new Error(`first exec failed: ${JSON.stringify(r)}`);
      const firstExecMs = performance.now() - t0;
      const rtts: number[] = [];
      for (let k = 0; k < 10; k++) {
        const s = performance.now();
        await vm.channel.exec({ argv: ["true"] });
        rtts.push(performance.now() - s);
      }
      const tp = performance.now();
      const big = await vm.channel.exec({ argv: ["head", "-c", "8388608", "/dev/zero"] });
      if (big.stdout.length !== 8388608) throw new Error(`throughput exec returned ${big.stdout.length} bytes`);
      const execMiBps = 8 / ((performance.now() - tp) / 1000);
      const s = performance.now();
      await vm.channel.shutdown({ timeoutMs: 2000 });
      await vm.qemu.exited;
      rows.push({ helloMs, readyMs, firstExecMs, execRttMs: median(rtts), execMiBps, powerOffMs: performance.now() - s });
      process.stderr.write(`boot ${i + 1}/${boots}: first exec after ${firstExecMs.toFixed(0)} ms\n`);
    } finally {
      await vm.dispose();
    }
  }
  const summary = {
    boots,
    initBytes: statSync(new URL("../guest/build/microagent-init", import.meta.url)).size,
    initramfsBytes: statSync(kernel.initramfsPath).size,
    medianHelloMs: Math.round(median(rows.map((r) => r.helloMs))),
    medianBootToFirstExecMs: Math.round(median(rows.map((r) => r.firstExecMs))),
    minBootToFirstExecMs: Math.round(Math.min(...rows.map((r) => r.firstExecMs))),
    maxBootToFirstExecMs: Math.round(Math.max(...rows.map((r) => r.firstExecMs))),
    medianExecRoundTripMs: Number(median(rows.map((r) => r.execRttMs)).toFixed(2)),
    medianExecStdoutMiBps: Number(median(rows.map((r) => r.execMiBps)).toFixed(1)),
    medianPowerOffToExitMs: Math.round(median(rows.map((r) => r.powerOffMs))),
  };
  console.log("boot | hello ms | ready ms | first exec ms | exec rtt ms | power off -> exit ms");
  rows.forEach((r, i) =>
    console.log(`${i + 1} | ${r.helloMs.toFixed(0)} | ${r.readyMs.toFixed(0)} | ${r.firstExecMs.toFixed(0)} | ${r.execRttMs.toFixed(2)} | ${r.powerOffMs.toFixed(0)}`),
  );
  console.log(JSON.stringify(summary));
} finally {
  rmSync(work, { recursive: true, force: true });
}

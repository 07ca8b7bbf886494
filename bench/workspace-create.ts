/**
 * Bench: workspace create from a cached image (goal: under 100 ms), measured through the library.
 *
 *   node bench/workspace-create.ts [--runs N]
 *
 * Starts a real docker-registry on loopback, pushes a busybox image built with umoci/skopeo, does one
 * cold create (pull, default kernel install if missing, base rootfs build), then N creates of new
 * workspaces from the same image (image resolved from the local store, kernel already installed,
 * rootfs base cache hit, qcow2 overlay, boot config, manifest, first event) and reports the median,
 * the best and where the time goes. Each workspace is deleted afterwards.
 *
 * A script, not a test: it prints figures and never fails on them.
 */
import { mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startRegistry } from "../test/helpers/registry.ts";
import { buildBusyboxImage, pushImage } from "../test/helpers/oci-image.ts";
import { createWorkspace, type CreateTimings } from "../src/workspace/create.ts";
import { deleteWorkspace } from "../src/workspace/delete.ts";
import { listWorkspaces } from "../src/workspace/list.ts";
import { workspaceStatus } from "../src/workspace/status.ts";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? (process.argv[i + 1] as string) : fallback;
}

const runs = Number(arg("--runs", "10"));
process.env.MICROAGENT_KERNEL_CACHE ??= join(tmpdir(), "microagent-test-kernel-cache");
const stateDir = join(tmpdir(), `microagent-bench-create-${process.pid}`);
mkdirSync(stateDir, { recursive: true, mode: 0o700 });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const fmt = (ms: number) => `${ms.toFixed(1)} ms`;

const registry = await startRegistry();
const image = await buildBusyboxImage({ cmd: ["/bin/sh", "-c", "echo hi"] });
try {
  const { ref } = await pushImage(image, registry, "bench/busybox:1");
  const cold = await createWorkspace({ name: "cold", image: ref, stateDir });
  console.log(`cold create (pull + kernel + rootfs build): ${fmt(cold.timings.totalMs)}  [image ${fmt(cold.timings.imageMs)}, kernel ${fmt(cold.timings.kernelMs)}, rootfs ${fmt(cold.timings.rootfsMs)}, overlay ${fmt(cold.timings.overlayMs)}]`);
  await deleteWorkspace("cold", { stateDir });

  const all: CreateTimings[] = [];
  for (let i = 0; i < runs; i++) {
    const r = await createWorkspace({ name: `warm-${i}`, image: ref, stateDir });
    if (!r.rootfsCacheHit) console.log(`warning: run ${i} missed the rootfs cache`);
    all.push(r.timings);
    await deleteWorkspace(`warm-${i}`, { stateDir });
  }
  const pick = (k: keyof CreateTimings) => median(all.map((t) => t[k]));
  const total = all.map((t) => t.totalMs);
  const rest = pick("totalMs") - pick("imageMs") - pick("kernelMs") - pick("rootfsMs") - pick("overlayMs");
  console.log(`create from a cached image, ${runs} runs: median ${fmt(median(total))}, best ${fmt(Math.min(...total))} (goal < 100 ms)`);
  console.log(`  median breakdown: image ${fmt(pick("imageMs"))}, kernel check ${fmt(pick("kernelMs"))}, rootfs cache ${fmt(pick("rootfsMs"))}, qemu-img overlay ${fmt(pick("overlayMs"))}, spec/boot config/manifest/event ${fmt(rest)}`);

  // status re-hashes kernel, initramfs, boot config and (while prepared) the rootfs base: what does that cost?
  await createWorkspace({ name: "probe", image: ref, stateDir });
  const statusMs: number[] = [];
  const listMs: number[] = [];
  for (let i = 0; i < 5; i++) {
    let t0 = performance.now();
    await workspaceStatus("probe", { stateDir });
    statusMs.push(performance.now() - t0);
    t0 = performance.now();
    await listWorkspaces({ stateDir });
    listMs.push(performance.now() - t0);
  }
  console.log(`status (full verification, in-process hash cache after the first): first ${fmt(statusMs[0] as number)}, median ${fmt(median(statusMs))}; list: median ${fmt(median(listMs))}`);
  await deleteWorkspace("probe", { stateDir });
} finally {
  await registry.stop().catch(() => {});
  await image.cleanup().catch(() => {});
  rmSync(stateDir, { recursive: true, force: true });
}

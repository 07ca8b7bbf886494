/**
 * Bench: fork of a running workspace until the fork answers `exec`, against a cold boot of the same
 * workspace until it answers `exec`, in the same run, through the library (goal: ratio <= 0.3).
 *
 *   npm run -s build && node bench/fork.ts [--runs N] [--memory MIB]
 *
 * Setup (not timed): a loopback registry with a busybox image, a source workspace (isolated network)
 * started and snapshotted once. Then, alternating, N times each:
 *   cold: `create` from the cached image + `start` + `exec true` (what a fresh workspace costs);
 *   fork: `snapshot create` of the running source + `create --from-snapshot` (new overlay over the
 *         frozen layer, restore, resume message) + `exec true`.
 * `snapshot create` is timed inside the fork (a fork of a running workspace needs a fresh capture);
 * the restore alone is reported too. Prints medians and ratios; records, it does not assert.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startRegistry } from "../test/helpers/registry.ts";
import { buildBusyboxImage, pushImage } from "../test/helpers/oci-image.ts";
import { Workspace } from "../src/api/workspace.ts";
import { createWorkspace } from "../src/workspace/create.ts";
import { startWorkspace, stopWorkspace } from "../src/api/lifecycle.ts";
import { createSnapshot, forkFromSnapshot } from "../src/api/snapshot.ts";
import { deleteWorkspace } from "../src/workspace/delete.ts";

const { values } = parseArgs({ options: { runs: { type: "string", default: "3" }, memory: { type: "string", default: "256" } } });
const runs = Number(values.runs);
const memoryMib = Number(values.memory);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const work = mkdtempSync(join(tmpdir(), "microagent-bench-fork-"));
const stateDir = join(work, "state");
const registry = await startRegistry();
const image = await buildBusyboxImage({});
const names: string[] = [];
try {
  const ref = (await pushImage(image, registry, "bench/busybox:1")).ref;
  process.env.MICROAGENT_INSECURE_REGISTRIES = registry.host;
  process.env.MICROAGENT_KERNEL_CACHE ??= join(tmpdir(), "microagent-test-kernel-cache");
  const create = (name: string) => createWorkspace({ name, stateDir, image: ref, memoryMib, cpus: 1, network: "isolated" });
  const execTrue = async (name: string) => {
    const ws = await Workspace.connect(name, { stateDir });
    const r = await ws.exec(["true"]);
    if (r.exitCode !== 0) throw new Error(`exec in ${name} failed`);
  };

  // The source: booted, idle, snapshotted once (warm-up of every cache).
  names.push("src");
  await create("src");
  await startWorkspace("src", { stateDir });
  await execTrue("src");

  const cold: number[] = [];
  const fork: number[] = [];
  const capture: number[] = [];
  const restore: number[] = [];
  for (let i = 0; i < runs; i++) {
    const c = `cold${i}`;
    names.push(c);
    let t = performance.now();
    await create(c);
    await startWorkspace(c, { stateDir });
    await execTrue(c);
    cold.push(performance.now() - t);
    await stopWorkspace(c, "kill", { stateDir });

    const f = `fork${i}`;
    names.push(f);
    t = performance.now();
    const snap = await createSnapshot("src", { stateDir, tag: `s${i}` });
    const tr = performance.now();
    await forkFromSnapshot(f, `src:s${i}`, { stateDir });
    await execTrue(f);
    const end = performance.now();
    fork.push(end - t);
    capture.push(snap.timingsMs.total);
    restore.push(end - tr);
    await stopWorkspace(f, "kill", { stateDir });
    process.stderr.write(`run ${i + 1}/${runs}: cold ${cold.at(-1)!.toFixed(0)} ms, fork ${fork.at(-1)!.toFixed(0)} ms (capture ${snap.timingsMs.total.toFixed(0)}, restore+exec ${(end - tr).toFixed(0)})\n`);
  }
  const summary = {
    runs,
    memoryMib,
    medianColdCreateStartExecMs: Math.round(median(cold)),
    medianForkUntilExecMs: Math.round(median(fork)),
    medianSnapshotCreateMs: Math.round(median(capture)),
    medianRestoreUntilExecMs: Math.round(median(restore)),
    forkOverColdRatio: Number((median(fork) / median(cold)).toFixed(2)),
    restoreOverColdRatio: Number((median(restore) / median(cold)).toFixed(2)),
  };
  console.log("phase | median ms");
  console.log(`cold: create + start + exec | ${summary.medianColdCreateStartExecMs}`);
  console.log(`fork: snapshot + create --from-snapshot + exec | ${summary.medianForkUntilExecMs} (${summary.forkOverColdRatio}x)`);
  console.log(`  of which snapshot create | ${summary.medianSnapshotCreateMs}`);
  console.log(`  of which fork restore + exec | ${summary.medianRestoreUntilExecMs} (${summary.restoreOverColdRatio}x)`);
  console.log(JSON.stringify(summary));
} finally {
  for (const n of names.reverse()) await stopWorkspace(n, "kill", { stateDir }).catch(() => {});
  for (const n of names) await deleteWorkspace(n, { stateDir, force: true }).catch(() => {});
  await registry.stop().catch(() => {});
  rmSync(work, { recursive: true, force: true });
}

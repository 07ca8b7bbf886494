/**
 * Bench: image layers -> ext4, against the floor of doing it with standard tools in the same run.
 *
 *   node bench/rootfs-build.ts [--runs N] [--dirs /usr/lib/python3.11,/usr/share/perl:/usr/lib/python3]
 *
 * Layers are gzip tars made here from host directories (`--dirs`: layers separated by `:`, directories
 * within a layer by `,`), so the bench needs no registry or network. For each run it times
 *   baseline: `tar -xzf` of every layer into one directory (GNU tar, as the current user) + `mke2fs -d`
 *             of that directory at the same size;
 *   builder:  buildExt4FromLayers (our tar reader, whiteout/link handling, staging, mke2fs -d, debugfs
 *             replay of owners/modes/devices), to a ready image (its staging-tree deletion is shown
 *             separately: ensureBaseRootfs does it in the background, and the baseline's is not timed);
 * and reports the medians and their ratio (goal <= 1.2). Then ensureBaseRootfs twice on the same
 * digest: a cold build and a cache hit.
 *
 * A script, not a test: it prints figures and never fails on them.
 */
import { execFile } from "node:child_process";
import { createReadStream, mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createGunzip } from "node:zlib";
import { buildExt4FromLayers, ensureBaseRootfs } from "../src/rootfs/build.ts";
import { resolveE2fsTools } from "../src/rootfs/tools.ts";
import type { LocalImage } from "../src/image/types.ts";

const execFileP = promisify(execFile);

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? (process.argv[i + 1] as string) : fallback;
}

const runs = Number(arg("--runs", "3"));
const layerSpecs = arg("--dirs", "/usr/lib/python3.11,/usr/share/perl:/usr/lib/python3").split(":").map((l) => l.split(","));
const work = mkdtempSync(join(tmpdir(), "microagent-bench-rootfs-"));
const tools = resolveE2fsTools({});

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t0 = performance.now();
  const value = await fn();
  return { ms: performance.now() - t0, value };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const sha256File = (p: string) =>
  new Promise<string>((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(p)
      .on("data", (c) => h.update(c))
      .on("end", () => resolve(h.digest("hex")))
      .on("error", reject);
  });

try {
  // 1. make the layers
  const layers: string[] = [];
  for (const [i, dirs] of layerSpecs.entries()) {
    const out = join(work, `layer${i}.tar.gz`);
    // -P keeps absolute names (stripped to the image root by both extractors' rules: GNU tar strips the
    // leading "/", our reader treats names as root-relative).
    await execFileP("tar", ["-czPf", out, "--sort=name", ...dirs]);
    layers.push(out);
  }
  const layerBytes = layers.reduce((n, l) => n + statSync(l).size, 0);
  console.log(`layers: ${layers.length}, ${(layerBytes / 1048576).toFixed(1)} MiB gzip (${layerSpecs.map((l) => l.join("+")).join(" | ")})`);

  const sources = layers.map((path) => ({ label: path, open: () => createReadStream(path).pipe(createGunzip()) }));
  const builderMs: number[] = [];
  const builderTotalMs: number[] = [];
  const baselineMs: number[] = [];
  const stageMs: number[] = [];
  const mkfsMs: number[] = [];
  let sizeMib = 0;
  let entries = 0;
  let replay = 0;
  for (let r = 0; r < runs; r++) {
    // builder
    const out = join(work, `builder-${r}.ext4`);
    const b = await timed(() =>
      buildExt4FromLayers({ layers: sources, out, seed: "sha256:bench", workDir: join(work, `bw-${r}`), tools, toolTimeoutMs: 600_000 }),
    );
    // "ready" = the ext4 is complete (staging + mkfs + replay); the staging tree's deletion comes
    // after (in the background for ensureBaseRootfs), as the baseline's would.
    builderMs.push(b.value.stageMs + b.value.mkfsMs);
    builderTotalMs.push(b.ms);
    stageMs.push(b.value.stageMs);
    mkfsMs.push(b.value.mkfsMs);
    sizeMib = b.value.sizeMib;
    entries = b.value.entries;
    replay = b.value.replayCommands;
    rmSync(out, { force: true });

    // baseline: tar -x + mke2fs -d at the same size
    const dir = join(work, `tarx-${r}`);
    const img = join(work, `baseline-${r}.ext4`);
    const t = await timed(async () => {
      mkdirSync(dir);
      for (const l of layers) await execFileP("tar", ["-xzf", l, "-C", dir]);
      await execFileP(tools.mke2fs, ["-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-d", dir, img, `${sizeMib}M`]);
    });
    baselineMs.push(t.ms);
    rmSync(dir, { recursive: true, force: true });
    rmSync(img, { force: true });
    console.log(
      `run ${r + 1}/${runs}: builder ${(b.value.stageMs + b.value.mkfsMs).toFixed(0)} ms to a ready image (stage ${b.value.stageMs.toFixed(0)} + mkfs/replay ${b.value.mkfsMs.toFixed(0)}; ${b.ms.toFixed(0)} ms with staging cleanup), tar -x + mke2fs -d ${t.ms.toFixed(0)} ms`,
    );
  }

  // cache: cold ensure, then a hit on the same digest
  const fakeDigest = `sha256:${createHash("sha256").update(layers.join("\n")).update(String(Date.now())).digest("hex")}`;
  const image: LocalImage = {
    ref: "bench/rootfs:latest",
    resolvedRef: `bench/rootfs@${fakeDigest}`,
    manifestDigest: fakeDigest,
    platform: { os: "linux", architecture: "amd64" },
    config: {},
    configDigest: fakeDigest,
    layers: layers.map((path) => ({ digest: `sha256:${"0".repeat(64)}`, mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", size: statSync(path).size, path, compression: "gzip" as const })),
    sizeBytes: layerBytes,
    diffIds: [],
  };
  const stateDir = join(work, "state");
  const cold = await timed(() => ensureBaseRootfs(image, { stateDir }));
  const hit = await timed(() => ensureBaseRootfs(image, { stateDir }));
  const coldSha = await sha256File(cold.value.path);

  const result = {
    layers: layers.length,
    layerMiB: +(layerBytes / 1048576).toFixed(1),
    entries,
    sizeMib,
    replayCommands: replay,
    runs,
    builderMs: Math.round(median(builderMs)),
    builderWithCleanupMs: Math.round(median(builderTotalMs)),
    builderStageMs: Math.round(median(stageMs)),
    builderMkfsMs: Math.round(median(mkfsMs)),
    baselineMs: Math.round(median(baselineMs)),
    ratio: +(median(builderMs) / median(baselineMs)).toFixed(2),
    ratioWithCleanup: +(median(builderTotalMs) / median(baselineMs)).toFixed(2),
    goalRatio: 1.2,
    ensureColdMs: Math.round(cold.ms),
    ensureCacheHitMs: +hit.ms.toFixed(1),
    cacheHit: hit.value.cacheHit,
    cacheHitSameBytes: hit.value.sha256 === coldSha,
  };
  console.log(
    [
      "",
      `entries ${entries}, ext4 ${sizeMib} MiB, ${replay} replay commands (uid ${process.getuid?.()})`,
      `builder (median)          ${result.builderMs} ms   (stage ${result.builderStageMs} ms, mkfs+replay ${result.builderMkfsMs} ms; ${result.builderWithCleanupMs} ms with staging cleanup)`,
      `tar -x + mke2fs -d        ${result.baselineMs} ms`,
      `ratio                     ${result.ratio}x  (goal <= ${result.goalRatio}x; ${result.ratioWithCleanup}x counting our cleanup but not tar's)`,
      `ensureBaseRootfs cold     ${result.ensureColdMs} ms (incl. sha256 of the image)`,
      `ensureBaseRootfs hit      ${result.ensureCacheHitMs} ms  (cacheHit=${result.cacheHit})`,
    ].join("\n"),
  );
  console.log(JSON.stringify(result));
} finally {
  rmSync(work, { recursive: true, force: true });
}

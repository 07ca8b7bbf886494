/**
 * Decompression bounds and the sparse `--out` copy (reliability campaign D9): a gzip layer of a few
 * hundred KB that expands to hundreds of MB of zeros is refused at the expansion bound with
 * ROOTFS_LAYER_TOO_LARGE before it is staged; the per-image total bound is configurable; and an
 * image that carries a large file of zeros is copied to `out` with its holes kept.
 */
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { createGzip } from "node:zlib";
import { makeTar } from "../helpers/oci-image.ts";
import { scratchDir } from "../helpers/scratch.ts";
import { buildRootfs, ensureBaseRootfs } from "../../src/rootfs/build.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";
import type { LocalImage } from "../../src/image/types.ts";

const execFileP = promisify(execFile);
const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");
const MIB = 1024 * 1024;
let scratch: string;
let counter = 0;

before(() => {
  scratch = scratchDir("rootfs-limits");
});

/** gzip of a tar holding one file of `zeroMib` MiB of zeros, streamed (never held in memory). */
async function zeroLayer(zeroMib: number): Promise<Buffer> {
  const head = makeTar([{ path: "opt/zeros", type: "file", declaredSize: zeroMib * MIB }]);
  // makeTar wrote the header, no content, then the end blocks: keep the header, stream the content.
  const header = head.subarray(0, 512);
  const gz = createGzip({ level: 9 });
  const parts: Buffer[] = [];
  gz.on("data", (d: Buffer) => parts.push(d));
  const done = new Promise((resolve) => gz.on("end", resolve));
  gz.write(header);
  const zero = Buffer.alloc(MIB);
  for (let i = 0; i < zeroMib; i++) if (!gz.write(zero)) await new Promise((r) => gz.once("drain", r));
  gz.end(Buffer.alloc(1024));
  await done;
  return Buffer.concat(parts);
}

function imageOf(blobs: Array<{ data: Buffer; compression: "gzip" | "none" }>): LocalImage {
  const dir = join(scratch, `img-${++counter}`);
  mkdirSync(dir);
  const layers = blobs.map((b, i) => {
    const path = join(dir, `layer${i}`);
    writeFileSync(path, b.data);
    return {
      digest: `sha256:${sha(b.data)}`,
      mediaType: b.compression === "gzip" ? "application/vnd.oci.image.layer.v1.tar+gzip" : "application/vnd.oci.image.layer.v1.tar",
      size: b.data.length,
      path,
      compression: b.compression,
    };
  });
  const digest = `sha256:${sha(`${dir}\n${layers.map((l) => l.digest).join("\n")}`)}`;
  return {
    ref: `test/limits:${counter}`,
    resolvedRef: `test/limits@${digest}`,
    manifestDigest: digest,
    platform: { os: "linux", architecture: "amd64" },
    config: {},
    configDigest: digest,
    layers,
    sizeBytes: layers.reduce((n, l) => n + l.size, 0),
  } as LocalImage;
}

async function refused(p: Promise<unknown>): Promise<{ code: string; kind: string; message: string; remediation: string; details: Record<string, unknown> }> {
  try {
    await p;
  } catch (e) {
    assert.ok(isMicroagentError(e), String(e));
    return { code: e.code, kind: e.kind, message: e.message, remediation: e.remediation, details: (e.details ?? {}) as Record<string, unknown> };
  }
  assert.fail("expected the build to be refused");
}

test("rootfs-limits: a gzip bomb (300 MiB of zeros in a few hundred KB) stops at the expansion bound, nothing staged is left", async () => {
  const bomb = await zeroLayer(300);
  assert.ok(bomb.length < 2 * MIB, `the bomb is small: ${bomb.length} bytes`);
  const stateDir = join(scratch, "state-bomb");
  const image = imageOf([{ data: bomb, compression: "gzip" }]);
  const t0 = Date.now();
  const err = await refused(ensureBaseRootfs(image, { stateDir }));
  assert.equal(err.code, "ROOTFS_LAYER_TOO_LARGE", err.message);
  assert.equal(err.kind, "resource_exhausted");
  assert.match(err.message, new RegExp(`layer ${image.layers[0]!.digest}: ${bomb.length} compressed bytes expand to more than \\d+ \\(over 200x\\)`));
  assert.match(err.remediation, /--max-expansion-ratio/);
  assert.match(err.remediation, /MICROAGENT_MAX_EXPANSION_RATIO/);
  assert.ok(Date.now() - t0 < 30_000, "refused promptly");
  assert.deepEqual(readdirSync(join(stateDir, "build", "tmp")), [], "the staging tree is gone");
  assert.deepEqual(readdirSync(join(stateDir, "build", "base")).filter((n) => !n.endsWith(".lock")), [], "nothing published");
});

test("rootfs-limits: the per-image total bound is configurable (option and environment) and names the limit", async () => {
  const tar = makeTar([{ path: "opt/data", type: "file", content: Buffer.alloc(3 * MIB, 7) }]);
  const image = imageOf([{ data: tar, compression: "none" }]);
  const err = await refused(ensureBaseRootfs(image, { stateDir: join(scratch, "state-total"), maxUncompressedBytes: 2 * MIB }));
  assert.equal(err.code, "ROOTFS_LAYER_TOO_LARGE");
  assert.match(err.message, /the image's layers hold more than 2 MiB uncompressed/);
  process.env.MICROAGENT_MAX_UNCOMPRESSED_GIB = String(1 / 1024); // 1 MiB
  try {
    const viaEnv = await refused(ensureBaseRootfs(image, { stateDir: join(scratch, "state-total-env") }));
    assert.match(viaEnv.message, /more than 1 MiB uncompressed/);
  } finally {
    delete process.env.MICROAGENT_MAX_UNCOMPRESSED_GIB;
  }
  // the default bound (16 GiB) lets it through
  const ok = await ensureBaseRootfs(image, { stateDir: join(scratch, "state-total-ok") });
  assert.equal(ok.cacheHit, false);
});

test("rootfs-limits: --out keeps the holes: a 150 MiB file of zeros (ratio raised) gives an output whose allocated blocks are far below its size", async () => {
  const layer = await zeroLayer(150);
  const image = imageOf([{ data: layer, compression: "gzip" }]);
  const stateDir = join(scratch, "state-sparse");
  const out = join(scratch, "sparse.ext4");
  const built = await buildRootfs({ image, out, stateDir, maxExpansionRatio: 100_000 });
  const st = statSync(out);
  assert.equal(st.size, built.sizeMib * MIB);
  assert.ok(st.size >= 150 * MIB, `the filesystem holds the file (${st.size} bytes)`);
  const allocated = st.blocks * 512;
  assert.ok(allocated < st.size / 8, `allocated ${allocated} of ${st.size} bytes`);
  assert.equal(createHash("sha256").update(await (await import("node:fs/promises")).readFile(out)).digest("hex"), built.sha256, "same bytes as the base");
  await execFileP("e2fsck", ["-fn", out]);
  const { stdout } = await execFileP("debugfs", ["-R", "stat /opt/zeros", out]);
  assert.match(stdout, new RegExp(`Size: ${150 * MIB}\\b`));
  assert.ok(!existsSync(`${out}.tmp`), "no temp file");
});

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync, zstdCompressSync } from "node:zlib";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { compressionOf, openLayerStream, sniffCompression } from "../../src/image/layer.ts";

async function collect(s: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

test("image-layer: media types name their compression", () => {
  const table: Array<[string, string | undefined]> = [
    ["application/vnd.oci.image.layer.v1.tar", "none"],
    ["application/vnd.oci.image.layer.v1.tar+gzip", "gzip"],
    ["application/vnd.oci.image.layer.v1.tar+zstd", "zstd"],
    ["application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "gzip"],
    ["application/vnd.docker.image.rootfs.diff.tar.gzip", "gzip"],
    ["application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "gzip"],
    ["application/vnd.docker.image.rootfs.diff.tar", "none"],
    ["application/vnd.oci.image.config.v1+json", undefined],
    ["application/vnd.oci.image.layer.v1.tar+bzip2", undefined],
  ];
  for (const [mt, want] of table) assert.equal(compressionOf(mt), want, mt);
  assert.equal(sniffCompression(gzipSync("x")), "gzip");
  assert.equal(sniffCompression(zstdCompressSync("x")), "zstd");
  assert.equal(sniffCompression(Buffer.from("ustar")), "none");
});

test("image-layer: openLayerStream yields the same tar bytes for gzip, zstd and none; corrupt data is IMAGE_LAYER_CORRUPT", async () => {
  const dir = await mkdtemp(join(tmpdir(), "microagent-image-layer-"));
  try {
    const tar = Buffer.alloc(300_000, 7);
    for (let i = 0; i < tar.length; i += 997) tar[i] = i & 0xff;
    const cases = [
      ["none", tar],
      ["gzip", gzipSync(tar)],
      ["zstd", zstdCompressSync(tar)],
    ] as const;
    for (const [compression, blob] of cases) {
      const path = join(dir, compression);
      await writeFile(path, blob);
      assert.deepEqual(await collect(openLayerStream({ path, compression, digest: `sha256:${compression}` })), tar, compression);
    }
    const bad = join(dir, "bad");
    await writeFile(bad, Buffer.concat([gzipSync(tar).subarray(0, 1000), Buffer.alloc(100, 0xff)]));
    await assert.rejects(collect(openLayerStream({ path: bad, compression: "gzip", digest: "sha256:bad" })), (e: unknown) => isMicroagentError(e) && e.code === "IMAGE_LAYER_CORRUPT" && e.message.includes("sha256:bad"));
    await assert.rejects(collect(openLayerStream({ path: join(dir, "missing"), compression: "zstd", digest: "sha256:m" })), (e: unknown) => isMicroagentError(e) && e.code === "IMAGE_BLOB_MISSING");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

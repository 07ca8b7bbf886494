/**
 * Reading a stored layer blob: media type -> compression, and a decompressing stream over it.
 * The rootfs builder consumes `openLayerStream(layer)` and gets plain tar bytes.
 */
import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import { PassThrough, type Readable } from "node:stream";
import * as zlib from "node:zlib";
import { ImageErrors } from "./errors.ts";
import type { LayerCompression, LocalLayer } from "./types.ts";

/**
 * Compression named by a layer media type. OCI: `...tar`, `...tar+gzip`, `...tar+zstd`; Docker:
 * `...rootfs.diff.tar.gzip`; foreign/nondistributable variants follow the same suffixes.
 * Returns undefined for media types that are not layers we can unpack.
 */
export function compressionOf(mediaType: string): LayerCompression | undefined {
  if (mediaType === "application/vnd.docker.image.rootfs.diff.tar.gzip") return "gzip";
  if (mediaType === "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip") return "gzip";
  if (mediaType === "application/vnd.docker.image.rootfs.diff.tar") return "none";
  const m = /^application\/vnd\.oci\.image\.layer(?:\.nondistributable)?\.v1\.tar(\+gzip|\+zstd)?$/.exec(mediaType);
  if (!m) return undefined;
  if (m[1] === "+gzip") return "gzip";
  if (m[1] === "+zstd") return "zstd";
  return "none";
}

/**
 * Sniff the compression from a blob's first bytes (docker archives and some layouts lie or say
 * nothing in the media type). gzip: 1f 8b; zstd frame: 28 b5 2f fd.
 */
export function sniffCompression(head: Uint8Array): LayerCompression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head.length >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return "zstd";
  return "none";
}

export async function sniffFileCompression(path: string): Promise<LayerCompression> {
  const fh = await open(path, "r");
  try {
    const buf = Buffer.alloc(4);
    const { bytesRead } = await fh.read(buf, 0, 4, 0);
    return sniffCompression(buf.subarray(0, bytesRead));
  } finally {
    await fh.close();
  }
}

/**
 * A Readable of the layer's uncompressed tar bytes. Read or decompression failures surface on the
 * returned stream as IMAGE_LAYER_CORRUPT (naming the digest); destroying it closes the file.
 */
export function openLayerStream(layer: Pick<LocalLayer, "path" | "compression" | "digest">): Readable {
  const file = createReadStream(layer.path);
  const out = new PassThrough();
  const fail = (e: unknown) => {
    if (out.destroyed) return;
    const code = (e as NodeJS.ErrnoException).code;
    out.destroy(
      code === "ENOENT"
        ? ImageErrors.IMAGE_BLOB_MISSING({
            message: `layer blob ${layer.digest} is missing from the store (${layer.path})`,
            cause: e,
            details: { digest: layer.digest, path: layer.path },
          })
        : ImageErrors.IMAGE_LAYER_CORRUPT({
            message: `layer ${layer.digest} could not be read as ${layer.compression === "none" ? "tar" : layer.compression}: ${(e as Error).message}`,
            cause: e,
            details: { digest: layer.digest, path: layer.path },
          }),
    );
  };
  file.on("error", fail);
  if (layer.compression === "none") {
    file.pipe(out);
  } else {
    const decompress = layer.compression === "gzip" ? zlib.createGunzip() : zlib.createZstdDecompress();
    decompress.on("error", fail);
    file.pipe(decompress).pipe(out);
    out.on("close", () => decompress.destroy());
  }
  out.on("close", () => file.destroy());
  return out;
}

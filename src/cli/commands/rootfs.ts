import { Command, InvalidArgumentError } from "commander";
import { resolve } from "node:path";
import { action } from "../action.ts";
import { parseImageRef, isDigestRef } from "../../image/ref.ts";
import { resolveImage } from "../../image/pull.ts";
import { buildRootfs } from "../../rootfs/build.ts";
import { RootfsErrors } from "../../rootfs/errors.ts";

function parseSizeMib(value: string): number {
  const n = Number(value);
  if (!/^[0-9]+$/.test(value) || !Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError(`'${value}' is not a positive whole number of MiB`);
  return n;
}

function parsePositive(what: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^[0-9]+(\.[0-9]+)?$/.test(value) || !Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`'${value}' is not a positive number of ${what}`);
    return n;
  };
}

interface BuildFlags {
  maxUncompressedGib?: number;
  maxExpansionRatio?: number;
  image: string;
  out: string;
  sizeMib?: number;
  mke2fs?: string;
  debugfs?: string;
  allowMutable?: boolean;
}

export function rootfsCommand(): Command {
  const rootfs = new Command("rootfs").description("build ext4 root filesystems from OCI images");
  rootfs
    .command("build")
    .description("build an ext4 root filesystem image from an OCI image (cached by manifest digest)")
    .requiredOption("--image <ref>", "image reference, pinned by digest (repo@sha256:...) unless --allow-mutable")
    .requiredOption("--out <path>", "where to write the ext4 image")
    .option("--size-mib <n>", "filesystem size in MiB (default: content plus headroom)", parseSizeMib)
    .option("--mke2fs <path>", "mke2fs to use (default: found on PATH or in the sbin directories)")
    .option("--debugfs <path>", "debugfs to use (default: next to mke2fs, else PATH)")
    .option("--max-uncompressed-gib <n>", "refuse images whose layers hold more than N GiB uncompressed (default 16, or MICROAGENT_MAX_UNCOMPRESSED_GIB)", parsePositive("GiB"))
    .option("--max-expansion-ratio <n>", "refuse a layer that expands more than N times past 64 MiB (default 200, or MICROAGENT_MAX_EXPANSION_RATIO)", parsePositive("times"))
    .option("--allow-mutable", "accept a tag reference (development only: a tag can point to different content tomorrow)")
    .action(
      action(async (ctx, o: BuildFlags) => {
        const ref = parseImageRef(o.image);
        if (!isDigestRef(ref) && !o.allowMutable) {
          throw RootfsErrors.ROOTFS_REF_MUTABLE({
            message: `image reference is mutable, pass --allow-mutable to override (${o.image} names a tag, not a digest)`,
            remediation: `Pin the image by digest (e.g. ${ref.registry}/${ref.repository}@sha256:...; \`microagent image list\` shows resolved digests), or pass --allow-mutable (development only).`,
            details: { image: o.image },
          });
        }
        const image = await resolveImage(o.image, {
          stateDir: ctx.globals.stateDir,
          ...(ctx.globals.arch ? { arch: ctx.globals.arch } : {}),
        });
        const out = resolve(o.out);
        const t0 = performance.now();
        const built = await buildRootfs({
          image,
          out,
          stateDir: ctx.globals.stateDir,
          ...(o.sizeMib !== undefined ? { sizeMib: o.sizeMib } : {}),
          ...(o.mke2fs !== undefined ? { mke2fs: o.mke2fs } : {}),
          ...(o.debugfs !== undefined ? { debugfs: o.debugfs } : {}),
          ...(o.maxUncompressedGib !== undefined ? { maxUncompressedBytes: Math.floor(o.maxUncompressedGib * 1024 ** 3) } : {}),
          ...(o.maxExpansionRatio !== undefined ? { maxExpansionRatio: o.maxExpansionRatio } : {}),
          onProgress: (m) => ctx.progress(m),
        });
        const ms = Math.round(performance.now() - t0);
        const json = {
          out: built.out,
          image: image.ref,
          resolvedRef: image.resolvedRef,
          manifestDigest: built.manifestDigest,
          sha256: built.sha256,
          sizeMib: built.sizeMib,
          cacheHit: built.cacheHit,
          basePath: built.path,
          elapsedMs: ms,
        };
        const text = [
          `wrote ${built.out} (${built.sizeMib} MiB ext4${built.cacheHit ? ", from the cache" : ""})`,
          `  image:  ${image.resolvedRef}`,
          `  sha256: ${built.sha256}`,
        ].join("\n");
        return { json, text };
      }),
    );
  return rootfs;
}

import { Command } from "commander";
import { action } from "../action.ts";
import { imageJson, imageListJson } from "../../api/results.ts";
import { formatTable, type CliContext } from "../output.ts";
import { listImages, pruneImages, removeImage, tagImage, type ImageSummary } from "../../image/images.ts";
import { dropWarmExcept } from "../../workspace/warm.ts";
import { loadImage } from "../../image/load.ts";
import { pullImage, type PullProgress } from "../../image/pull.ts";
import { parseWholeNumber } from "./workspace-flags.ts";

export function imageCommand(): Command {
  const image = new Command("image").description("pull, load, list, tag and remove OCI images in the local store");

  image
    .command("pull")
    .description("download an image from its registry into the local store (platform from --arch, default the host's)")
    .argument("<ref>", "image reference: alpine, ghcr.io/org/app:1, or name@sha256:<digest>")
    .option("--concurrency <n>", "layers downloaded at once", parseCount, 3)
    .action(
      action(async (ctx, ref: string, o: { concurrency: number }) => {
        const img = await pullImage(ref, {
          stateDir: ctx.globals.stateDir,
          ...(ctx.globals.arch ? { arch: ctx.globals.arch } : {}),
          concurrency: o.concurrency,
          onProgress: progressPrinter(ctx),
        });
        return { json: imageJson(img), text: `${img.ref}\n  resolved: ${img.resolvedRef}\n  platform: ${platformText(img.platform)}  size: ${humanBytes(img.sizeBytes)}  layers: ${img.layers.length}` };
      }),
    );

  image
    .command("load")
    .description("import an OCI image layout directory or a `docker save` tar archive (no registry needed)")
    .argument("<path>", "OCI layout directory, or a docker save / OCI layout tar archive")
    .option("--ref <ref>", "reference to record the image as (also picks one image from a multi-image input)")
    .action(
      action(async (ctx, path: string, o: { ref?: string }) => {
        const img = await loadImage(path, {
          stateDir: ctx.globals.stateDir,
          ...(ctx.globals.arch ? { arch: ctx.globals.arch } : {}),
          ...(o.ref !== undefined ? { ref: o.ref } : {}),
        });
        return { json: imageJson(img), text: `loaded ${img.ref}\n  resolved: ${img.resolvedRef}\n  platform: ${platformText(img.platform)}  size: ${humanBytes(img.sizeBytes)}` };
      }),
    );

  image
    .command("list")
    .alias("ls")
    .description("list local images")
    .action(
      action(async (ctx) => {
        const images = await listImages({ stateDir: ctx.globals.stateDir });
        return { json: imageListJson(images), text: formatImageTable(images) };
      }),
    );

  image
    .command("rm")
    .alias("delete")
    .description("remove an image record (its blobs stay until `image prune --delete`)")
    .argument("<ref>", "image reference (tag or digest)")
    .action(
      action(async (ctx, ref: string) => {
        const r = await removeImage(ref, { stateDir: ctx.globals.stateDir, ...(ctx.globals.arch ? { arch: ctx.globals.arch } : {}) });
        await dropWarmOfRemovedImages(ctx.globals.stateDir);
        return { json: r, text: r.removed.map((x) => `removed ${x}`).join("\n") };
      }),
    );

  image
    .command("prune")
    .description("drop records whose blobs are missing; with --delete also delete blobs no image uses")
    .option("--delete", "delete unreferenced blobs to free disk space")
    .action(
      action(async (ctx, o: { delete?: boolean }) => {
        const r = await pruneImages({ stateDir: ctx.globals.stateDir, delete: Boolean(o.delete) });
        await dropWarmOfRemovedImages(ctx.globals.stateDir);
        const lines = [
          ...r.droppedRecords.map((x) => `dropped ${x} (missing blobs)`),
          o.delete ? `deleted ${r.deletedBlobs.length} unused blobs, freed ${humanBytes(r.freedBytes)}` : "kept unused blobs (pass --delete to remove them)",
        ];
        return { json: r, text: lines.join("\n") };
      }),
    );

  image
    .command("tag")
    .description("give a local image another reference")
    .argument("<source>", "existing local image reference")
    .argument("<target>", "new reference (name[:tag])")
    .action(
      action(async (ctx, source: string, target: string) => {
        const r = await tagImage(source, target, { stateDir: ctx.globals.stateDir, ...(ctx.globals.arch ? { arch: ctx.globals.arch } : {}) });
        return { json: { tagged: r }, text: r.map((x) => `${x.ref} -> ${x.resolvedRef}`).join("\n") };
      }),
    );

  return image;
}

/** `--concurrency`: digits only ("1e1", "0x10" and " 5" are refused, not read as numbers). */
const parseCount = parseWholeNumber("layers downloaded at once", 1, 32);

/** Progress lines on a TTY: one per layer start/finish, at most one progress line per layer per ~10%. */
export function progressPrinter(ctx: Pick<CliContext, "progress">): (e: PullProgress) => void {
  const lastTenth = new Map<string, number>();
  return (e) => {
    const short = "digest" in e ? e.digest.slice(7, 19) : "";
    switch (e.type) {
      case "resolved":
        ctx.progress(`${e.ref}: ${e.platform}, ${e.layers} layers, ${humanBytes(e.totalBytes)}`);
        break;
      case "layer-cached":
        ctx.progress(`  ${short} already present`);
        break;
      case "layer-start":
        ctx.progress(`  ${short} downloading ${humanBytes(e.size)}`);
        break;
      case "layer-progress": {
        const tenth = e.size > 0 ? Math.floor((e.bytes / e.size) * 10) : 10;
        if (tenth > (lastTenth.get(e.digest) ?? 0) && tenth < 10) {
          lastTenth.set(e.digest, tenth);
          ctx.progress(`  ${short} ${tenth * 10}%`);
        }
        break;
      }
      case "layer-retry":
        ctx.progress(`  ${short} retry ${e.attempt}: ${e.reason}`);
        break;
      case "layer-done":
        ctx.progress(`  ${short} done`);
        break;
    }
  };
}

export function formatImageTable(images: readonly ImageSummary[]): string {
  if (images.length === 0) return "no images (pull one with `microagent image pull REF`)";
  return formatTable(
    ["REF", "DIGEST", "PLATFORM", "SIZE", "LAST USED"],
    images.map((i) => [
      i.ref,
      i.manifestDigest.slice(7, 19) + (i.complete ? "" : " (incomplete)"),
      platformText(i.platform),
      humanBytes(i.sizeBytes),
      i.lastUsedAt.replace("T", " ").slice(0, 19),
    ]),
  );
}

function platformText(p: { os: string; architecture: string; variant?: string | undefined }): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ""}`;
}

export function humanBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** `run`'s warm snapshots of images no longer in the store go with them (src/workspace/warm.ts). */
async function dropWarmOfRemovedImages(stateDir: string): Promise<void> {
  const left = new Set((await listImages({ stateDir })).map((i) => i.manifestDigest));
  await dropWarmExcept(stateDir, left).catch(() => 0);
}

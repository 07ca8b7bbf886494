/**
 * Reading an image archive (`docker save`, or an OCI layout in a tar) for `image load`, with the
 * project's own bounded tar reader (rootfs/tar.ts). The archive is read once: every regular file is
 * streamed into a temp file beside the blob store and hashed while it is written, so a layer that
 * turns out to be referenced moves into the store by rename, not by a second copy. Names are kept
 * as archive paths and resolved here, lexically: nothing is ever extracted by the archive's own
 * names, so `../` entries and links cannot reach outside the temp directory.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { isMicroagentError } from "../contract/errors.ts";
import { readTar } from "../rootfs/tar.ts";
import { ImageErrors } from "./errors.ts";

/** A regular file of the archive, as written to the temp dir. */
export interface ArchiveFile {
  /** Where its bytes are (inside the load's temp dir). */
  path: string;
  /** sha256 of the bytes, computed while writing. */
  digest: string;
  size: number;
}

type Node = { kind: "file"; file: ArchiveFile } | { kind: "symlink"; target: string } | { kind: "hardlink"; target: string } | { kind: "dir" } | { kind: "other"; type: string };

/** More entries than any image archive holds (one config + one dir and file per layer). */
const MAX_ENTRIES = 100_000;
/** Symlinks followed while resolving one name (as Linux's MAXSYMLINKS). */
const MAX_HOPS = 40;

export class ImageArchive {
  readonly source: string;
  private readonly nodes = new Map<string, Node>();

  private constructor(source: string) {
    this.source = source;
  }

  /**
   * Read `archivePath`, writing each regular file into `tempDir` (which must exist and be private).
   * Refuses absolute or `..` entry names, a damaged or truncated archive, and more than MAX_ENTRIES.
   */
  static async read(archivePath: string, tempDir: string): Promise<ImageArchive> {
    const archive = new ImageArchive(archivePath);
    let count = 0;
    try {
      for await (const { entry, body } of readTar(createReadStream(archivePath), archivePath)) {
        if (++count > MAX_ENTRIES) throw archive.invalid(`holds more than ${MAX_ENTRIES} entries`);
        const name = archive.entryName(entry.path);
        if (name === "") continue; // "./" itself
        if (entry.type === "file") archive.nodes.set(name, { kind: "file", file: await writeEntry(join(tempDir, String(count)), body()) });
        else if (entry.type === "symlink") archive.nodes.set(name, { kind: "symlink", target: entry.linkpath });
        else if (entry.type === "hardlink") archive.nodes.set(name, { kind: "hardlink", target: entry.linkpath });
        else if (entry.type === "dir") archive.nodes.set(name, { kind: "dir" });
        else archive.nodes.set(name, { kind: "other", type: entry.type });
      }
    } catch (e) {
      // The tar reader's refusals name the archive and the offset; they become load refusals here.
      if (isMicroagentError(e) && e.code.startsWith("ROOTFS_LAYER_"))
        throw ImageErrors.IMAGE_LOAD_INVALID({ message: `${archivePath} is not a readable tar archive: ${e.message}`, cause: e, details: { path: archivePath } });
      throw e;
    }
    return archive;
  }

  /** True when `name` resolves to a regular file of the archive. */
  has(name: string): boolean {
    try {
      this.file(name);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * The regular file `name` (relative to the archive's root) resolves to, following symlinks and
   * hard links inside the archive. A name or link leading outside the archive, an absolute link, a
   * link loop and a missing file are IMAGE_LOAD_INVALID naming the archive.
   */
  file(name: string): ArchiveFile {
    const outside = (why: string) => ImageErrors.IMAGE_LOAD_INVALID({ message: `${this.source}: ${name} points outside the image (${why})`, details: { path: name } });
    const missing = (what: string) => ImageErrors.IMAGE_LOAD_INVALID({ message: `${this.source} refers to ${name}, which it does not contain${what}`, details: { path: name } });
    let parts = splitInside(name, "");
    if (parts === undefined) throw outside("a path above the archive's root");
    let hops = 0;
    // Walk the components; a symlink anywhere on the way is replaced by its target.
    for (let i = 0; i < parts.length; i++) {
      const prefix = parts.slice(0, i + 1).join("/");
      const node = this.nodes.get(prefix);
      // Archives often omit directory entries: a missing directory is implied by the names below it.
      if (node === undefined && i < parts.length - 1) continue;
      if (node === undefined) throw missing("");
      if (node.kind === "symlink" || node.kind === "hardlink") {
        if (++hops > MAX_HOPS) throw missing(` (more than ${MAX_HOPS} links on the way: a loop)`);
        if (node.target.startsWith("/")) throw outside(`${prefix} is an absolute link to ${node.target}`);
        // A symlink's target is relative to its directory; a hard link names an archive path.
        const base = node.kind === "symlink" ? parts.slice(0, i).join("/") : "";
        const target = splitInside(node.target, base);
        if (target === undefined) throw outside(`${prefix} links to ${node.target}`);
        parts = [...target, ...parts.slice(i + 1)];
        i = -1;
        continue;
      }
      if (i === parts.length - 1) {
        if (node.kind !== "file") throw missing(` as a regular file (it is a ${node.kind === "other" ? node.type : node.kind})`);
        return node.file;
      }
      if (node.kind !== "dir") throw missing("");
    }
    throw missing("");
  }

  private entryName(path: string): string {
    const parts = splitInside(path, "");
    if (path.startsWith("/") || parts === undefined) throw this.invalid(`holds the entry ${JSON.stringify(path)}, which leads outside the archive`);
    return parts.join("/");
  }

  private invalid(what: string): Error {
    return ImageErrors.IMAGE_LOAD_INVALID({ message: `${this.source} ${what}`, details: { path: this.source } });
  }
}

/** `rel` resolved against `base` as archive-path components, or undefined when it climbs above the root. */
function splitInside(rel: string, base: string): string[] | undefined {
  const out: string[] = [];
  for (const c of `${base}/${rel}`.split("/")) {
    if (c === "" || c === ".") continue;
    if (c !== "..") out.push(c);
    else if (out.pop() === undefined) return undefined;
  }
  return out;
}

/** Write one entry's body to `path`, hashing it as it goes. */
async function writeEntry(path: string, body: AsyncIterable<Buffer>): Promise<ArchiveFile> {
  const fh = await open(path, "wx", 0o600);
  const hash = createHash("sha256");
  let size = 0;
  try {
    for await (const chunk of body) {
      hash.update(chunk);
      size += chunk.length;
      await fh.write(chunk);
    }
  } finally {
    await fh.close();
  }
  return { path, digest: `sha256:${hash.digest("hex")}`, size };
}

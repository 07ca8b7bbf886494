/**
 * Apply image layers, bottom first, into a staging directory, safely against hostile layers.
 *
 * The staging tree holds only what any user can create: names, directories, regular files with
 * their content, symlinks, hard links, mtimes. Everything else an image says about an entry
 * (owner, the exact mode with setuid/setgid/sticky, device numbers, FIFOs, xattrs) is kept in a
 * metadata map and replayed on the ext4 image by debugfs (see script.ts), so the result is the
 * same whether microagent runs as root or not. Device nodes and FIFOs are staged as empty
 * placeholder files that the script replaces.
 *
 * Safety: entry names are normalized and refused when they contain `..` (paths.ts); every parent
 * component is checked with lstat inside the root and a symlink there is refused, so nothing is ever
 * written, linked or deleted through a symlink; files are created with O_EXCL|O_NOFOLLOW after the
 * old entry is removed, so a hard link never lets a layer rewrite another path's content.
 */
import {
  closeSync,
  constants,
  fchmodSync,
  futimesSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  rmdirSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  chmodSync,
  writeSync,
  type Stats,
} from "node:fs";
import { join } from "node:path";
import { CommonErrors, isMicroagentError } from "../contract/errors.ts";
import { RootfsErrors } from "./errors.ts";
import { normalizeEntryPath, OPAQUE_MARKER, WHITEOUT_PREFIX } from "./paths.ts";
import { readTar, type TarEntry, type TarLimits, DEFAULT_TAR_LIMITS } from "./tar.ts";

export type EntryKind = "file" | "dir" | "symlink" | "char" | "block" | "fifo";

/** What the image says about one path: the truth the ext4 must show. */
export interface EntryMeta {
  kind: EntryKind;
  /** Permission and special bits (07777). */
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch. */
  mtime: number;
  devmajor: number;
  devminor: number;
  xattrs: Array<[name: string, value: Buffer]>;
}

/** One path of the finished tree with the image's metadata and what the staging copy holds. */
export interface StagedEntry {
  /** Relative path, `/`-separated; "" is the root. */
  rel: string;
  meta: EntryMeta;
  /** Owner and permission bits of the staged copy (what `mke2fs -d` will record). */
  staged: { uid: number; gid: number; perm: number };
  /** Inode number in the staging fs (to count hard-linked content once). */
  ino: number;
  /** Bytes of content (regular files) or of the target (symlinks). */
  size: number;
}

export interface StagedTree {
  root: string;
  /** Every path, sorted (parents before children, siblings by byte order). */
  entries: StagedEntry[];
  /** Bytes of regular-file content, each inode counted once. */
  contentBytes: number;
}

const ROOT_META: EntryMeta = { kind: "dir", mode: 0o755, uid: 0, gid: 0, mtime: 0, devmajor: 0, devminor: 0, xattrs: [] };

/**
 * Permission bits of a staged copy: no setuid/setgid/sticky (an unprivileged chmod may silently drop
 * setgid, and the bits are restored by debugfs anyway), and always readable (files) or
 * readable/writable/searchable (directories) by the owner, so the builder and mke2fs can traverse
 * and read everything whatever the image says.
 */
export function stagedPerm(kind: EntryKind, mode: number): number {
  if (kind === "dir") return (mode & 0o777) | 0o700;
  if (kind === "symlink") return 0o777;
  if (kind === "file") return (mode & 0o777) | 0o600;
  return 0o600; // placeholders for device nodes and FIFOs
}

const O_CREATE_NEW = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

export class Stager {
  readonly root: string;
  private readonly limits: TarLimits;
  private readonly meta = new Map<string, EntryMeta>([["", ROOT_META]]);
  /** Relative paths checked to be real directories (never symlinks); cleared when anything is removed. */
  private knownDirs = new Set<string>([""]);
  /** Paths created by the layer being applied (whiteouts only hide lower layers' content). */
  private layerPaths = new Set<string>();
  private label = "";

  private readonly signal: AbortSignal | undefined;

  constructor(root: string, limits: TarLimits = DEFAULT_TAR_LIMITS, signal?: AbortSignal) {
    this.root = root;
    this.limits = limits;
    this.signal = signal;
    mkdirSync(root, { mode: 0o700 });
    this.caseInsensitive = probeCaseInsensitive(root);
  }

  /**
   * True when the staging directory is on a case-insensitive filesystem (macOS APFS/HFS+ by default):
   * there `usr/X` and `usr/x` are one file, which would silently merge two image paths. Such
   * collisions are refused instead (see checkCase).
   */
  readonly caseInsensitive: boolean;
  /** Case-folded path -> the path as the image spelled it (only when caseInsensitive). */
  private readonly folded = new Map<string, string>();

  private checkCase(rel: string, entryName: string): void {
    if (!this.caseInsensitive) return;
    const key = rel.toLowerCase();
    const seen = this.folded.get(key);
    if (seen !== undefined && seen !== rel && lstatOrUndefined(join(this.root, seen)))
      throw RootfsErrors.ROOTFS_LAYER_UNSUPPORTED({
        message: `layer ${this.label}: entry ${JSON.stringify(entryName)} and "${seen}" differ only in case, and the staging directory ${this.root} is on a case-insensitive filesystem`,
        remediation: "Pass --state-dir on a case-sensitive volume (on macOS: a case-sensitive APFS volume or disk image).",
        details: { layer: this.label, entry: entryName, other: seen },
      });
    this.folded.set(key, rel);
  }

  /** Apply one layer's uncompressed tar stream. `label` names it in errors (its digest). */
  async applyLayer(source: AsyncIterable<Uint8Array>, label: string): Promise<void> {
    this.label = label;
    this.layerPaths = new Set();
    for await (const { entry, body } of readTar(source, label, this.limits)) {
      if (this.signal?.aborted) throw CommonErrors.INTERRUPTED({ message: "the rootfs build was cancelled", cause: this.signal.reason });
      const norm = normalizeEntryPath(entry.path);
      if (!norm.ok) throw this.unsafe(entry.path, `the name ${norm.reason}`);
      const parts = norm.parts;
      const base = parts[parts.length - 1];
      if (base !== undefined && base.startsWith(WHITEOUT_PREFIX)) {
        const parent = parts.slice(0, -1);
        if (base === OPAQUE_MARKER) this.opaque(parent);
        else {
          // `.wh.`, `.wh..` and `.wh...` name no lower path: "", "." and ".." would hide the
          // directory itself or its parent (up to the build's work dir above the root).
          const target = base.slice(WHITEOUT_PREFIX.length);
          if (target === "" || target === "." || target === "..")
            throw this.unsafe(entry.path, `a whiteout of ${JSON.stringify(target)} names no file (only .wh.NAME and ${OPAQUE_MARKER} are whiteouts)`);
          this.whiteout([...parent, target]);
        }
        continue;
      }
      if (parts.length === 0) {
        // The root itself ("./"): only its metadata applies.
        if (entry.type !== "dir") throw this.unsafe(entry.path, "the image root must be a directory");
        this.meta.set("", metaOf(entry, "dir"));
        continue;
      }
      try {
        await this.applyEntry(parts, entry, body);
      } catch (e) {
        throw this.translate(e, entry.path);
      }
    }
  }

  /**
   * The one place filesystem errors from applying an entry become our errors: a full disk or a
   * permission problem is about the host; anything else (EEXIST, ENOTDIR, ENAMETOOLONG ...) means
   * the layer asked for something that cannot be, and names the entry.
   */
  private translate(e: unknown, entry: string): unknown {
    if (isMicroagentError(e)) return e;
    const err = e as NodeJS.ErrnoException;
    if (typeof err?.code !== "string") return e;
    if (err.code === "ENOSPC" || err.code === "EDQUOT")
      return CommonErrors.DISK_FULL({ message: `no space left while staging ${JSON.stringify(entry)} of layer ${this.label}`, cause: e });
    if (err.code === "EACCES" || err.code === "EPERM")
      return CommonErrors.PERMISSION_DENIED({ message: `staging ${JSON.stringify(entry)} of layer ${this.label}: ${err.message}`, cause: e });
    return this.invalid(entry, `cannot be applied (${err.code}: ${err.message.replace(this.root, "<root>")})`);
  }

  private async applyEntry(parts: string[], entry: TarEntry, body: () => AsyncGenerator<Buffer>): Promise<void> {
    const rel = parts.join("/");
    const abs = join(this.root, rel);
    this.ensureParents(parts, entry.path, true);
    this.checkCase(rel, entry.path);
    const existing = lstatOrUndefined(abs);
    this.layerPaths.add(rel);

    switch (entry.type) {
      case "dir": {
        if (existing && !existing.isDirectory()) this.removeExisting(abs, existing);
        if (!existing || !existing.isDirectory()) mkdirSync(abs, { mode: 0o700 });
        chmodSync(abs, stagedPerm("dir", entry.mode));
        this.knownDirs.add(rel);
        this.meta.set(rel, metaOf(entry, "dir"));
        return;
      }
      case "file": {
        if (existing) this.removeExisting(abs, existing);
        const fd = openSync(abs, O_CREATE_NEW, 0o600);
        try {
          for await (const chunk of body()) {
            let at = 0;
            while (at < chunk.length) at += writeSync(fd, chunk, at, chunk.length - at);
          }
          fchmodSync(fd, stagedPerm("file", entry.mode));
          futimesSync(fd, entry.mtime, entry.mtime);
        } finally {
          closeSync(fd);
        }
        this.meta.set(rel, metaOf(entry, "file"));
        return;
      }
      case "symlink": {
        if (existing) this.removeExisting(abs, existing);
        // The target is stored as data and never followed by the builder.
        symlinkSync(entry.linkpath, abs);
        lutimesSync(abs, entry.mtime, entry.mtime);
        this.meta.set(rel, metaOf(entry, "symlink"));
        return;
      }
      case "hardlink": {
        const target = normalizeEntryPath(entry.linkpath);
        if (!target.ok) throw this.unsafe(entry.path, `the hard link target ${JSON.stringify(entry.linkpath)} ${target.reason}`);
        if (target.parts.length === 0) throw this.unsafe(entry.path, "a hard link to the root directory");
        const targetRel = target.parts.join("/");
        this.ensureParents(target.parts, entry.path, false);
        const targetAbs = join(this.root, targetRel);
        const targetStat = lstatOrUndefined(targetAbs);
        if (!targetStat) throw this.invalid(entry.path, `hard link target ${JSON.stringify(entry.linkpath)} does not exist`);
        if (targetStat.isDirectory()) throw this.unsafe(entry.path, `hard link to a directory (${JSON.stringify(entry.linkpath)})`);
        if (targetRel === rel) return; // a link to itself changes nothing
        if (existing) this.removeExisting(abs, existing);
        linkSync(targetAbs, abs);
        const targetMeta = this.meta.get(targetRel);
        this.meta.set(rel, targetMeta ? { ...targetMeta } : metaOf(entry, "file"));
        return;
      }
      case "char":
      case "block":
      case "fifo": {
        if (existing) this.removeExisting(abs, existing);
        closeSync(openSync(abs, O_CREATE_NEW, 0o600));
        futimesOnPath(abs, entry.mtime);
        this.meta.set(rel, metaOf(entry, entry.type));
        return;
      }
    }
  }

  /**
   * Make sure every parent of `parts` is a real directory inside the root. Missing parents are
   * created (with default metadata) when `create`, else refused. A symlink is always refused.
   */
  private ensureParents(parts: string[], entryName: string, create: boolean): void {
    for (let i = 1; i < parts.length; i++) {
      const rel = parts.slice(0, i).join("/");
      if (this.knownDirs.has(rel)) continue;
      const abs = join(this.root, rel);
      const st = lstatOrUndefined(abs);
      if (!st) {
        if (!create) throw this.invalid(entryName, `parent directory "${rel}" does not exist`);
        mkdirSync(abs, { mode: 0o755 | 0o700 });
        this.meta.set(rel, { ...ROOT_META });
        this.layerPaths.add(rel);
      } else if (st.isSymbolicLink()) {
        throw this.unsafe(entryName, `parent "${rel}" is a symlink; refusing to write through it`);
      } else if (!st.isDirectory()) {
        throw this.invalid(entryName, `parent "${rel}" is not a directory`);
      }
      this.knownDirs.add(rel);
    }
  }

  /**
   * Walk the parents of a whiteout without creating or following anything: false when one is
   * missing, not a directory, or a symlink. A whiteout names a lower-layer path; if its parent is
   * no longer a real directory in the tree (umoci emits `dir/.wh.child` after replacing `dir` by a
   * symlink), that lower path is already gone and there is nothing to delete. Deleting through the
   * symlink instead would let a layer remove files anywhere the link points.
   */
  private existingParent(parts: string[]): boolean {
    for (let i = 1; i < parts.length; i++) {
      const rel = parts.slice(0, i).join("/");
      if (this.knownDirs.has(rel)) continue;
      const st = lstatOrUndefined(join(this.root, rel));
      if (!st?.isDirectory()) return false;
      this.knownDirs.add(rel);
    }
    return true;
  }

  /** `.wh.NAME`: delete NAME as it came from lower layers. */
  private whiteout(parts: string[]): void {
    if (!this.existingParent(parts)) return;
    this.hideLower(parts.join("/"));
  }

  /** `.wh..wh..opq`: the directory's content from lower layers disappears; this layer's stays. */
  private opaque(dirParts: string[]): void {
    if (!this.existingParent([...dirParts, "x"])) return;
    const rel = dirParts.join("/");
    const st = lstatOrUndefined(join(this.root, rel));
    if (!st?.isDirectory()) return;
    for (const name of readdirSync(join(this.root, rel))) this.hideLower(rel === "" ? name : `${rel}/${name}`);
  }

  /** Remove `rel` and everything under it that the current layer did not create. */
  private hideLower(rel: string): void {
    const abs = join(this.root, rel);
    const st = lstatOrUndefined(abs);
    if (!st) return;
    if (st.isDirectory()) {
      for (const name of readdirSync(abs)) this.hideLower(`${rel}/${name}`);
      if (!this.layerPaths.has(rel) && readdirSync(abs).length === 0) {
        rmdirSync(abs);
        this.knownDirs = new Set([""]);
      }
      return;
    }
    if (!this.layerPaths.has(rel)) unlinkSync(abs);
  }

  private removeExisting(abs: string, st: Stats): void {
    if (st.isDirectory()) {
      rmSync(abs, { recursive: true, force: true });
      this.knownDirs = new Set([""]);
    } else {
      unlinkSync(abs);
    }
  }

  /**
   * Finish the tree: set directory mtimes (children first, since adding a child changes its
   * parent's mtime) and list every path with its metadata, sorted.
   */
  finish(): StagedTree {
    const entries: StagedEntry[] = [];
    const seenInodes = new Set<number>();
    let contentBytes = 0;
    const visit = (rel: string) => {
      const abs = rel === "" ? this.root : join(this.root, rel);
      const st = lstatSync(abs);
      const meta = this.meta.get(rel) ?? { ...ROOT_META };
      const entry: StagedEntry = {
        rel,
        meta,
        staged: { uid: st.uid, gid: st.gid, perm: st.mode & 0o7777 },
        ino: st.ino,
        size: st.isFile() || st.isSymbolicLink() ? st.size : 0,
      };
      entries.push(entry);
      if (st.isFile() && !seenInodes.has(st.ino)) {
        seenInodes.add(st.ino);
        contentBytes += st.size;
      }
      if (st.isDirectory()) {
        const names = readdirSync(abs).sort(compareBytes);
        for (const name of names) visit(rel === "" ? name : `${rel}/${name}`);
        lutimesSync(abs, meta.mtime, meta.mtime);
      }
    };
    visit("");
    return { root: this.root, entries, contentBytes };
  }

  private unsafe(entry: string, what: string): Error {
    return RootfsErrors.ROOTFS_LAYER_UNSAFE({
      message: `layer ${this.label}: entry ${JSON.stringify(entry)}: ${what}`,
      details: { layer: this.label, entry },
    });
  }

  private invalid(entry: string, what: string): Error {
    return RootfsErrors.ROOTFS_LAYER_INVALID({
      message: `layer ${this.label}: entry ${JSON.stringify(entry)}: ${what}`,
      details: { layer: this.label, entry },
    });
  }
}

function probeCaseInsensitive(root: string): boolean {
  const probe = join(root, ".case-probe-Aa");
  closeSync(openSync(probe, O_CREATE_NEW, 0o600));
  try {
    return lstatOrUndefined(join(root, ".CASE-PROBE-AA")) !== undefined;
  } finally {
    unlinkSync(probe);
  }
}

function metaOf(entry: TarEntry, kind: EntryKind): EntryMeta {
  return {
    kind,
    mode: entry.mode & 0o7777,
    uid: entry.uid,
    gid: entry.gid,
    mtime: entry.mtime,
    devmajor: entry.devmajor,
    devminor: entry.devminor,
    xattrs: entry.xattrs,
  };
}

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}

function futimesOnPath(path: string, mtime: number): void {
  lutimesSync(path, mtime, mtime);
}

/** Byte-order comparison of UTF-8 names (the order is part of the reproducible output). */
export function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

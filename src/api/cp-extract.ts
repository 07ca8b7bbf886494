/**
 * Extract a tar stream that came from a guest into a host directory, treating it as hostile: the
 * guest controls every byte. The rules are staging's (src/rootfs/stage.ts): names are normalized
 * and refused with `..` or when absolute; every parent is checked with lstat inside the destination
 * and a symlink there is refused, so nothing is ever written through a symlink; new content goes to
 * a temporary name created O_EXCL|O_NOFOLLOW and is renamed over the target (a rename replaces a
 * symlink, never follows it); hard links may only point at files this same stream wrote. Devices,
 * FIFOs and sockets are refused.
 *
 * Ownership: the files belong to the caller; only `preserveOwner` (root with `--archive`) applies
 * the archive's uid/gid. Without it setuid/setgid bits are dropped (they would apply to the
 * caller, not the owner they were set for). Directory modes and mtimes are applied last, deepest
 * first, so writing their children does not undo them.
 */
import { chmodSync, closeSync, constants, fchmodSync, fchownSync, futimesSync, lchownSync, linkSync, lstatSync, lutimesSync, mkdirSync, openSync, renameSync, rmdirSync, symlinkSync, unlinkSync, utimesSync, writeSync, chownSync, type Stats } from "node:fs";
import { dirname, join } from "node:path";
import { randomBytes } from "node:crypto";
import { isMicroagentError } from "../contract/errors.ts";
import { RootfsErrors } from "../rootfs/errors.ts";
import { normalizeEntryPath } from "../rootfs/paths.ts";
import { readTar } from "../rootfs/tar.ts";
import { CpErrors } from "./errors.ts";

export interface ExtractOptions {
  /** An existing directory on the host; every entry lands inside it. */
  destDir: string;
  /**
   * The archive's top-level name and the name it gets in destDir (docker's rename: `cp NAME:/a/x
   * ./y` archives `x/...` and writes `y/...`). Entries not under `from` are refused. Undefined:
   * the archive's names are used as they are (`SRC/.`).
   */
  rename?: { from: string; to: string };
  /** Apply the archive's uid/gid (and keep setuid/setgid). Only meaningful as root. */
  preserveOwner: boolean;
  /** Names the stream in errors, e.g. "ws:/etc". */
  label: string;
}

export interface ExtractResult {
  entries: number;
  bytes: number;
}

const O_CREATE_NEW = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

export async function extractTar(source: AsyncIterable<Uint8Array>, opts: ExtractOptions): Promise<ExtractResult> {
  const root = opts.destDir;
  const knownDirs = new Set<string>([""]);
  /** Files this stream wrote (hard-link targets). */
  const written = new Set<string>();
  const dirs: Array<{ rel: string; mode: number; mtime: number; uid: number; gid: number }> = [];
  let entries = 0;
  let bytes = 0;
  const unsafe = (entry: string, what: string) =>
    CpErrors.CP_ARCHIVE_UNSAFE({ message: `${opts.label}: entry ${JSON.stringify(entry)} ${what}; nothing more was written`, details: { entry, destination: root } });

  /** The destination-relative parts of an entry name (or, with `link`, of a hard link's target). */
  const mapName = (raw: string, entry: string, link = false): string[] => {
    const what = link ? `has the hard link target ${JSON.stringify(raw)}, which` : "";
    const subject = (text: string) => (link ? `${what} ${text}` : text);
    if (raw.startsWith("/")) throw unsafe(entry, subject("is an absolute path"));
    const norm = normalizeEntryPath(raw);
    if (!norm.ok) throw unsafe(entry, link ? subject(norm.reason) : `has a name that ${norm.reason}`);
    const parts = norm.parts;
    if (!opts.rename) return parts;
    if (parts[0] !== opts.rename.from) throw unsafe(entry, subject(`is outside the requested ${JSON.stringify(opts.rename.from)}`));
    return [opts.rename.to, ...parts.slice(1)];
  };

  const ensureParents = (parts: string[], entry: string) => {
    for (let i = 1; i < parts.length; i++) {
      const rel = parts.slice(0, i).join("/");
      if (knownDirs.has(rel)) continue;
      const st = lstatOrUndefined(join(root, rel));
      if (!st) {
        mkdirSync(join(root, rel), { mode: 0o700 });
        dirs.push({ rel, mode: 0o755, mtime: Date.now() / 1000, uid: -1, gid: -1 });
      } else if (st.isSymbolicLink()) throw unsafe(entry, `would be written through the symlink ${JSON.stringify(rel)}`);
      else if (!st.isDirectory()) throw CpErrors.CP_TYPE_CONFLICT({ message: `${join(root, rel)} is not a directory, but ${opts.label} has ${JSON.stringify(entry)} below it`, details: { path: join(root, rel) } });
      knownDirs.add(rel);
    }
  };

  /** Put a finished temporary entry in place of `abs` (never over a directory). */
  const place = (tmp: string, abs: string, existing: Stats | undefined, entry: string) => {
    if (existing?.isDirectory()) {
      rmTmp(tmp);
      throw CpErrors.CP_TYPE_CONFLICT({ message: `cannot overwrite the directory ${abs} with the non-directory ${JSON.stringify(entry)}`, details: { path: abs } });
    }
    renameSync(tmp, abs);
  };

  try {
    for await (const { entry, body } of readTar(source, opts.label)) {
      const parts = mapName(entry.path, entry.path);
      if (parts.length === 0) continue; // "./": the source directory itself (its contents were asked for)
      const rel = parts.join("/");
      const abs = join(root, rel);
      ensureParents(parts, entry.path);
      const existing = lstatOrUndefined(abs);
      const mode = opts.preserveOwner ? entry.mode : entry.mode & ~0o6000;
      entries++;
      switch (entry.type) {
        case "dir": {
          if (existing && !existing.isDirectory())
            throw CpErrors.CP_TYPE_CONFLICT({ message: `cannot overwrite the non-directory ${abs} with the directory ${JSON.stringify(entry.path)}`, details: { path: abs } });
          if (!existing) mkdirSync(abs, { mode: 0o700 });
          else chmodSync(abs, 0o700 | (existing.mode & 0o777)); // writable for the children, restored below
          knownDirs.add(rel);
          dirs.push({ rel, mode, mtime: entry.mtime, uid: entry.uid, gid: entry.gid });
          break;
        }
        case "file": {
          const tmp = tmpName(abs);
          const fd = openSync(tmp, O_CREATE_NEW, 0o600);
          try {
            for await (const chunk of body()) {
              let at = 0;
              while (at < chunk.length) at += writeSync(fd, chunk, at, chunk.length - at);
              bytes += chunk.length;
            }
            if (opts.preserveOwner) fchownSync(fd, entry.uid, entry.gid);
            fchmodSync(fd, mode);
            futimesSync(fd, entry.mtime, entry.mtime);
          } catch (e) {
            closeSync(fd);
            rmTmp(tmp);
            throw e;
          }
          closeSync(fd);
          place(tmp, abs, existing, entry.path);
          written.add(rel);
          break;
        }
        case "symlink": {
          const tmp = tmpName(abs);
          // The target is data: it is stored, never followed (it may well point outside).
          symlinkSync(entry.linkpath, tmp);
          if (opts.preserveOwner) lchownSync(tmp, entry.uid, entry.gid);
          lutimesSync(tmp, entry.mtime, entry.mtime);
          place(tmp, abs, existing, entry.path);
          break;
        }
        case "hardlink": {
          const target = mapName(entry.linkpath, entry.path, true).join("/");
          if (!written.has(target)) throw unsafe(entry.path, `is a hard link to ${JSON.stringify(entry.linkpath)}, which is not a file this copy wrote`);
          const tmp = tmpName(abs);
          linkSync(join(root, target), tmp);
          place(tmp, abs, existing, entry.path);
          written.add(rel);
          break;
        }
        default:
          throw CpErrors.CP_UNSUPPORTED_FILE_TYPE({
            message: `${opts.label}: ${JSON.stringify(entry.path)} is a ${entry.type === "fifo" ? "FIFO" : `${entry.type} device`}; cp copies regular files, directories and symlinks only (nothing more was written)`,
            details: { entry: entry.path },
          });
      }
    }
  } catch (e) {
    throw translate(e, opts.label, root);
  } finally {
    // Deepest first: a parent's mtime is set after its children are final. Runs after a failure
    // too, so a refused copy does not leave directories at 0700.
    for (const d of dirs.reverse()) {
      try {
        const abs = join(root, d.rel);
        const st = lstatSync(abs);
        if (!st.isDirectory()) continue;
        if (opts.preserveOwner && d.uid >= 0) chownSync(abs, d.uid, d.gid);
        chmodSync(abs, d.mode);
        utimesSync(abs, d.mtime, d.mtime);
      } catch {
        /* best effort; the entry error (if any) is what the caller needs */
      }
    }
  }
  return { entries, bytes };
}

function tmpName(abs: string): string {
  return join(dirname(abs), `.microagent-cp-${randomBytes(6).toString("hex")}`);
}

function rmTmp(tmp: string): void {
  try {
    const st = lstatSync(tmp);
    if (st.isDirectory()) rmdirSync(tmp);
    else unlinkSync(tmp);
  } catch {
    /* already gone */
  }
}

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}

function translate(e: unknown, label: string, root: string): unknown {
  if (isMicroagentError(e)) {
    if (RootfsErrors.ROOTFS_LAYER_INVALID.is(e) || RootfsErrors.ROOTFS_LAYER_UNSUPPORTED.is(e) || RootfsErrors.ROOTFS_LAYER_UNSAFE.is(e))
      return CpErrors.CP_ARCHIVE_INVALID({ message: e.message.replace(/^layer /, "archive from "), details: { source: label }, cause: e });
    return e;
  }
  const err = e as NodeJS.ErrnoException;
  if (err.code === "ENOSPC" || err.code === "EDQUOT")
    return CpErrors.CP_DISK_FULL({ message: `no space left on the host while copying ${label} into ${root}`, details: { destination: root, side: "host" }, cause: e });
  if (err.code === "EACCES" || err.code === "EPERM")
    return CpErrors.CP_PERMISSION_DENIED({ message: `writing into ${root} on the host: ${err.message}`, details: { destination: root }, cause: e });
  return e;
}

/**
 * A streaming tar writer for host trees (what `cp` sends into a guest): ustar headers, with a PAX
 * extended header only for what ustar cannot hold (long names or link targets, ids beyond 7 octal
 * digits, sizes beyond 8 GiB, mtimes before 1970 or beyond 11 octal digits). Regular files,
 * directories, symlinks and hard links; anything else (devices, FIFOs, sockets) is refused while
 * the tree is planned, before a byte is sent, so a guest never receives half a copy because of it.
 *
 * Bounded: the plan holds one small record per entry; content is read in 64 KiB pieces and yielded
 * as it is read, so a consumer that stops pulling stops the reads (exec stdin is flow controlled).
 */
import { constants, lstatSync, readdirSync, readlinkSync, statSync, type Stats } from "node:fs";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { Buffer } from "node:buffer";
import { CpErrors } from "./errors.ts";

const BLOCK = 512;
const READ_BYTES = 64 * 1024;

export type PackType = "file" | "dir" | "symlink" | "hardlink";

/** One header's worth of metadata. */
export interface TarHeader {
  /** Archive path, `/`-separated, relative; directories get their trailing `/` added here. */
  name: string;
  type: PackType;
  /** Permission and special bits (07777). */
  mode: number;
  uid: number;
  gid: number;
  /** Content bytes (files only). */
  size: number;
  /** Seconds since the epoch (may be fractional; whole seconds in ustar, exact in PAX when needed). */
  mtime: number;
  /** Target of a symlink or hard link. */
  linkpath?: string;
}

/** A planned entry: the header plus where its content comes from. */
export interface PackEntry extends TarHeader {
  /** Host path of the content (files) or of the entry (for error messages). */
  source: string;
  /** The inode, to check the file read is the one planned. */
  ino: number;
}

const OCTAL_MAX = (digits: number) => 8 ** digits - 1;

function octal(buf: Buffer, at: number, length: number, value: number): void {
  // length-1 digits, NUL terminated, zero padded (as GNU tar writes them).
  buf.write(Math.trunc(value).toString(8).padStart(length - 1, "0") + "\0", at, length, "latin1");
}

/** A PAX record "<len> <key>=<value>\n", where len counts the whole record including itself. */
export function paxRecord(key: string, value: string): Buffer {
  const body = ` ${key}=${value}\n`;
  const bodyBytes = Buffer.byteLength(body);
  let len = bodyBytes + 1;
  while (String(len).length + bodyBytes !== len) len = String(len).length + bodyBytes;
  return Buffer.from(`${len}${body}`, "utf8");
}

/** Split a long name at a `/` into ustar's prefix (155) and name (100), or undefined when none fits. */
function splitUstar(name: string): [prefix: string, rest: string] | undefined {
  const bytes = Buffer.from(name);
  if (bytes.length <= 100) return ["", name];
  for (let i = bytes.length - 1; i > 0; i--) {
    if (bytes[i] !== 0x2f) continue;
    if (i > 155) continue;
    if (bytes.length - i - 1 > 100) return undefined;
    if (bytes.length - i - 1 === 0) return undefined;
    return [bytes.subarray(0, i).toString("utf8"), bytes.subarray(i + 1).toString("utf8")];
  }
  return undefined;
}

function rawHeader(fields: { name: string; prefix: string; typeflag: string; mode: number; uid: number; gid: number; size: number; mtime: number; linkpath: string }): Buffer {
  const b = Buffer.alloc(BLOCK);
  b.write(fields.name, 0, 100, "utf8");
  octal(b, 100, 8, fields.mode);
  octal(b, 108, 8, fields.uid);
  octal(b, 116, 8, fields.gid);
  octal(b, 124, 12, fields.size);
  octal(b, 136, 12, fields.mtime);
  b.write(fields.typeflag, 156, 1, "latin1");
  b.write(fields.linkpath, 157, 100, "utf8");
  b.write("ustar\0", 257, 6, "latin1");
  b.write("00", 263, 2, "latin1");
  b.write(fields.prefix, 345, 155, "utf8");
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i] as number;
  b.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, 8, "latin1");
  return b;
}

const TYPEFLAG: Record<PackType, string> = { file: "0", hardlink: "1", symlink: "2", dir: "5" };

/** The header block(s) of one entry: a PAX `x` header first when ustar cannot hold it exactly. */
export function encodeHeader(h: TarHeader): Buffer {
  const name = h.type === "dir" && !h.name.endsWith("/") ? `${h.name}/` : h.name;
  const linkpath = h.linkpath ?? "";
  const records: Buffer[] = [];
  const split = splitUstar(name);
  if (!split) records.push(paxRecord("path", name));
  if (Buffer.byteLength(linkpath) > 100) records.push(paxRecord("linkpath", linkpath));
  const idMax = OCTAL_MAX(7);
  if (h.uid > idMax) records.push(paxRecord("uid", String(h.uid)));
  if (h.gid > idMax) records.push(paxRecord("gid", String(h.gid)));
  if (h.size > OCTAL_MAX(11)) records.push(paxRecord("size", String(h.size)));
  const mtime = Math.floor(h.mtime);
  if (mtime < 0 || mtime > OCTAL_MAX(11)) records.push(paxRecord("mtime", String(mtime)));
  const header = rawHeader({
    // A name that needed PAX keeps a truncated copy in ustar (readers that ignore PAX still see something).
    name: split ? split[1] : Buffer.from(name).subarray(0, 100).toString("latin1"),
    prefix: split ? split[0] : "",
    typeflag: TYPEFLAG[h.type],
    mode: h.mode & 0o7777,
    uid: h.uid > idMax ? 0 : h.uid,
    gid: h.gid > idMax ? 0 : h.gid,
    size: h.size > OCTAL_MAX(11) ? 0 : h.size,
    mtime: mtime < 0 || mtime > OCTAL_MAX(11) ? 0 : mtime,
    linkpath: Buffer.byteLength(linkpath) > 100 ? Buffer.from(linkpath).subarray(0, 100).toString("latin1") : linkpath,
  });
  if (records.length === 0) return header;
  const data = Buffer.concat(records);
  const paxName = `PaxHeaders/${name.replace(/\/$/, "").split("/").pop() ?? ""}`;
  const pax = rawHeader({ name: Buffer.from(paxName).subarray(0, 100).toString("latin1"), prefix: "", typeflag: "x", mode: 0o644, uid: 0, gid: 0, size: data.length, mtime: 0, linkpath: "" });
  return Buffer.concat([pax, data, Buffer.alloc(padding(data.length)), header]);
}

function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

export interface PlanOptions {
  /** Follow `src` itself when it is a symlink (`cp -L`); symlinks below it are always copied as links. */
  followTop?: boolean;
  /** Archive the directory's children directly (`SRC/.`) instead of the directory under `topName`. */
  contentsOnly?: boolean;
  /** Owner written for every entry; the host's ids when undefined (`--archive`). */
  owner?: { uid: number; gid: number };
}

/**
 * Walk `src` (without following symlinks below it) and list what will be archived under `topName`,
 * in the order it will be written: a directory before its children, siblings in byte order. Hard
 * links to a file already listed become `hardlink` entries. Refuses special files up front.
 */
export function planHostTree(src: string, topName: string, opts: PlanOptions = {}): PackEntry[] {
  const out: PackEntry[] = [];
  const seen = new Map<string, string>();
  const top = statOf(src, opts.followTop ?? false);
  const add = (abs: string, name: string, st: Stats) => {
    const owner = opts.owner ?? { uid: st.uid, gid: st.gid };
    const base = { name, mode: st.mode & 0o7777, uid: owner.uid, gid: owner.gid, mtime: st.mtimeMs / 1000, source: abs, ino: st.ino, size: 0 };
    if (st.isSymbolicLink()) {
      out.push({ ...base, type: "symlink", linkpath: readLink(abs) });
    } else if (st.isDirectory()) {
      if (name !== "") out.push({ ...base, type: "dir" });
      let children: string[];
      try {
        children = readdirSync(abs);
      } catch (e) {
        throw sourceError(e, abs);
      }
      children.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
      for (const c of children) add(join(abs, c), name === "" ? c : `${name}/${c}`, statOf(join(abs, c), false));
    } else if (st.isFile()) {
      const key = `${st.dev}:${st.ino}`;
      const first = st.nlink > 1 ? seen.get(key) : undefined;
      if (first !== undefined) out.push({ ...base, type: "hardlink", linkpath: first });
      else {
        if (st.nlink > 1) seen.set(key, name);
        out.push({ ...base, type: "file", size: st.size });
      }
    } else {
      const kind = st.isCharacterDevice() ? "a character device" : st.isBlockDevice() ? "a block device" : st.isFIFO() ? "a FIFO" : st.isSocket() ? "a socket" : "a special file";
      throw CpErrors.CP_UNSUPPORTED_FILE_TYPE({
        message: `${abs} is ${kind}; cp copies regular files, directories and symlinks only`,
        details: { path: abs },
      });
    }
  };
  if (opts.contentsOnly && !top.isDirectory()) {
    throw CpErrors.CP_NOT_A_DIRECTORY({ message: `${src} is not a directory, so ${src}/. names no contents to copy`, details: { path: src } });
  }
  add(src, opts.contentsOnly ? "" : topName, top);
  return out;
}

function statOf(path: string, follow: boolean): Stats {
  try {
    return follow ? statSync(path) : lstatSync(path);
  } catch (e) {
    throw sourceError(e, path);
  }
}

function readLink(path: string): string {
  try {
    return readlinkSync(path, "utf8");
  } catch (e) {
    throw sourceError(e, path);
  }
}

function sourceError(e: unknown, path: string): Error {
  const err = e as NodeJS.ErrnoException;
  if (err.code === "ENOENT") return CpErrors.CP_SOURCE_NOT_FOUND({ message: `${path}: no such file or directory on the host`, details: { path }, cause: e });
  if (err.code === "EACCES" || err.code === "EPERM") return CpErrors.CP_PERMISSION_DENIED({ message: `${path} cannot be read: ${err.code}`, details: { path }, cause: e });
  return e as Error;
}

/**
 * The archive bytes of a plan: headers, content read as it is sent, and the two zero blocks.
 * `repeatDirs` writes every directory header again at the end, deepest first: busybox tar sets a
 * directory's mtime when it meets the entry, and the children written after it change it again;
 * meeting the entry a second time sets it for good (GNU tar, which defers it, just sets it twice).
 */
export async function* writeTar(entries: readonly PackEntry[], opts: { repeatDirs?: boolean } = {}): AsyncGenerator<Buffer> {
  for (const e of entries) {
    yield encodeHeader(e);
    if (e.type !== "file" || e.size === 0) continue;
    yield* fileContent(e);
    const pad = padding(e.size);
    if (pad) yield Buffer.alloc(pad);
  }
  if (opts.repeatDirs) for (const e of [...entries].reverse()) if (e.type === "dir") yield encodeHeader(e);
  yield Buffer.alloc(BLOCK * 2);
}

async function* fileContent(e: PackEntry): AsyncGenerator<Buffer> {
  let fh;
  try {
    // O_NOFOLLOW: a file swapped for a symlink since the plan is refused, not followed.
    fh = await open(e.source, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    throw changed(e, `cannot be opened (${(err as NodeJS.ErrnoException).code ?? String(err)})`, err);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.ino !== e.ino) throw changed(e, "was replaced by another file");
    let left = e.size;
    while (left > 0) {
      const buf = Buffer.allocUnsafe(Math.min(READ_BYTES, left));
      const { bytesRead } = await fh.read(buf, 0, buf.length, e.size - left);
      if (bytesRead === 0) throw changed(e, `shrank while being copied (${e.size - left} of ${e.size} bytes read)`);
      left -= bytesRead;
      yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
    }
    // A file that grew is copied as it was planned (its first `size` bytes), like tar does.
  } finally {
    await fh.close();
  }
}

function changed(e: PackEntry, what: string, cause?: unknown): Error {
  return CpErrors.CP_SOURCE_CHANGED({ message: `${e.source} ${what}`, details: { path: e.source }, ...(cause ? { cause } : {}) });
}

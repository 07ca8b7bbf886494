/**
 * A deterministic writer for the "newc" cpio format (the format the Linux kernel unpacks as an
 * initramfs, `070701` magic). Deterministic: entries are sorted by path, every parent directory is
 * emitted before its children, owners are root, mtimes are a fixed value and inode numbers are
 * assigned in order, so the same inputs always produce the same bytes (and the same sha256).
 *
 * Layout of one entry (see the kernel's Documentation/driver-api/early-userspace/buffer-format.rst):
 * a 110-byte ASCII header of 13 eight-digit hex fields after the magic, the NUL-terminated name,
 * padding to a 4-byte boundary, the data, padding to a 4-byte boundary. The archive ends with an
 * entry named "TRAILER!!!".
 */

export interface CpioEntry {
  /** Path inside the archive, without a leading "/" (e.g. "lib/modules/load-order"). */
  path: string;
  type: "file" | "dir" | "symlink" | "chardev";
  /** Permission bits (e.g. 0o755); default 0o755 for dirs and 0o644 for files. */
  mode?: number;
  /** File contents, or the symlink target. */
  data?: Buffer | string;
  /** Device number of a chardev entry. */
  rdevMajor?: number;
  rdevMinor?: number;
}

export interface CpioOptions {
  /** The mtime of every entry (seconds since the epoch); default 0. */
  mtime?: number;
}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

/** Build the archive. Throws on duplicate or unsafe paths. */
export function writeCpio(entries: readonly CpioEntry[], opts: CpioOptions = {}): Buffer {
  const mtime = opts.mtime ?? 0;
  const byPath = new Map<string, CpioEntry>();
  for (const e of entries) {
    const path = normalize(e.path);
    if (byPath.has(path)) throw new Error(`cpio: duplicate path ${path}`);
    byPath.set(path, { ...e, path });
  }
  // Parent directories the caller did not list are added, so the kernel can create every file.
  for (const path of [...byPath.keys()]) {
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      const existing = byPath.get(dir);
      if (!existing) byPath.set(dir, { path: dir, type: "dir" });
      else if (existing.type !== "dir") throw new Error(`cpio: ${dir} is both a ${existing.type} and a parent directory`);
    }
  }
  // Sorting the full paths puts every directory before its contents ("a" < "a/b").
  const sorted = [...byPath.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const chunks: Buffer[] = [];
  let ino = 1;
  for (const e of sorted) {
    const data = e.type === "dir" || e.type === "chardev" ? Buffer.alloc(0) : toBuffer(e.data);
    const perm = (e.mode ?? (e.type === "dir" ? 0o755 : e.type === "symlink" ? 0o777 : e.type === "chardev" ? 0o600 : 0o644)) & 0o7777;
    const typeBits = { dir: S_IFDIR, symlink: S_IFLNK, chardev: S_IFCHR, file: S_IFREG }[e.type];
    const rdev = e.type === "chardev" ? { rdevMajor: e.rdevMajor ?? 0, rdevMinor: e.rdevMinor ?? 0 } : { rdevMajor: 0, rdevMinor: 0 };
    chunks.push(...entryChunks(e.path, { ino: ino++, mode: typeBits | perm, nlink: e.type === "dir" ? 2 : 1, mtime, data, ...rdev }));
  }
  chunks.push(...entryChunks("TRAILER!!!", { ino: 0, mode: 0, nlink: 1, mtime: 0, data: Buffer.alloc(0), rdevMajor: 0, rdevMinor: 0 }));
  return Buffer.concat(chunks);
}

interface Header {
  ino: number;
  mode: number;
  nlink: number;
  mtime: number;
  data: Buffer;
  rdevMajor: number;
  rdevMinor: number;
}

function entryChunks(name: string, h: Header): Buffer[] {
  const nameBytes = Buffer.from(`${name}\0`, "utf8");
  const fields = [
    h.ino, // c_ino
    h.mode, // c_mode
    0, // c_uid
    0, // c_gid
    h.nlink, // c_nlink
    h.mtime, // c_mtime
    h.data.length, // c_filesize
    0, // c_devmajor
    0, // c_devminor
    h.rdevMajor, // c_rdevmajor
    h.rdevMinor, // c_rdevminor
    nameBytes.length, // c_namesize (includes the NUL)
    0, // c_check (unused in newc)
  ];
  const header = Buffer.from(`070701${fields.map(hex8).join("")}`, "ascii");
  return [header, nameBytes, pad(header.length + nameBytes.length), h.data, pad(h.data.length)];
}

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`cpio: field value ${n} does not fit in 32 bits`);
  return n.toString(16).toUpperCase().padStart(8, "0");
}

function pad(length: number): Buffer {
  return Buffer.alloc((4 - (length % 4)) % 4);
}

function toBuffer(data: Buffer | string | undefined): Buffer {
  if (data === undefined) return Buffer.alloc(0);
  return typeof data === "string" ? Buffer.from(data, "utf8") : data;
}

function normalize(path: string): string {
  const p = path.replace(/^\/+/, "").replace(/\/+$/, "");
  if (p === "" || p.split("/").some((s) => s === "" || s === "." || s === "..")) throw new Error(`cpio: unsafe path ${JSON.stringify(path)}`);
  if (p === "TRAILER!!!") throw new Error("cpio: TRAILER!!! is reserved");
  return p;
}

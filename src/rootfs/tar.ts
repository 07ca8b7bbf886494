/**
 * A streaming tar reader for image layers: ustar, GNU long names (`L`/`K`) and PAX extended headers
 * (`x`; `g` is validated and ignored), including `SCHILY.xattr.*` records. It only parses: applying
 * entries to disk is stage.ts's job.
 *
 * Written for hostile input: every header is checksummed, every number field is checked, the
 * extension headers are bounded before they are buffered, and a header that declares more data than
 * the stream holds fails with ROOTFS_LAYER_INVALID naming the entry ("truncated"), never a hang or a
 * silently short file. Body bytes are passed through in the chunks they arrived in (no concatenation).
 */
import { RootfsErrors } from "./errors.ts";
import { xattrNameProblem } from "./paths.ts";

export type TarEntryType = "file" | "hardlink" | "symlink" | "char" | "block" | "dir" | "fifo";

export interface TarEntry {
  /** The path as written in the archive (PAX/GNU long name applied), not yet normalized. */
  path: string;
  type: TarEntryType;
  /** Permission and special bits (07777). */
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of body data (0 for everything but regular files). */
  size: number;
  /** Seconds since the epoch (fraction dropped). */
  mtime: number;
  /** Target of a symlink or hard link. */
  linkpath: string;
  devmajor: number;
  devminor: number;
  /** Extended attributes from `SCHILY.xattr.<name>` PAX records, sorted by name. */
  xattrs: Array<[name: string, value: Buffer]>;
}

export interface TarLimits {
  /** Largest PAX or GNU long-name header accepted, in bytes. */
  maxExtensionBytes: number;
}

export const DEFAULT_TAR_LIMITS: TarLimits = { maxExtensionBytes: 1024 * 1024 };

const BLOCK = 512;

/**
 * Reads exact byte counts from an async iterator of chunks, keeping a list of chunks plus a byte
 * count and copying only when a read spans chunks.
 */
export class ByteReader {
  private readonly source: AsyncIterator<Uint8Array>;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  /** Bytes consumed so far (for error offsets). */
  offset = 0;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.source = source[Symbol.asyncIterator]();
  }

  /** Buffer at least n bytes; false when the stream ended first. */
  private async fill(n: number): Promise<boolean> {
    while (this.buffered < n && !this.ended) {
      const next = await this.source.next();
      if (next.done) {
        this.ended = true;
        break;
      }
      const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value);
      if (chunk.length === 0) continue;
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    return this.buffered >= n;
  }

  /** Exactly n bytes, or undefined when the stream ends before n bytes (bytes then still buffered). */
  async read(n: number): Promise<Buffer | undefined> {
    if (!(await this.fill(n))) return undefined;
    const first = this.chunks[0] as Buffer;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let at = 0;
      while (at < n) {
        const c = this.chunks[0] as Buffer;
        const take = Math.min(c.length, n - at);
        c.copy(out, at, 0, take);
        at += take;
        if (take === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(take);
      }
    }
    this.buffered -= n;
    this.offset += n;
    return out;
  }

  /** Yields exactly n bytes as they arrive; throws `truncated` (via onShort) when the stream ends early. */
  async *stream(n: number, onShort: (got: number) => Error): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.buffered === 0 && !(await this.fill(1))) throw onShort(n - left);
      const c = this.chunks[0] as Buffer;
      const take = Math.min(c.length, left);
      const piece = take === c.length ? c : c.subarray(0, take);
      if (take === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(take);
      this.buffered -= take;
      this.offset += take;
      left -= take;
      yield piece;
    }
  }

  /** Consume up to n bytes (fewer only at the end of the stream). */
  async skip(n: number): Promise<void> {
    await this.fill(n);
    const take = Math.min(n, this.buffered);
    if (take > 0) await this.read(take);
  }

  /** True when no byte is left (drains the source to find out). */
  async atEnd(): Promise<boolean> {
    return !(await this.fill(1));
  }
}

/** A header parse failure names the entry (when known) and the byte offset in the layer. */
function invalid(label: string, offset: number, what: string, entry?: string): Error {
  const name = entry === undefined ? "" : ` entry "${entry}"`;
  return RootfsErrors.ROOTFS_LAYER_INVALID({
    message: `layer ${label}:${name} ${what} (at byte ${offset})`,
    details: { layer: label, offset, ...(entry === undefined ? {} : { entry }) },
  });
}

function unsupported(label: string, entry: string, what: string): Error {
  return RootfsErrors.ROOTFS_LAYER_UNSUPPORTED({
    message: `layer ${label}: entry "${entry}": ${what}`,
    details: { layer: label, entry },
  });
}

/** NUL-terminated field as bytes. */
function field(block: Buffer, start: number, length: number): Buffer {
  const slice = block.subarray(start, start + length);
  const nul = slice.indexOf(0);
  return nul === -1 ? slice : slice.subarray(0, nul);
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function decodeName(bytes: Buffer, label: string, offset: number): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw RootfsErrors.ROOTFS_LAYER_UNSUPPORTED({
      message: `layer ${label}: a file name is not valid UTF-8 (at byte ${offset}): ${JSON.stringify(bytes.toString("latin1"))}`,
      details: { layer: label, offset },
    });
  }
}

/**
 * A numeric field: octal ASCII (NUL/space padded) or GNU base-256 (high bit of the first byte set).
 * Returns undefined when the field is malformed, negative or beyond 2^53.
 */
export function parseNumber(bytes: Buffer): number | undefined {
  if (bytes.length === 0) return 0;
  const first = bytes[0] as number;
  if (first & 0x80) {
    if (first === 0xff) return undefined; // negative base-256
    let value = first & 0x7f;
    for (let i = 1; i < bytes.length; i++) {
      value = value * 256 + (bytes[i] as number);
      if (value > Number.MAX_SAFE_INTEGER) return undefined;
    }
    return value;
  }
  const nul = bytes.indexOf(0);
  const text = bytes.toString("latin1", 0, nul === -1 ? bytes.length : nul).trim();
  if (text === "") return 0;
  if (!/^[0-7]+$/.test(text)) return undefined;
  const value = parseInt(text, 8);
  return value > Number.MAX_SAFE_INTEGER ? undefined : value;
}

function checksumOk(block: Buffer): boolean {
  const stored = parseNumber(field(block, 148, 8));
  if (stored === undefined) return false;
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : (block[i] as number);
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  // Some old writers summed signed chars; both are accepted, as GNU tar does.
  return stored === unsigned || stored === signed;
}

interface Pax {
  path?: string;
  linkpath?: string;
  size?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  xattrs: Array<[string, Buffer]>;
  /**
   * The first xattr name that was refused (see script.ts xattrNameProblem), reported once the
   * entry it belongs to is known, so the error names the entry.
   */
  badXattr?: { name: string; problem: string };
}

function setXattr(list: Array<[string, Buffer]>, name: string, value: Buffer, override: boolean): void {
  const i = list.findIndex(([n]) => n === name);
  if (i === -1) list.push([name, value]);
  else if (override) list[i] = [name, value];
}

/**
 * PAX records: "<len> <key>=<value>\n", the length counting the whole record. Values stay bytes;
 * names (path, linkpath, xattr names) are decoded strictly as UTF-8.
 */
export function parsePax(data: Buffer, fail: (what: string) => Error, failNotUtf8?: (key: string, bytes: Buffer) => Error): Pax {
  const pax: Pax = { xattrs: [] };
  const notUtf8 = failNotUtf8 ?? ((key: string) => fail(`PAX ${key} is not valid UTF-8`));
  let at = 0;
  while (at < data.length) {
    if (data[at] === 0) break; // NUL padding after the last record
    const space = data.indexOf(0x20, at);
    if (space === -1 || space - at > 20) throw fail("malformed PAX record length");
    const lenText = data.toString("latin1", at, space);
    if (!/^[0-9]+$/.test(lenText)) throw fail("malformed PAX record length");
    const len = parseInt(lenText, 10);
    const end = at + len;
    if (len < space - at + 3 || end > data.length || data[end - 1] !== 0x0a) throw fail("malformed PAX record");
    const eq = data.indexOf(0x3d, space + 1);
    if (eq === -1 || eq >= end - 1) throw fail("malformed PAX record (no '=')");
    // Keys are compared as bytes (latin1 keeps them 1:1); the parts that become names are decoded strictly.
    const key = data.toString("latin1", space + 1, eq);
    const raw = data.subarray(eq + 1, end - 1);
    const text = () => raw.toString("latin1");
    const name = (bytes: Buffer, what: string) => {
      try {
        return utf8.decode(bytes);
      } catch {
        throw notUtf8(what, Buffer.from(bytes));
      }
    };
    const int = (what: string) => {
      const t = text();
      if (!/^[0-9]+$/.test(t)) throw fail(`malformed PAX ${what} ${JSON.stringify(t)}`);
      const n = parseInt(t, 10);
      if (n > Number.MAX_SAFE_INTEGER) throw fail(`PAX ${what} out of range`);
      return n;
    };
    const refuseXattr = (xname: string, problem: string) => {
      pax.badXattr ??= { name: xname, problem };
    };
    if (key === "path") pax.path = name(raw, "path");
    else if (key === "linkpath") pax.linkpath = name(raw, "linkpath");
    else if (key === "size") pax.size = int("size");
    else if (key === "uid") pax.uid = int("uid");
    else if (key === "gid") pax.gid = int("gid");
    else if (key === "mtime") {
      const m = /^(-?[0-9]+)(\.[0-9]*)?$/.exec(text());
      if (!m) throw fail(`malformed PAX mtime ${JSON.stringify(text())}`);
      pax.mtime = Math.max(0, parseInt(m[1] as string, 10));
    } else if (key.startsWith("SCHILY.xattr.")) {
      const keyBytes = data.subarray(space + 1 + "SCHILY.xattr.".length, eq);
      let xname: string | undefined;
      try {
        xname = utf8.decode(keyBytes);
      } catch {
        refuseXattr(keyBytes.toString("latin1"), "is not valid UTF-8");
      }
      if (xname !== undefined) {
        const problem = xattrNameProblem(xname);
        if (problem) refuseXattr(xname, problem);
        else setXattr(pax.xattrs, xname, Buffer.from(raw), true);
      }
    } else if (key.startsWith("LIBARCHIVE.xattr.")) {
      // bsdtar's form: URL-encoded name, base64 value. SCHILY's raw bytes win when both are present.
      const encoded = key.slice("LIBARCHIVE.xattr.".length);
      let xname: string | undefined;
      try {
        // The key is ASCII in a well-formed archive; decodeURIComponent refuses invalid UTF-8 escapes.
        xname = /^[\x20-\x7e]*$/.test(encoded) ? decodeURIComponent(encoded) : undefined;
      } catch {
        xname = undefined;
      }
      if (xname === undefined) refuseXattr(encoded, "is not a valid URL-encoded UTF-8 name");
      else {
        const problem = xattrNameProblem(xname);
        if (problem) refuseXattr(xname, problem);
        else setXattr(pax.xattrs, xname, Buffer.from(text(), "base64"), false);
      }
    } else if (key.startsWith("GNU.sparse.")) {
      throw fail("GNU sparse files are not supported");
    }
    // Other keys (atime, ctime, uname, gname, comment, charset, LIBARCHIVE.*) carry nothing we apply.
    at = end;
  }
  return pax;
}

/** Largest uid/gid ext4 stores (32 bits). */
const MAX_ID = 0xffffffff;
/** debugfs's mknod takes majors and minors up to 65535. */
const MAX_DEV = 65535;

/**
 * Iterate the entries of one layer. The caller must consume each entry's `body` fully (or call
 * `skip`) before asking for the next entry; the reader enforces this.
 */
export async function* readTar(
  source: AsyncIterable<Uint8Array>,
  label: string,
  limits: TarLimits = DEFAULT_TAR_LIMITS,
): AsyncGenerator<{ entry: TarEntry; body: () => AsyncGenerator<Buffer> }> {
  const reader = new ByteReader(source);
  let pax: Pax | undefined;
  let longName: string | undefined;
  let longLink: string | undefined;
  for (;;) {
    const headerOffset = reader.offset;
    const block = await reader.read(BLOCK);
    if (!block) {
      if (await reader.atEnd()) {
        // EOF without the two zero blocks: tolerated (many writers omit them) unless an
        // extension header promised an entry that never came.
        if (pax || longName !== undefined || longLink !== undefined)
          throw invalid(label, headerOffset, "ends after an extended header, before its entry");
        return;
      }
      throw invalid(label, headerOffset, "truncated: ends inside a 512-byte header");
    }
    if (block.every((b) => b === 0)) {
      // End of archive. Anything after the zero blocks is padding we do not read.
      if (pax || longName !== undefined || longLink !== undefined)
        throw invalid(label, headerOffset, "ends after an extended header, before its entry");
      return;
    }
    if (!checksumOk(block)) throw invalid(label, headerOffset, "header checksum mismatch: not a tar archive or corrupt");

    const typeflag = String.fromCharCode(block[156] as number);
    const ustar = block.toString("latin1", 257, 262) === "ustar";
    let rawName = decodeName(field(block, 0, 100), label, headerOffset);
    if (ustar) {
      const prefix = field(block, 345, 155);
      if (prefix.length > 0) rawName = `${decodeName(prefix, label, headerOffset)}/${rawName}`;
    }
    const num = (start: number, length: number, what: string) => {
      const v = parseNumber(block.subarray(start, start + length));
      if (v === undefined) throw invalid(label, headerOffset, `malformed ${what} field`, rawName);
      return v;
    };
    const isExtension = typeflag === "x" || typeflag === "g" || typeflag === "L" || typeflag === "K";
    // A PAX size overrides the header of the entry it precedes, never another extension header.
    const size = isExtension ? num(124, 12, "size") : (pax?.size ?? num(124, 12, "size"));
    const dataOffset = reader.offset;
    const short = (got: number) =>
      invalid(label, dataOffset, `truncated: the header declares ${size} bytes of data but the layer ends after ${got}`, longName ?? pax?.path ?? rawName);

    if (isExtension) {
      if (size > limits.maxExtensionBytes)
        throw invalid(label, headerOffset, `extended header of ${size} bytes exceeds the ${limits.maxExtensionBytes}-byte limit`, rawName);
      const data = await readAll(reader, size, short);
      await skipPadding(reader, size, short);
      const fail = (what: string) => invalid(label, headerOffset, what, rawName);
      const notUtf8 = (key: string, bytes: Buffer) =>
        RootfsErrors.ROOTFS_LAYER_UNSUPPORTED({
          message: `layer ${label}: a PAX ${key} is not valid UTF-8 (at byte ${headerOffset}): ${JSON.stringify(bytes.toString("latin1"))}`,
          details: { layer: label, offset: headerOffset },
        });
      if (typeflag === "x") pax = parsePax(data, fail, notUtf8);
      else if (typeflag === "g") parsePax(data, fail, notUtf8); // validated; global defaults are not applied (docker ignores them too)
      else {
        const nul = data.indexOf(0);
        const value = decodeName(nul === -1 ? data : data.subarray(0, nul), label, headerOffset);
        if (typeflag === "L") longName = value;
        else longLink = value;
      }
      continue;
    }

    const path = pax?.path ?? longName ?? rawName;
    let type: TarEntryType;
    switch (typeflag) {
      case "0":
      case "\0":
      case "7":
        type = path.endsWith("/") && typeflag === "\0" ? "dir" : "file";
        break;
      case "1":
        type = "hardlink";
        break;
      case "2":
        type = "symlink";
        break;
      case "3":
        type = "char";
        break;
      case "4":
        type = "block";
        break;
      case "5":
        type = "dir";
        break;
      case "6":
        type = "fifo";
        break;
      case "S":
        throw unsupported(label, path, "GNU sparse files are not supported");
      default:
        throw unsupported(label, path, `tar entry type '${typeflag}' is not supported`);
    }
    const entry: TarEntry = {
      path,
      type,
      mode: num(100, 8, "mode") & 0o7777,
      uid: pax?.uid ?? num(108, 8, "uid"),
      gid: pax?.gid ?? num(116, 8, "gid"),
      size: type === "file" ? size : 0,
      mtime: pax?.mtime ?? num(136, 12, "mtime"),
      linkpath: pax?.linkpath ?? longLink ?? decodeName(field(block, 157, 100), label, headerOffset),
      devmajor: type === "char" || type === "block" ? num(329, 8, "devmajor") : 0,
      devminor: type === "char" || type === "block" ? num(337, 8, "devminor") : 0,
      xattrs: (pax?.xattrs ?? []).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)),
    };
    if (pax?.badXattr)
      throw RootfsErrors.ROOTFS_LAYER_UNSAFE({
        message: `layer ${label}: entry ${JSON.stringify(path)}: the extended attribute name ${JSON.stringify(pax.badXattr.name)} ${pax.badXattr.problem}`,
        details: { layer: label, entry: path, xattr: pax.badXattr.name },
      });
    if (entry.uid > MAX_ID || entry.gid > MAX_ID) throw invalid(label, headerOffset, `owner ${entry.uid}:${entry.gid} is beyond ext4's 32-bit ids`, path);
    if (entry.devmajor > MAX_DEV || entry.devminor > MAX_DEV)
      throw invalid(label, headerOffset, `device number ${entry.devmajor}:${entry.devminor} is beyond ${MAX_DEV}:${MAX_DEV}`, path);
    pax = undefined;
    longName = undefined;
    longLink = undefined;

    // Non-file entries may still carry data (a hard link with a size, per some writers): it is skipped.
    let consumed = false;
    const body = async function* (): AsyncGenerator<Buffer> {
      if (consumed) throw new Error("internal: tar entry body read twice");
      consumed = true;
      if (type === "file") yield* reader.stream(size, short);
      else for await (const _ of reader.stream(size, short)) void _;
      await skipPadding(reader, size, short);
    };
    yield { entry, body };
    if (!consumed) for await (const _ of body()) void _;
  }
}

async function readAll(reader: ByteReader, size: number, short: (got: number) => Error): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const piece of reader.stream(size, short)) parts.push(piece);
  return Buffer.concat(parts, size);
}

async function skipPadding(reader: ByteReader, size: number, short: (got: number) => Error): Promise<void> {
  const pad = (BLOCK - (size % BLOCK)) % BLOCK;
  if (pad === 0) return;
  // A final entry whose padding is cut off lost no data: the padding is dropped and the next header
  // read sees the end of the stream.
  void short;
  await reader.skip(pad);
}

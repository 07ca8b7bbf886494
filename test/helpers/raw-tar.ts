/**
 * A byte-level tar writer for hostile-input tests: every header field and every PAX record can be
 * given as raw bytes (non-UTF-8 names, line breaks in xattr keys, garbage in number fields), and
 * checksums are still correct so the bytes reach the field parsers. `makeTar` in oci-image.ts is the
 * friendly writer; this one does not sanitize anything.
 *
 *   rawTar([{ name: "x", typeflag: "0", content: Buffer.from("hi"), pax: [["SCHILY.xattr.user.a\n!cmd", "v"]] }])
 */

export type Bytes = Buffer | string;

export interface RawEntry {
  /** Header name field (first 100 bytes used). */
  name: Bytes;
  /** One character: "0" file, "1" hard link, "2" symlink, "3" char, "4" block, "5" dir, "6" fifo ... */
  typeflag: string;
  /** A number (written as octal) or raw field bytes. */
  mode?: number | Buffer;
  uid?: number | Buffer;
  gid?: number | Buffer;
  /** Header size; default the content length. */
  size?: number | Buffer;
  mtime?: number | Buffer;
  linkname?: Bytes;
  devmajor?: number | Buffer;
  devminor?: number | Buffer;
  uname?: Bytes;
  gname?: Bytes;
  /** ustar prefix field (joined to the name with "/"). */
  prefix?: Bytes;
  /** PAX records written in an `x` header just before the entry: [key, value] as bytes. */
  pax?: Array<[Bytes, Bytes]>;
  content?: Buffer;
}

const b = (v: Bytes) => (Buffer.isBuffer(v) ? v : Buffer.from(v, "utf8"));

function put(h: Buffer, at: number, width: number, v: number | Buffer | undefined, fallback: number): void {
  if (Buffer.isBuffer(v)) v.copy(h, at, 0, Math.min(width, v.length));
  else h.write(`${(v ?? fallback).toString(8).padStart(width - 1, "0")}\0`, at, width, "latin1");
}

function header(e: RawEntry, size: number): Buffer {
  const h = Buffer.alloc(512);
  b(e.name).copy(h, 0, 0, Math.min(100, b(e.name).length));
  put(h, 100, 8, e.mode, 0o644);
  put(h, 108, 8, e.uid, 0);
  put(h, 116, 8, e.gid, 0);
  put(h, 124, 12, e.size, size);
  put(h, 136, 12, e.mtime, 1_700_000_000);
  h.write(e.typeflag.slice(0, 1), 156, "latin1");
  if (e.linkname !== undefined) b(e.linkname).copy(h, 157, 0, Math.min(100, b(e.linkname).length));
  h.write("ustar\u000000", 257, "latin1");
  if (e.uname !== undefined) b(e.uname).copy(h, 265, 0, Math.min(32, b(e.uname).length));
  if (e.gname !== undefined) b(e.gname).copy(h, 297, 0, Math.min(32, b(e.gname).length));
  put(h, 329, 8, e.devmajor, 0);
  put(h, 337, 8, e.devminor, 0);
  if (e.prefix !== undefined) b(e.prefix).copy(h, 345, 0, Math.min(155, b(e.prefix).length));
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of h) sum += x;
  h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "latin1");
  return h;
}

const pad = (n: number) => Buffer.alloc((512 - (n % 512)) % 512);

/** One PAX record "<len> <key>=<value>\n" with the self-counting length. */
export function paxRecord(key: Bytes, value: Bytes): Buffer {
  const body = Buffer.concat([Buffer.from(" "), b(key), Buffer.from("="), b(value), Buffer.from("\n")]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

export function rawTar(entries: readonly RawEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    if (e.pax && e.pax.length > 0) {
      const body = Buffer.concat(e.pax.map(([k, v]) => paxRecord(k, v)));
      parts.push(header({ name: "PaxHeader", typeflag: "x" }, body.length), body, pad(body.length));
    }
    const content = e.content ?? Buffer.alloc(0);
    parts.push(header(e, content.length), content, pad(content.length));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

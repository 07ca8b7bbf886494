/**
 * Incremental TLS ClientHello sniffing: the server name (SNI) and ALPN offer of a guest's first
 * flight, read from our own reassembly buffer before any TLS object exists. The hello may span
 * several TCP segments and, legally, several TLS records (post-quantum key shares push hellos past
 * 1.5 KB); the buffer is bounded (16 KiB of handshake by default) and every read is preceded by a
 * length check. The result is tagged: `need-more`, `hello`, `not-tls` (the bytes are something
 * else: decide without a name), `malformed` (they began as TLS and broke: refuse). Pure.
 */

export type ClientHelloResult =
  | { kind: "need-more"; /** The buffer must reach this length before a new parse can progress. */ want?: number }
  | {
      kind: "hello";
      sni: string | null;
      alpn: string[];
      /** An encrypted_client_hello extension is present (real or GREASE): the SNI is the outer, public name. */
      ech: boolean;
      /** Bytes of TLS records the hello occupied. */
      consumed: number;
    }
  | { kind: "not-tls"; reason: string }
  | { kind: "malformed"; reason: string };

export interface ClientHelloLimits {
  /** Most handshake bytes buffered before giving up (the hello must fit). */
  maxHandshakeBytes?: number;
}

const RECORD_HANDSHAKE = 22;
const HANDSHAKE_CLIENT_HELLO = 1;
const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;
const EXT_ECH = 0xfe0d;
const MAX_RECORD = 16384; // 2^14: a TLSPlaintext fragment is at most this long (RFC 8446 5.1)
/** Records a hello may be split into; real clients use one or two, 1-byte records are an attack. */
const MAX_RECORDS = 64;

class Malformed extends Error {}

/** A checked cursor over one contiguous buffer: every read names what it reads and fails if short. */
class Reader {
  pos = 0;
  private readonly b: Uint8Array;
  private readonly end: number;
  constructor(b: Uint8Array, start = 0, end = b.length) {
    this.b = b;
    this.pos = start;
    this.end = end;
  }
  remaining(): number {
    return this.end - this.pos;
  }
  need(n: number, what: string): void {
    if (this.remaining() < n) throw new Malformed(`${what} overruns its container`);
  }
  u8(what: string): number {
    this.need(1, what);
    return this.b[this.pos++] as number;
  }
  u16(what: string): number {
    this.need(2, what);
    const v = ((this.b[this.pos] as number) << 8) | (this.b[this.pos + 1] as number);
    this.pos += 2;
    return v;
  }
  u24(what: string): number {
    this.need(3, what);
    const v = ((this.b[this.pos] as number) << 16) | ((this.b[this.pos + 1] as number) << 8) | (this.b[this.pos + 2] as number);
    this.pos += 3;
    return v;
  }
  /** A sub-reader over the next `n` bytes, which this reader skips. */
  sub(n: number, what: string): Reader {
    this.need(n, what);
    const r = new Reader(this.b, this.pos, this.pos + n);
    this.pos += n;
    return r;
  }
  bytes(n: number, what: string): Uint8Array {
    this.need(n, what);
    const out = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
}

/** A host name as SNI may carry it (RFC 6066: ASCII, no trailing dot); null if it is not one. */
function sniName(bytes: Uint8Array): string | null {
  if (bytes.length === 0 || bytes.length > 255) return null;
  let s = "";
  for (const c of bytes) {
    // letters, digits, '-', '.', '_' only; everything else (spaces, NUL, UTF-8) is not a DNS name
    const ok = (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e || c === 0x5f;
    if (!ok) return null;
    s += String.fromCharCode(c);
  }
  return s.toLowerCase();
}

function parseBody(body: Uint8Array): { sni: string | null; alpn: string[]; ech: boolean } {
  const r = new Reader(body);
  const major = r.u8("client_version");
  r.u8("client_version");
  if (major !== 3) throw new Malformed(`client_version major ${major} is not TLS`);
  r.bytes(32, "random");
  const sidLen = r.u8("session_id length");
  if (sidLen > 32) throw new Malformed(`session_id of ${sidLen} bytes (at most 32)`);
  r.bytes(sidLen, "session_id");
  const csLen = r.u16("cipher_suites length");
  if (csLen < 2 || csLen % 2 !== 0) throw new Malformed(`cipher_suites length ${csLen}`);
  r.bytes(csLen, "cipher_suites");
  const cmLen = r.u8("compression_methods length");
  if (cmLen < 1) throw new Malformed("no compression methods");
  r.bytes(cmLen, "compression_methods");
  let sni: string | null = null;
  const alpn: string[] = [];
  if (r.remaining() === 0) return { sni, alpn, ech: false }; // no extensions at all (old clients)
  const exts = r.sub(r.u16("extensions length"), "extensions");
  if (r.remaining() !== 0) throw new Malformed("bytes after the extensions");
  const seen = new Set<number>();
  while (exts.remaining() > 0) {
    const type = exts.u16("extension type");
    const data = exts.sub(exts.u16("extension length"), "extension data");
    // RFC 8446 4.2: "There MUST NOT be more than one extension of the same type"; two SNIs is the
    // classic way to show a filter one name and a server another.
    if (seen.has(type)) throw new Malformed(`extension ${type} appears twice`);
    seen.add(type);
    if (type === EXT_SERVER_NAME) {
      if (data.remaining() === 0) continue; // an empty server_name (a server's echo) names nothing
      const list = data.sub(data.u16("server_name_list length"), "server_name_list");
      if (data.remaining() !== 0) throw new Malformed("bytes after server_name_list");
      let hosts = 0;
      while (list.remaining() > 0) {
        const nameType = list.u8("name_type");
        const name = list.bytes(list.u16("host_name length"), "host_name");
        if (nameType !== 0) continue;
        hosts++;
        if (hosts > 1) throw new Malformed("more than one host_name in server_name");
        const s = sniName(name);
        if (s === null) throw new Malformed("host_name is not a DNS name");
        sni = s;
      }
    } else if (type === EXT_ALPN) {
      const list = data.sub(data.u16("ALPN list length"), "protocol_name_list");
      if (data.remaining() !== 0) throw new Malformed("bytes after protocol_name_list");
      while (list.remaining() > 0) {
        const n = list.u8("protocol name length");
        if (n === 0) throw new Malformed("empty ALPN protocol name");
        const p = list.bytes(n, "protocol name");
        alpn.push(Buffer.from(p).toString("latin1"));
      }
      if (alpn.length === 0) throw new Malformed("empty ALPN list");
    }
  }
  return { sni, alpn, ech: seen.has(EXT_ECH) };
}

/**
 * Parse a ClientHello from the bytes a flow has sent so far (all of them, from the first). Call
 * again with more bytes on `need-more`; the sniffer class below keeps the chunks for you.
 */
export function parseClientHello(buf: Uint8Array, limits: ClientHelloLimits = {}): ClientHelloResult {
  const maxHs = limits.maxHandshakeBytes ?? 16384;
  if (buf.length === 0) return { kind: "need-more" };
  if (buf[0] !== RECORD_HANDSHAKE) {
    return { kind: "not-tls", reason: (buf[0] as number) & 0x80 ? "an SSLv2-style record or binary data" : "the first byte is not a TLS handshake record" };
  }
  if (buf.length >= 2 && buf[1] !== 3) return { kind: "not-tls", reason: "the record version is not TLS" };
  // Gather the handshake bytes from consecutive handshake records.
  const parts: Uint8Array[] = [];
  let hsBytes = 0;
  let pos = 0;
  let needed = -1; // total handshake message length once its header is in
  while (true) {
    // No `want` here: a partial header can still be judged (type and version bytes) as it grows.
    if (buf.length - pos < 5) {
      if (buf.length > pos && buf[pos] !== RECORD_HANDSHAKE) return { kind: "malformed", reason: "the hello is interleaved with another record type" };
      if (buf.length > pos + 1 && buf[pos + 1] !== 3) return { kind: "malformed", reason: "record version is not TLS" };
      return { kind: "need-more" };
    }
    if (parts.length >= MAX_RECORDS) return { kind: "malformed", reason: `the ClientHello is split into more than ${MAX_RECORDS} records` };
    if (buf[pos] !== RECORD_HANDSHAKE) {
      return { kind: "malformed", reason: pos === 0 ? "not a handshake record" : "the hello is interleaved with another record type" };
    }
    if (buf[pos + 1] !== 3) return { kind: "malformed", reason: "record version is not TLS" };
    const len = ((buf[pos + 3] as number) << 8) | (buf[pos + 4] as number);
    if (len === 0) return { kind: "malformed", reason: "an empty handshake record" };
    if (len > MAX_RECORD) return { kind: "malformed", reason: `a record of ${len} bytes (at most ${MAX_RECORD})` };
    if (buf.length - pos - 5 < len) {
      // Bound the wait: a record that would take the handshake past the limit will never be accepted.
      if (hsBytes + len > maxHs + 4) return { kind: "malformed", reason: `the ClientHello exceeds ${maxHs} bytes` };
      return { kind: "need-more", want: pos + 5 + len };
    }
    parts.push(buf.subarray(pos + 5, pos + 5 + len));
    hsBytes += len;
    pos += 5 + len;
    if (needed < 0 && hsBytes >= 4) {
      const first = parts.length === 1 ? (parts[0] as Uint8Array) : Buffer.concat(parts);
      if (first[0] !== HANDSHAKE_CLIENT_HELLO) return { kind: "malformed", reason: `handshake type ${first[0]} is not ClientHello` };
      needed = 4 + (((first[1] as number) << 16) | ((first[2] as number) << 8) | (first[3] as number));
      if (needed - 4 > maxHs) return { kind: "malformed", reason: `the ClientHello declares ${needed - 4} bytes (at most ${maxHs})` };
      if (needed < 4 + 38) return { kind: "malformed", reason: "the ClientHello is too short" };
    }
    if (needed >= 0 && hsBytes >= needed) break;
    if (hsBytes > maxHs + 4) return { kind: "malformed", reason: `the ClientHello exceeds ${maxHs} bytes` };
  }
  const hs = parts.length === 1 ? (parts[0] as Uint8Array) : Buffer.concat(parts);
  // Bytes after the hello in its last record would be another handshake message: not in a first flight.
  if (hsBytes !== needed) return { kind: "malformed", reason: "extra handshake bytes after the ClientHello" };
  try {
    const { sni, alpn, ech } = parseBody(hs.subarray(4, needed));
    return { kind: "hello", sni, alpn, ech, consumed: pos };
  } catch (e) {
    if (e instanceof Malformed) return { kind: "malformed", reason: e.message };
    throw e;
  }
}

/**
 * Feeds segments as they arrive, keeping them as a chunk list and concatenating only when a parse
 * is attempted. Once a result other than `need-more` is reached it is sticky; `bytes()` returns
 * everything buffered, to replay into the TLS terminator or the upstream.
 */
export class ClientHelloSniffer {
  private readonly chunks: Uint8Array[] = [];
  private total = 0;
  private result: ClientHelloResult = { kind: "need-more" };
  private readonly limits: ClientHelloLimits;
  /** Bytes buffered at most: the handshake limit plus the record headers of a fragmented hello. */
  readonly maxBufferedBytes: number;

  constructor(limits: ClientHelloLimits = {}) {
    this.limits = limits;
    const hs = limits.maxHandshakeBytes ?? 16384;
    this.maxBufferedBytes = hs + 4 + 5 * (MAX_RECORDS + 1);
  }

  get buffered(): number {
    return this.total;
  }

  push(chunk: Uint8Array): ClientHelloResult {
    if (this.result.kind !== "need-more") return this.result;
    if (chunk.length === 0) return this.result;
    this.chunks.push(chunk);
    this.total += chunk.length;
    if (this.total > this.maxBufferedBytes) {
      this.result = { kind: "malformed", reason: `no complete ClientHello in ${this.maxBufferedBytes} bytes` };
      return this.result;
    }
    // Parse only once the bytes the last parse asked for are in (a slowloris hello costs no copies).
    if (this.result.kind === "need-more" && this.result.want !== undefined && this.total < this.result.want) return this.result;
    this.result = parseClientHello(this.bytes(), this.limits);
    return this.result;
  }

  bytes(): Uint8Array {
    if (this.chunks.length > 1) {
      const all = Buffer.concat(this.chunks);
      this.chunks.length = 0;
      this.chunks.push(all);
    }
    return this.chunks[0] ?? new Uint8Array(0);
  }
}

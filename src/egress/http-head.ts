/**
 * Bounded HTTP/1.x request-head sniffing: the method, target and `Host` of a plain-HTTP flow's
 * first request, so the policy can check the name against the pins. Strict where leniency lets a
 * filter and a server disagree: CRLF line ends only, no obs-fold, exactly one Host, an absolute-form
 * target must agree with Host, Content-Length together with Transfer-Encoding is refused (request
 * smuggling), limits on head size and header count. Tagged result: `need-more`, `head`, `not-http`
 * (other bytes: decide without a name), `malformed` (refuse). Pure.
 */

export interface HttpHead {
  kind: "head";
  method: string;
  target: string;
  version: "1.0" | "1.1";
  /** Host name from the Host header (or the absolute-form target), normalized to lower case; null if none. */
  host: string | null;
  /** The port in Host, if it named one. */
  hostPort: number | null;
  /** Header fields in order, names lower-cased, values trimmed. */
  headers: Array<[string, string]>;
  /** Bytes of the head including the final CRLF CRLF. */
  headBytes: number;
}

export type HttpHeadResult = { kind: "need-more" } | HttpHead | { kind: "not-http"; reason: string } | { kind: "malformed"; reason: string };

export interface HttpHeadLimits {
  /** Node's own default for --max-http-header-size is 16 KiB. */
  maxHeadBytes?: number;
  maxHeaders?: number;
}

const TCHAR = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const METHOD = /^[A-Z][A-Z_-]{0,23}$/;
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const PREFACE = "PRI * HTTP/2.0\r\n";

/** Parse `host[:port]` / `[v6]:port` from a Host value; null when it is not one. */
export function parseHostValue(v: string): { host: string; port: number | null } | null {
  if (v === "" || v.length > 300) return null;
  let host = v;
  let port: number | null = null;
  if (v.startsWith("[")) {
    const close = v.indexOf("]");
    if (close < 0) return null;
    host = v.slice(1, close);
    const rest = v.slice(close + 1);
    if (rest !== "") {
      if (!/^:[0-9]{1,5}$/.test(rest)) return null;
      port = Number(rest.slice(1));
    }
    if (!/^[0-9a-fA-F:.]+$/.test(host)) return null;
  } else {
    const colon = v.lastIndexOf(":");
    if (colon >= 0) {
      const p = v.slice(colon + 1);
      if (!/^[0-9]{1,5}$/.test(p)) return null;
      port = Number(p);
      host = v.slice(0, colon);
    }
    if (!/^[A-Za-z0-9._-]+$/.test(host)) return null;
  }
  if (port !== null && (port < 1 || port > 65535)) return null;
  host = host.toLowerCase();
  if (host.endsWith(".")) host = host.slice(0, -1);
  if (host === "") return null;
  return { host, port };
}

/** Parse the head of the first request from all bytes the flow has sent so far. */
export function parseHttpHead(buf: Uint8Array, limits: HttpHeadLimits = {}): HttpHeadResult {
  const maxHead = limits.maxHeadBytes ?? 16384;
  const maxHeaders = limits.maxHeaders ?? 100;
  if (buf.length === 0) return { kind: "need-more" };
  // Decide "is this HTTP at all" from the first bytes, before waiting for a whole line.
  const probeLen = Math.min(buf.length, 25);
  let sp = -1;
  for (let i = 0; i < probeLen; i++) {
    const c = buf[i] as number;
    if (c === 0x20) {
      sp = i;
      break;
    }
    if (!((c >= 0x41 && c <= 0x5a) || c === 0x2d || c === 0x5f)) return { kind: "not-http", reason: "does not start with a request method" };
  }
  if (sp < 0 && buf.length >= 25) return { kind: "not-http", reason: "no request method in the first 24 bytes" };
  const scan = Math.min(buf.length, maxHead);
  // Find the end of the head (CRLF CRLF) within the limit.
  let end = -1;
  for (let i = 3; i < scan; i++) {
    if (buf[i] === 0x0a && buf[i - 1] === 0x0d && buf[i - 2] === 0x0a && buf[i - 3] === 0x0d) {
      end = i + 1;
      break;
    }
  }
  const text = Buffer.from(buf.buffer, buf.byteOffset, end < 0 ? scan : end).toString("latin1");
  if (text.startsWith(PREFACE.slice(0, Math.min(text.length, PREFACE.length)))) {
    if (text.length >= PREFACE.length) return { kind: "not-http", reason: "HTTP/2 prior-knowledge preface (h2c)" };
  }
  // A bare LF anywhere in the head is refused outright: servers differ on whether it ends a line.
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) === 0x0a && (i === 0 || text.charCodeAt(i - 1) !== 0x0d)) return { kind: "malformed", reason: "a line ends in LF without CR" };
    if (text.charCodeAt(i) === 0x0d && i + 1 < text.length && text.charCodeAt(i + 1) !== 0x0a) return { kind: "malformed", reason: "a CR not followed by LF" };
  }
  if (end < 0) {
    if (buf.length >= maxHead) return { kind: "malformed", reason: `the request head exceeds ${maxHead} bytes` };
    // Count complete header lines so far: a head with too many is refused before it completes.
    const lines = text.split("\r\n").length - 1;
    if (lines > maxHeaders + 1) return { kind: "malformed", reason: `more than ${maxHeaders} header fields` };
    return { kind: "need-more" };
  }
  const lines = text.slice(0, -4).split("\r\n");
  const requestLine = lines[0] as string;
  const m = /^([^ ]+) ([^ ]+) HTTP\/(\d)\.(\d)$/.exec(requestLine);
  if (!m) {
    if (/^PRI \* HTTP\/2\.0$/.test(requestLine)) return { kind: "not-http", reason: "HTTP/2 prior-knowledge preface (h2c)" };
    return { kind: "malformed", reason: "the request line is not METHOD SP TARGET SP HTTP/1.x" };
  }
  const [, method, target, major, minor] = m as unknown as [string, string, string, string, string];
  if (!METHOD.test(method)) return { kind: "malformed", reason: "the method is not a token" };
  if (major !== "1" || (minor !== "0" && minor !== "1")) return { kind: "malformed", reason: `HTTP/${major}.${minor} is not HTTP/1.0 or 1.1` };
  // eslint-disable-next-line no-control-regex
  if (target.length > 8192 || /[\x00-\x20\x7f]/.test(target)) return { kind: "malformed", reason: "the request target is too long or has control characters" };
  const headers: Array<[string, string]> = [];
  if (lines.length - 1 > maxHeaders) return { kind: "malformed", reason: `more than ${maxHeaders} header fields` };
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] as string;
    if (line.startsWith(" ") || line.startsWith("\t")) return { kind: "malformed", reason: "obsolete line folding" };
    const colon = line.indexOf(":");
    if (colon <= 0) return { kind: "malformed", reason: "a header line without a field name" };
    const name = line.slice(0, colon);
    if (!TCHAR.test(name)) return { kind: "malformed", reason: "a field name that is not a token (whitespace before ':'?)" };
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "");
    if (!FIELD_VALUE.test(value)) return { kind: "malformed", reason: `field ${name.toLowerCase()} has control characters` };
    headers.push([name.toLowerCase(), value]);
  }
  const hosts = headers.filter(([n]) => n === "host");
  if (hosts.length > 1) return { kind: "malformed", reason: "more than one Host header" };
  const cls = headers.filter(([n]) => n === "content-length").map(([, v]) => v);
  const te = headers.some(([n]) => n === "transfer-encoding");
  if (te && cls.length > 0) return { kind: "malformed", reason: "both Content-Length and Transfer-Encoding (request smuggling)" };
  if (cls.some((v) => !/^[0-9]{1,15}$/.test(v)) || new Set(cls).size > 1) return { kind: "malformed", reason: "an invalid or conflicting Content-Length" };

  let host: string | null = null;
  let hostPort: number | null = null;
  if (hosts.length === 1) {
    const h = parseHostValue((hosts[0] as [string, string])[1]);
    if (!h) return { kind: "malformed", reason: "the Host header is not host[:port]" };
    host = h.host;
    hostPort = h.port;
  }
  // Absolute-form (a proxy request) and authority-form (CONNECT) carry their own authority; it
  // must not disagree with Host, or a filter reading one and a server reading the other differ.
  let authority: string | null = null;
  if (method === "CONNECT") authority = target;
  else if (/^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//.test(target)) authority = target.replace(/^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//, "").split(/[/?#]/)[0] ?? "";
  else if (!target.startsWith("/") && !(method === "OPTIONS" && target === "*")) return { kind: "malformed", reason: "the request target is not origin-form" };
  if (authority !== null) {
    if (authority.includes("@")) return { kind: "malformed", reason: "userinfo in the request target" };
    const a = parseHostValue(authority);
    if (!a) return { kind: "malformed", reason: "the request target's authority is not host[:port]" };
    if (host !== null && host !== a.host) return { kind: "malformed", reason: `the target names ${a.host} but Host is ${host}` };
    host = a.host;
    hostPort = a.port ?? hostPort;
  }
  return { kind: "head", method, target, version: minor === "0" ? "1.0" : "1.1", host, hostPort, headers, headBytes: end };
}

/** Keeps a flow's first bytes until the head is complete; the first non-`need-more` result sticks. */
export class HttpHeadSniffer {
  private readonly chunks: Uint8Array[] = [];
  private total = 0;
  private result: HttpHeadResult = { kind: "need-more" };
  private readonly limits: HttpHeadLimits;
  private lastByte = -1;

  constructor(limits: HttpHeadLimits = {}) {
    this.limits = limits;
  }

  get buffered(): number {
    return this.total;
  }

  push(chunk: Uint8Array): HttpHeadResult {
    if (this.result.kind !== "need-more" || chunk.length === 0) return this.result;
    this.chunks.push(chunk);
    this.total += chunk.length;
    // Every verdict but the first-bytes probe, the size limit and a stray CR needs a new line end, so a head
    // dribbled in a byte at a time is re-parsed once per line, not once per byte.
    const early = this.total - chunk.length < 32;
    const atLimit = this.total >= (this.limits.maxHeadBytes ?? 16384);
    const afterCr = this.lastByte === 0x0d;
    this.lastByte = chunk[chunk.length - 1] as number;
    if (!early && !atLimit && !afterCr && !chunk.includes(0x0a) && !chunk.includes(0x0d)) return this.result;
    this.result = parseHttpHead(this.bytes(), this.limits);
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

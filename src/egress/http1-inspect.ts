/**
 * The request side of an intercepted HTTP/1.1 connection, inspected as it streams: every request
 * head is parsed with the sniffer's strict parser (bounded size and header count, CL+TE refused),
 * its Host must equal the TLS server name (domain fronting, research/network.md (e) case 4), and
 * RFC 8484 DNS-over-HTTPS is refused (case 6); bodies are framed by Content-Length or chunked
 * coding so the next head is found and inspected too (keep-alive, pipelining). Bytes that pass are
 * forwarded verbatim; the first refusal stops forwarding for good. h2c upgrades and CONNECT are
 * refused (case 27); after a WebSocket upgrade request the rest is forwarded opaque. Pure: bytes in,
 * `forward`/`refuse` callbacks out.
 */
import { normalizeHostname } from "./allow.ts";
import { isDohRequest } from "./doh.ts";
import { parseHttpHead } from "./http-head.ts";
import type { Signal } from "./policy.ts";

export interface Refusal {
  status: number;
  statusText: string;
  reason: string;
  signal: Signal;
  method?: string;
  target?: string;
  /** The Host the request named (normalized), when it had one. */
  host?: string | null;
}

export interface InspectorOptions {
  /** The proved name (the SNI) every request must address. */
  name: string;
  maxHeadBytes?: number;
  maxHeaders?: number;
  forward(bytes: Buffer): void;
  refuse(r: Refusal): void;
  /** Called for each request that passed (for counters). */
  request?(r: { method: string; target: string; host: string | null }): void;
  /** Rewrites a request head that passed before it is forwarded (swap secrets); the framing headers must stay. */
  rewriteHead?(head: Buffer): Buffer;
}

type State =
  | { s: "head" }
  | { s: "body"; left: number }
  | { s: "chunk-size" }
  | { s: "chunk-data"; left: number }
  | { s: "chunk-crlf"; left: number }
  | { s: "trailer" }
  | { s: "raw" }
  | { s: "refused" };

const MAX_CHUNK_LINE = 1024;

export class Http1Inspector {
  private state: State = { s: "head" };
  private buf: Buffer = Buffer.alloc(0);
  private readonly o: InspectorOptions;
  requests = 0;

  constructor(o: InspectorOptions) {
    this.o = o;
  }

  get refused(): boolean {
    return this.state.s === "refused";
  }

  feed(chunk: Buffer): void {
    let data = this.buf.length > 0 ? Buffer.concat([this.buf, chunk]) : chunk;
    this.buf = Buffer.alloc(0);
    while (data.length > 0) {
      const st = this.state;
      switch (st.s) {
        case "refused":
          return;
        case "raw":
          this.o.forward(data);
          return;
        case "body":
        case "chunk-data": {
          const n = Math.min(st.left, data.length);
          this.o.forward(data.subarray(0, n));
          data = data.subarray(n);
          st.left -= n;
          if (st.left === 0) this.state = st.s === "body" ? { s: "head" } : { s: "chunk-crlf", left: 2 };
          break;
        }
        case "chunk-crlf": {
          const n = Math.min(st.left, data.length);
          const expect = st.left === 2 ? "\r\n" : "\n";
          if (data.subarray(0, n).toString("latin1") !== expect.slice(0, n)) return this.refuse({ status: 400, statusText: "Bad Request", reason: "a chunk is not followed by CRLF", signal: "malformed" });
          this.o.forward(data.subarray(0, n));
          data = data.subarray(n);
          st.left -= n;
          if (st.left === 0) this.state = { s: "chunk-size" };
          break;
        }
        case "chunk-size": {
          const nl = data.indexOf(0x0a);
          if (nl < 0) {
            if (data.length > MAX_CHUNK_LINE) return this.refuse({ status: 400, statusText: "Bad Request", reason: "a chunk-size line is too long", signal: "malformed" });
            this.buf = Buffer.from(data);
            return;
          }
          const line = data.subarray(0, nl + 1).toString("latin1");
          const m = /^([0-9A-Fa-f]{1,8})(;[\t\x20-\x7e]*)?\r\n$/.exec(line);
          if (!m) return this.refuse({ status: 400, statusText: "Bad Request", reason: "a malformed chunk-size line (chunked framing trick)", signal: "malformed" });
          this.o.forward(data.subarray(0, nl + 1));
          data = data.subarray(nl + 1);
          const size = parseInt(m[1] as string, 16);
          this.state = size === 0 ? { s: "trailer" } : { s: "chunk-data", left: size };
          break;
        }
        case "trailer": {
          // Trailer lines until an empty line; bounded like a head.
          const nl = data.indexOf(0x0a);
          if (nl < 0) {
            if (data.length > (this.o.maxHeadBytes ?? 16384)) return this.refuse({ status: 431, statusText: "Request Header Fields Too Large", reason: "the trailer is too large", signal: "malformed" });
            this.buf = Buffer.from(data);
            return;
          }
          const line = data.subarray(0, nl + 1).toString("latin1");
          if (!line.endsWith("\r\n")) return this.refuse({ status: 400, statusText: "Bad Request", reason: "a trailer line ends in LF without CR", signal: "malformed" });
          this.o.forward(data.subarray(0, nl + 1));
          data = data.subarray(nl + 1);
          if (line === "\r\n") this.state = { s: "head" };
          break;
        }
        case "head": {
          const r = parseHttpHead(data, { maxHeadBytes: this.o.maxHeadBytes ?? 16384, maxHeaders: this.o.maxHeaders ?? 100 });
          if (r.kind === "need-more") {
            this.buf = Buffer.from(data);
            return;
          }
          if (r.kind === "not-http") return this.refuse({ status: 400, statusText: "Bad Request", reason: `not an HTTP/1.x request (${r.reason})`, signal: "malformed" });
          if (r.kind === "malformed") {
            const big = /exceeds|more than/.test(r.reason);
            return this.refuse({ status: big ? 431 : 400, statusText: big ? "Request Header Fields Too Large" : "Bad Request", reason: r.reason, signal: "malformed" });
          }
          const host = r.host === null ? null : normalizeHostname(r.host);
          const base = { method: r.method, target: r.target.slice(0, 256), host };
          if (host !== this.o.name) {
            return this.refuse({
              ...base,
              status: 421,
              statusText: "Misdirected Request",
              reason: r.host === null ? `a request without Host on a connection to ${this.o.name}` : `Host ${host ?? r.host} on a TLS connection to ${this.o.name} (domain fronting)`,
              signal: "domain-fronting",
            });
          }
          const header = (n: string) => r.headers.find(([k]) => k === n)?.[1] ?? null;
          if (isDohRequest({ method: r.method, target: r.target, contentType: header("content-type"), accept: header("accept") })) {
            return this.refuse({ ...base, status: 403, statusText: "Forbidden", reason: `${r.method} ${base.target} is a DNS-over-HTTPS request; DNS goes through the mediator`, signal: "dns-over-https" });
          }
          if (r.method === "CONNECT") return this.refuse({ ...base, status: 405, statusText: "Method Not Allowed", reason: "CONNECT inside an intercepted connection", signal: "denied" });
          const upgrade = header("upgrade");
          if (upgrade !== null && /(^|[\s,])h2c([\s,]|$)/i.test(upgrade)) {
            return this.refuse({ ...base, status: 400, statusText: "Bad Request", reason: "an h2c upgrade would take the connection out of inspection", signal: "denied" });
          }
          if (header("http2-settings") !== null) return this.refuse({ ...base, status: 400, statusText: "Bad Request", reason: "HTTP2-Settings without a supported upgrade", signal: "denied" });
          const te = header("transfer-encoding");
          const cl = header("content-length");
          if (te !== null && te.toLowerCase() !== "chunked") {
            return this.refuse({ ...base, status: 501, statusText: "Not Implemented", reason: `Transfer-Encoding ${te.slice(0, 40)} is not forwarded (only chunked)`, signal: "malformed" });
          }
          this.requests++;
          this.o.request?.(base);
          const head = data.subarray(0, r.headBytes);
          this.o.forward(this.o.rewriteHead ? this.o.rewriteHead(head) : head);
          data = data.subarray(r.headBytes);
          if (upgrade !== null) this.state = { s: "raw" };
          else if (te !== null) this.state = { s: "chunk-size" };
          else if (cl !== null && Number(cl) > 0) this.state = { s: "body", left: Number(cl) };
          else this.state = { s: "head" };
          break;
        }
      }
    }
  }

  private refuse(r: Refusal): void {
    this.state = { s: "refused" };
    this.buf = Buffer.alloc(0);
    this.o.refuse(r);
  }
}

/** The response the guest gets for a refused request (the connection closes after it). */
export function refusalResponse(r: Refusal): Buffer {
  const body = `microagent egress: ${r.reason}\n`;
  return Buffer.from(
    `HTTP/1.1 ${r.status} ${r.statusText}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\nx-microagent-egress: ${r.signal}\r\n\r\n${body}`,
    "utf8",
  );
}

/**
 * A request head with `swapHeaders` applied to its header fields (the request line and the field
 * names kept as written; a swapped field is re-written as `Name: value`). `host` is the proved name.
 */
export function swapHead(head: Buffer, swap: (pairs: ReadonlyArray<readonly [string, string]>) => { headers: Array<[string, string]>; changed: boolean }): Buffer {
  const text = head.toString("latin1");
  const lines = text.split("\r\n");
  // lines: request line, fields..., "", "" (the head ends with CRLF CRLF)
  const fields: Array<[string, string]> = [];
  const at: number[] = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] as string;
    if (line === "") break;
    const c = line.indexOf(":");
    if (c <= 0) continue;
    fields.push([line.slice(0, c), line.slice(c + 1).trim()]);
    at.push(i);
  }
  const r = swap(fields);
  if (!r.changed) return head;
  r.headers.forEach(([k, v], j) => {
    const orig = fields[j] as [string, string];
    // A value with a line break or NUL would write new header lines (request smuggling): never.
    if (v !== orig[1] && !/[\r\n\0]/.test(v)) lines[at[j] as number] = `${k}: ${v}`;
  });
  return Buffer.from(lines.join("\r\n"), "latin1");
}

/**
 * The DNS server on the gateway address (UDP and TCP/53). It validates every query before anything else
 * sees it (QR=0, opcode QUERY, QDCOUNT=1, no answer/authority records, a name of at most 253 characters
 * in labels of at most 63, no compression in the question; then a full decode with dns-packet, which
 * rejects pointer loops), answers `host.microagent.internal` and `--add-host` names itself, and forwards
 * the rest through the injected Resolver. Forwarding is asynchronous with an in-flight cap and a timeout
 * on the stack's timer wheel, so no answer ever blocks the frame loop (upstream microagent's inline DNS
 * forward starved TCP, research/network.md (a2)). A DnsObserver may refuse a query or rewrite an answer:
 * the seam for the egress layer's pins and filters.
 */
import dnsPacket from "dns-packet";
import { formatIpv4 } from "./addr.ts";
import type { TimerWheel } from "./timers.ts";
import type { ByteStream, ByteStreamHandlers, DnsObserver, DnsQueryEvent, Resolver } from "./types.ts";

export const HOST_ALIAS = "host.microagent.internal";
const INTERNAL_SUFFIX = "microagent.internal";

export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
const TYPE_A = 1;
const CLASS_IN = 1;
const LOCAL_TTL = 60;
const MAX_NAME_CHARS = 253;

export type DnsDropReason = "dns-malformed" | "dns-not-query";

export interface DnsQuery {
  ok: true;
  id: number;
  /** Lower-cased, no trailing dot. */
  name: string;
  type: number;
  qclass: number;
  /** Recursion desired (echoed in answers). */
  rd: boolean;
  /** The question section's end (header + question), for building answers. */
  questionEnd: number;
  /** The largest UDP answer the guest accepts (512 without EDNS). */
  maxUdpBytes: number;
}

export type DnsValidation = DnsQuery | { ok: false; reason: DnsDropReason; /** Set when a FORMERR can be sent. */ id?: number; rcode?: number };

/** Validates a raw query from the guest. Never throws. */
export function validateDnsQuery(raw: Buffer): DnsValidation {
  if (raw.length < 12) return { ok: false, reason: "dns-malformed" };
  const id = raw.readUInt16BE(0);
  const flags = raw.readUInt16BE(2);
  if (flags & 0x8000) return { ok: false, reason: "dns-not-query" }; // a response: never answer it (no loops)
  const opcode = (flags >>> 11) & 0xf;
  if (opcode !== 0) return { ok: false, reason: "dns-not-query", id, rcode: RCODE.NOTIMP };
  const qd = raw.readUInt16BE(4);
  const an = raw.readUInt16BE(6);
  const ns = raw.readUInt16BE(8);
  const ar = raw.readUInt16BE(10);
  if (qd !== 1 || an !== 0 || ns !== 0 || ar > 1) return { ok: false, reason: "dns-malformed", id, rcode: RCODE.FORMERR };
  let i = 12;
  const labels: string[] = [];
  let chars = 0;
  for (;;) {
    if (i >= raw.length) return { ok: false, reason: "dns-malformed", id, rcode: RCODE.FORMERR };
    const len = raw[i]!;
    if (len === 0) {
      i++;
      break;
    }
    // 0xc0 is a compression pointer (never needed in a lone question); 0x40/0x80 are reserved label types.
    if (len > 63) return { ok: false, reason: "dns-malformed", id, rcode: RCODE.FORMERR };
    if (i + 1 + len > raw.length) return { ok: false, reason: "dns-malformed", id, rcode: RCODE.FORMERR };
    chars += len + (labels.length > 0 ? 1 : 0);
    if (chars > MAX_NAME_CHARS) return { ok: false, reason: "dns-malformed", id, rcode: RCODE.FORMERR };
    labels.push(raw.toString("latin1", i + 1, i + 1 + len).toLowerCase());
    i += 1 + len;
  }
  if (i + 4 > raw.length) return { ok: false, reason: "dns-malformed", id, rcode: RCODE.FORMERR };
  const type = raw.readUInt16BE(i);
  const qclass = raw.readUInt16BE(i + 2);
  const questionEnd = i + 4;
  let maxUdpBytes = 512;
  try {
    const decoded = dnsPacket.decode(raw);
    const opt = decoded.additionals?.find((r) => r.type === "OPT") as { udpPayloadSize?: number } | undefined;
    if (ar === 1 && !opt) return { ok: false, reason: "dns-malformed", id, rcode: RCODE.FORMERR };
    if (opt?.udpPayloadSize) maxUdpBytes = Math.max(512, opt.udpPayloadSize);
  } catch {
    return { ok: false, reason: "dns-malformed", id, rcode: RCODE.FORMERR };
  }
  return { ok: true, id, name: labels.join("."), type, qclass, rd: (flags & 0x0100) !== 0, questionEnd, maxUdpBytes };
}

/** An answer with `rcode` and the records given (A records only: all the local names need). */
export function buildDnsAnswer(raw: Buffer, q: { id: number; rd: boolean; questionEnd: number }, rcode: number, addrs: number[] = []): Buffer {
  const out = Buffer.alloc(q.questionEnd + addrs.length * 16);
  raw.copy(out, 0, 0, q.questionEnd);
  out.writeUInt16BE(q.id, 0);
  // QR, AA (we are authoritative for our own names), RD echoed, RA.
  out.writeUInt16BE(0x8000 | 0x0400 | (q.rd ? 0x0100 : 0) | 0x0080 | (rcode & 0xf), 2);
  out.writeUInt16BE(1, 4);
  out.writeUInt16BE(addrs.length, 6);
  out.writeUInt16BE(0, 8);
  out.writeUInt16BE(0, 10);
  let o = q.questionEnd;
  for (const a of addrs) {
    out.writeUInt16BE(0xc00c, o); // pointer to the question name
    out.writeUInt16BE(TYPE_A, o + 2);
    out.writeUInt16BE(CLASS_IN, o + 4);
    out.writeUInt32BE(LOCAL_TTL, o + 6);
    out.writeUInt16BE(4, o + 10);
    out.writeUInt32BE(a >>> 0, o + 12);
    o += 16;
  }
  return out;
}

/** An error answer for a query whose header was readable but whose question may not be. */
function buildHeaderOnlyError(id: number, rcode: number): Buffer {
  const out = Buffer.alloc(12);
  out.writeUInt16BE(id, 0);
  out.writeUInt16BE(0x8000 | 0x0080 | (rcode & 0xf), 2);
  return out;
}

/** The answer truncated to header + question with TC set (the guest retries over TCP). */
function truncate(answer: Buffer, questionEnd: number): Buffer {
  const out = Buffer.from(answer.subarray(0, Math.min(questionEnd, answer.length)));
  out.writeUInt16BE(out.readUInt16BE(2) | 0x0200, 2);
  out.writeUInt16BE(0, 6);
  out.writeUInt16BE(0, 8);
  out.writeUInt16BE(0, 10);
  return out;
}

export interface DnsServerOptions {
  wheel: TimerWheel;
  resolver: Resolver;
  observer: DnsObserver | undefined;
  gatewayIp: number;
  /** `--add-host` names (lower-case, no trailing dot) and their addresses. */
  hosts: ReadonlyMap<string, number>;
  maxInFlight: number;
  timeoutMs: number;
  /** Largest UDP answer the link carries (MTU - 28). */
  maxUdpBytes: number;
  count(reason: string): void;
}

export interface DnsContext {
  target: string;
  transport: "udp" | "tcp";
}

export class DnsServer {
  readonly #o: DnsServerOptions;
  #inFlight = 0;
  #closed = false;

  constructor(o: DnsServerOptions) {
    this.#o = o;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  close(): void {
    this.#closed = true;
  }

  /**
   * Answers one query: `reply` runs exactly once, now (local names, errors) or later (forwarded), and the
   * result is true; false means the query was dropped and `reply` never runs.
   */
  handle(raw: Buffer, ctx: DnsContext, reply: (answer: Buffer) => void): boolean {
    const o = this.#o;
    if (this.#closed) return false;
    const v = validateDnsQuery(raw);
    if (!v.ok) {
      o.count(v.reason);
      if (v.id === undefined || v.rcode === undefined) return false;
      reply(buildHeaderOnlyError(v.id, v.rcode));
      return true;
    }
    o.count("dns-query");
    const limit = ctx.transport === "udp" ? Math.min(v.maxUdpBytes, o.maxUdpBytes) : 65535;
    const send = (answer: Buffer) => {
      if (this.#closed) return;
      reply(answer.length > limit ? truncate(answer, v.questionEnd) : answer);
    };
    const local = this.#local(raw, v);
    if (local) {
      o.count("dns-local");
      send(local);
      return true;
    }
    const ev: DnsQueryEvent = { name: v.name, type: v.type, target: ctx.target, transport: ctx.transport };
    const decision = o.observer?.onQuery?.(ev) ?? { action: "forward" };
    if (decision.action === "refuse") {
      o.count("dns-refused");
      send(buildDnsAnswer(raw, v, RCODE.REFUSED));
      return true;
    }
    if (decision.action === "nxdomain") {
      o.count("dns-nxdomain");
      send(buildDnsAnswer(raw, v, RCODE.NXDOMAIN));
      return true;
    }
    if (this.#inFlight >= o.maxInFlight) {
      o.count("dns-inflight-cap");
      send(buildDnsAnswer(raw, v, RCODE.SERVFAIL));
      return true;
    }
    this.#inFlight++;
    o.count("dns-forwarded");
    let done = false;
    const finish = (answer: Buffer | undefined, reason?: string) => {
      if (done) return;
      done = true;
      this.#inFlight--;
      timer.cancel();
      if (reason) o.count(reason);
      send(answer ?? buildDnsAnswer(raw, v, RCODE.SERVFAIL));
    };
    const timer = o.wheel.timer(() => finish(undefined, "dns-upstream-timeout"));
    timer.arm(o.timeoutMs);
    let p: Promise<Buffer>;
    try {
      p = o.resolver.query(raw, { name: v.name, type: v.type });
    } catch {
      finish(undefined, "dns-upstream-error");
      return true;
    }
    p.then(
      (answer) => {
        if (done) return;
        if (!Buffer.isBuffer(answer) || answer.length < 12 || !(answer.readUInt16BE(2) & 0x8000)) return finish(undefined, "dns-upstream-malformed");
        let out: Buffer | undefined = Buffer.from(answer);
        out.writeUInt16BE(v.id, 0);
        if (o.observer?.onAnswer) {
          try {
            out = o.observer.onAnswer(ev, out);
          } catch {
            out = undefined;
          }
          if (!out) return finish(undefined, "dns-answer-rejected");
        }
        finish(out);
      },
      () => finish(undefined, "dns-upstream-error"),
    );
    return true;
  }

  /** Answers for names we own: the host alias and --add-host entries; anything else under microagent.internal is NXDOMAIN. */
  #local(raw: Buffer, q: DnsQuery): Buffer | undefined {
    const name = q.name;
    const addr = name === HOST_ALIAS ? this.#o.gatewayIp : this.#o.hosts.get(name);
    if (addr === undefined) {
      if (name === INTERNAL_SUFFIX || name.endsWith(`.${INTERNAL_SUFFIX}`)) return buildDnsAnswer(raw, q, RCODE.NXDOMAIN);
      return undefined;
    }
    if (q.qclass !== CLASS_IN) return buildDnsAnswer(raw, q, RCODE.REFUSED);
    // A gets the address; every other type (AAAA included: the guest is IPv4-only) gets NODATA.
    return buildDnsAnswer(raw, q, RCODE.NOERROR, q.type === TYPE_A ? [addr] : []);
  }
}

/**
 * DNS over TCP/53 (RFC 7766): a ByteStream the stack plugs in as the host side of a guest flow to port
 * 53. It loops over 2-byte-length-prefixed queries (glibc sends A and AAAA on one connection), caps the
 * queries in flight per connection (then stops taking bytes, which closes the flow's TCP window), and
 * ends after the guest ends and every answer went out.
 */
export class DnsTcpSession implements ByteStream {
  readonly #server: DnsServer;
  readonly #h: ByteStreamHandlers;
  readonly #ctx: DnsContext;
  #buf: Buffer = Buffer.alloc(0);
  #inFlight = 0;
  #ended = false;
  #closed = false;
  #blocked = false;
  static readonly MAX_IN_FLIGHT = 8;

  constructor(server: DnsServer, handlers: ByteStreamHandlers, target: number, wheel: TimerWheel) {
    this.#server = server;
    this.#h = handlers;
    this.#ctx = { target: formatIpv4(target), transport: "tcp" };
    // onConnect must not run inside connect(): defer it to the next timer tick.
    const t = wheel.timer(() => {
      if (!this.#closed) this.#h.onConnect();
    });
    t.arm(0);
  }

  write(chunk: Buffer): boolean {
    if (this.#closed || this.#ended) return false;
    // Bounded: at most one maximal message plus one chunk is ever held.
    this.#buf = this.#buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.#buf, chunk]);
    this.#releasing = true;
    this.#parse();
    this.#releasing = false;
    this.#blocked = this.#inFlight >= DnsTcpSession.MAX_IN_FLIGHT || this.#buf.length > 2 + 65535;
    return !this.#blocked;
  }

  #parse(): void {
    while (this.#buf.length >= 2 && this.#inFlight < DnsTcpSession.MAX_IN_FLIGHT) {
      const len = this.#buf.readUInt16BE(0);
      if (this.#buf.length < 2 + len) break;
      const msg = this.#buf.subarray(2, 2 + len);
      this.#buf = this.#buf.subarray(2 + len);
      this.#inFlight++;
      // A query the server dropped (a response, no readable header) gets no answer: free its slot now.
      if (!this.#server.handle(Buffer.from(msg), this.#ctx, (answer) => this.#answered(answer))) this.#release();
    }
  }

  #answered(answer: Buffer): void {
    if (this.#closed) return;
    const framed = Buffer.allocUnsafe(2 + answer.length);
    framed.writeUInt16BE(answer.length, 0);
    answer.copy(framed, 2);
    this.#h.onData(framed);
    this.#release();
  }

  #release(): void {
    this.#inFlight--;
    if (this.#releasing) return; // inside #parse already (a synchronous answer)
    if (this.#blocked && this.#inFlight < DnsTcpSession.MAX_IN_FLIGHT) {
      this.#blocked = false;
      this.#releasing = true;
      this.#parse();
      this.#releasing = false;
      if (!this.#closed) this.#h.onDrain();
    }
    this.#maybeFinish();
  }

  #releasing = false;

  end(): void {
    this.#ended = true;
    this.#maybeFinish();
  }

  #maybeFinish(): void {
    if (this.#ended && this.#inFlight === 0 && !this.#closed) {
      this.#closed = true;
      this.#h.onEnd();
    }
  }

  destroy(): void {
    this.#closed = true;
  }

  pause(): void {}
  resume(): void {}
}

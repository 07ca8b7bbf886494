/**
 * The guest side of the network stack's unit tests: builds the frames a guest kernel would send
 * (with correct checksums, through src/net/wire.ts's builders with the roles swapped), parses what the
 * stack answers, and plays a small TCP endpoint (`GuestTcp`) with its own sequence numbers, window and
 * receive hash. Also a fake host side (connector, datagrams, resolver, policy) that records everything.
 */
import { createHash } from "node:crypto";
import type { Hash } from "node:crypto";
import { parseIpv4, parseMac } from "../../src/net/addr.ts";
import { ManualClock } from "../../src/net/timers.ts";
import { NetworkStack } from "../../src/net/stack.ts";
import type { NetworkStackDeps } from "../../src/net/stack.ts";
import type { NetworkStackOptions } from "../../src/net/config.ts";
import type {
  ByteStream,
  ByteStreamHandlers,
  DestinationPolicy,
  DestinationRequest,
  HostDatagram,
  HostDatagramFactory,
  HostDatagramHandlers,
  HostConnector,
  Resolver,
  TcpTarget,
  UdpTarget,
} from "../../src/net/types.ts";
import {
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ETH_HEADER_BYTES,
  PROTO_TCP,
  PROTO_UDP,
  PROTO_ICMP,
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  buildTcpFrame,
  buildUdpFrame,
  allocIpv4Frame,
  parseIpv4Header,
  parseTcp,
  parseUdp,
  parseIcmp,
  IPV4_HEADER_BYTES,
} from "../../src/net/wire.ts";
import type { FrameAddressing, TcpSegment } from "../../src/net/wire.ts";
import { checksum } from "../../src/net/checksum.ts";
import { seqAdd, seqDiff, seqGt } from "../../src/net/seq.ts";

export const GUEST_MAC = "02:4d:41:00:00:02";
export const GW_MAC = "02:4d:41:00:00:01";
export const GUEST_IP = "10.200.0.2";
export const GW_IP = "10.200.0.1";
export const guestMac = parseMac(GUEST_MAC)!;
export const gwMac = parseMac(GW_MAC)!;
export const guestIp = parseIpv4(GUEST_IP)!;
export const gwIp = parseIpv4(GW_IP)!;
export const ip = (s: string): number => parseIpv4(s)!;

// ------------------------------------------------------------------------------------ fake host side

export class FakeHostStream implements ByteStream {
  readonly target: TcpTarget;
  readonly h: ByteStreamHandlers;
  received: Buffer[] = [];
  receivedBytes = 0;
  hash: Hash = createHash("sha256");
  keepData = true;
  /** When true, write() returns false (the host socket is backed up). */
  blocked = false;
  ended = false;
  destroyed: Error | true | undefined;
  paused = false;
  connected = false;
  closed = false;

  constructor(target: TcpTarget, h: ByteStreamHandlers) {
    this.target = target;
    this.h = h;
  }

  write(chunk: Buffer): boolean {
    this.receivedBytes += chunk.length;
    this.hash.update(chunk);
    if (this.keepData) this.received.push(Buffer.from(chunk));
    return !this.blocked;
  }
  end(): void {
    this.ended = true;
  }
  destroy(error?: Error): void {
    this.destroyed = error ?? true;
  }
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
  }
  text(): string {
    return Buffer.concat(this.received).toString();
  }
  unblock(): void {
    this.blocked = false;
    this.h.onDrain();
  }
  connect(): void {
    this.connected = true;
    this.h.onConnect();
  }
}

export class FakeConnector implements HostConnector {
  streams: FakeHostStream[] = [];
  /** Connect at once (the stack tolerates handlers that run inside connect). */
  autoConnect = true;
  connect(target: TcpTarget, handlers: ByteStreamHandlers): ByteStream {
    const s = new FakeHostStream(target, handlers);
    this.streams.push(s);
    if (this.autoConnect) s.connect();
    return s;
  }
  get last(): FakeHostStream {
    return this.streams[this.streams.length - 1]!;
  }
}

export class FakeDatagram implements HostDatagram {
  sent: Buffer[] = [];
  closed = false;
  readonly target: UdpTarget;
  readonly h: HostDatagramHandlers;
  constructor(target: UdpTarget, h: HostDatagramHandlers) {
    this.target = target;
    this.h = h;
  }
  send(data: Buffer): void {
    this.sent.push(Buffer.from(data));
  }
  close(): void {
    this.closed = true;
  }
}

export class FakeDatagrams implements HostDatagramFactory {
  opened: FakeDatagram[] = [];
  open(target: UdpTarget, h: HostDatagramHandlers): HostDatagram {
    const d = new FakeDatagram(target, h);
    this.opened.push(d);
    return d;
  }
}

export class FakeResolver implements Resolver {
  queries: Buffer[] = [];
  pending: Array<{ raw: Buffer; resolve: (b: Buffer) => void; reject: (e: Error) => void }> = [];
  query(raw: Buffer): Promise<Buffer> {
    this.queries.push(Buffer.from(raw));
    return new Promise((resolve, reject) => this.pending.push({ raw, resolve, reject }));
  }
}

/** Allows everything but 10.99.0.0/16 and port 9 (so tests can see a deny). */
export class TestPolicy implements DestinationPolicy {
  asked: DestinationRequest[] = [];
  decide(req: DestinationRequest) {
    this.asked.push(req);
    if (req.dstIp.startsWith("10.99.") || req.dstPort === 9) return { verdict: "deny" as const, reason: "test-inside" };
    return { verdict: "allow" as const };
  }
}

export interface Harness {
  stack: NetworkStack;
  clock: ManualClock;
  out: Buffer[];
  connector: FakeConnector;
  datagrams: FakeDatagrams;
  resolver: FakeResolver;
  policy: TestPolicy;
  /** Make output() return false (link backed up) until the test clears it. */
  linkBlocked: { value: boolean };
}

export function harness(options: NetworkStackOptions = {}, deps: Partial<NetworkStackDeps> = {}): Harness {
  const clock = new ManualClock();
  const out: Buffer[] = [];
  const connector = new FakeConnector();
  const datagrams = new FakeDatagrams();
  const resolver = new FakeResolver();
  const policy = new TestPolicy();
  const linkBlocked = { value: false };
  const stack = new NetworkStack(options, {
    output: (f) => {
      out.push(f);
      return !linkBlocked.value;
    },
    connector,
    datagrams,
    policy,
    resolver,
    clock,
    ...deps,
  });
  return { stack, clock, out, connector, datagrams, resolver, policy, linkBlocked };
}

/** Removes and returns every frame the stack emitted so far. */
export function drain(h: Harness): Buffer[] {
  return h.out.splice(0, h.out.length);
}

// ------------------------------------------------------------------------------------- frame builders

export function guestAddr(dst: number): FrameAddressing {
  return { srcMac: guestMac, dstMac: gwMac, src: guestIp, dst };
}

export function arpFrame(op: number, senderMac: Uint8Array, senderIp: number, targetIp: number, dstMac: Uint8Array = Buffer.alloc(6, 0xff), srcMac: Uint8Array = senderMac): Buffer {
  const f = Buffer.alloc(ETH_HEADER_BYTES + 28);
  f.set(dstMac, 0);
  f.set(srcMac, 6);
  f.writeUInt16BE(ETHERTYPE_ARP, 12);
  const o = ETH_HEADER_BYTES;
  f.writeUInt16BE(1, o);
  f.writeUInt16BE(ETHERTYPE_IPV4, o + 2);
  f[o + 4] = 6;
  f[o + 5] = 4;
  f.writeUInt16BE(op, o + 6);
  f.set(senderMac, o + 8);
  f.writeUInt32BE(senderIp, o + 14);
  f.writeUInt32BE(targetIp, o + 24);
  return f;
}

export function icmpEchoFrame(dst: number, id: number, seq: number, data: Buffer, a: FrameAddressing = guestAddr(dst)): Buffer {
  const len = 8 + data.length;
  const f = allocIpv4Frame(a, PROTO_ICMP, len);
  const o = ETH_HEADER_BYTES + IPV4_HEADER_BYTES;
  f[o] = 8;
  f[o + 1] = 0;
  f.writeUInt16BE(0, o + 2);
  f.writeUInt16BE(id, o + 4);
  f.writeUInt16BE(seq, o + 6);
  data.copy(f, o + 8);
  f.writeUInt16BE(checksum(f, o, len), o + 2);
  return f;
}

export function udpFrame(srcPort: number, dst: number, dstPort: number, data: Buffer, a: FrameAddressing = guestAddr(dst)): Buffer {
  return buildUdpFrame(a, srcPort, dstPort, data);
}

export interface TcpFields {
  srcPort: number;
  dst: number;
  dstPort: number;
  seq: number;
  ack?: number;
  flags: number;
  window?: number;
  mss?: number;
  wscale?: number;
  data?: Buffer;
}

export function tcpFrame(t: TcpFields, a: FrameAddressing = guestAddr(t.dst)): Buffer {
  const data = t.data ?? Buffer.alloc(0);
  return buildTcpFrame(
    a,
    { srcPort: t.srcPort, dstPort: t.dstPort, seq: t.seq, ack: t.ack ?? 0, flags: t.flags, window: t.window ?? 65535, ...(t.mss !== undefined ? { mss: t.mss } : {}), ...(t.wscale !== undefined ? { wscale: t.wscale } : {}) },
    data.length,
    (f, off) => data.copy(f, off),
  );
}

/** Recomputes the IPv4 header checksum after a test edited the header. */
export function fixIpChecksum(f: Buffer): Buffer {
  f.writeUInt16BE(0, ETH_HEADER_BYTES + 10);
  const ihl = (f[ETH_HEADER_BYTES]! & 0xf) * 4;
  f.writeUInt16BE(checksum(f, ETH_HEADER_BYTES, ihl), ETH_HEADER_BYTES + 10);
  return f;
}

// -------------------------------------------------------------------------------------- frame parsing

export interface ParsedOut {
  ethType: number;
  src?: number;
  dst?: number;
  protocol?: number;
  tcp?: TcpSegment & { data: Buffer };
  udp?: { srcPort: number; dstPort: number; data: Buffer };
  icmp?: { type: number; code: number; body: Buffer };
}

/** Parses a frame the stack emitted, verifying every checksum (a bad one throws: the stack must never send one). */
export function parseOut(f: Buffer): ParsedOut {
  if (!f.subarray(0, 6).equals(guestMac) && f.readUInt16BE(12) !== ETHERTYPE_ARP) throw new Error("frame not addressed to the guest MAC");
  if (!f.subarray(6, 12).equals(gwMac)) throw new Error("frame not from the gateway MAC");
  const ethType = f.readUInt16BE(12);
  if (ethType !== ETHERTYPE_IPV4) return { ethType };
  const ipH = parseIpv4Header(f, ETH_HEADER_BYTES);
  if (!ipH.ok) throw new Error(`stack sent a bad IPv4 header: ${ipH.reason}`);
  const r: ParsedOut = { ethType, src: ipH.src, dst: ipH.dst, protocol: ipH.protocol };
  if (ipH.protocol === PROTO_TCP) {
    const t = parseTcp(f, ipH.payloadOff, ipH.payloadLen, ipH.src, ipH.dst);
    if (!t.ok) throw new Error(`stack sent a bad TCP segment: ${t.reason}`);
    r.tcp = { ...t, data: f.subarray(t.dataOff, t.dataOff + t.dataLen) };
  } else if (ipH.protocol === PROTO_UDP) {
    const u = parseUdp(f, ipH.payloadOff, ipH.payloadLen, ipH.src, ipH.dst);
    if (!u.ok) throw new Error(`stack sent a bad UDP datagram: ${u.reason}`);
    r.udp = { srcPort: u.srcPort, dstPort: u.dstPort, data: f.subarray(u.dataOff, u.dataOff + u.dataLen) };
  } else if (ipH.protocol === PROTO_ICMP) {
    const m = parseIcmp(f, ipH.payloadOff, ipH.payloadLen);
    if (!m.ok) throw new Error(`stack sent a bad ICMP message: ${m.reason}`);
    r.icmp = { type: m.type, code: m.code, body: f.subarray(m.off + 4, m.off + m.len) };
  }
  return r;
}

// ------------------------------------------------------------------------------- the guest's TCP side

export interface GuestTcpOptions {
  localPort: number;
  remote: number;
  remotePort: number;
  iss?: number;
  mss?: number;
  /** Window-scale shift the guest offers; undefined = no option. */
  wscale?: number | undefined;
  /** Receive buffer the guest advertises (bytes). */
  rcvWindow?: number;
}

/**
 * A minimal guest TCP endpoint: connects (or accepts a SYN from the stack), sends from a data source
 * respecting the stack's window, receives in order into a hash, acks every segment, closes with FIN.
 */
export class GuestTcp {
  readonly h: Harness;
  readonly o: Required<Omit<GuestTcpOptions, "wscale">> & { wscale: number | undefined };
  state: "CLOSED" | "SYN_SENT" | "LISTEN" | "SYN_RCVD" | "ESTABLISHED" | "FIN_SENT" | "DONE" | "RESET" = "CLOSED";
  sndUna: number;
  sndNxt: number;
  rcvNxt = 0;
  peerWnd = 0;
  peerShift = 0;
  ourShift = 0;
  peerMss = 536;
  received = 0;
  hash: Hash = createHash("sha256");
  keep: Buffer[] | undefined;
  finReceived = false;
  rstReceived = false;
  /** When true the guest app does not read: its window shrinks by what it holds. */
  appPaused = false;
  held = 0;
  /** Bytes the guest sent but not yet acked, for retransmission. */
  unacked: Buffer[] = [];
  segmentsIn = 0;
  acksIn = 0;

  constructor(h: Harness, o: GuestTcpOptions) {
    this.h = h;
    this.o = { iss: 1000, mss: 1460, rcvWindow: 1 << 20, ...o, wscale: "wscale" in o ? o.wscale : 7 };
    this.sndUna = this.o.iss >>> 0;
    this.sndNxt = this.o.iss >>> 0;
  }

  windowField(): number {
    const free = Math.max(0, this.o.rcvWindow - this.held);
    return Math.min(0xffff, Math.floor(free / 2 ** this.ourShift));
  }

  frame(flags: number, data?: Buffer, seq = this.sndNxt): Buffer {
    return tcpFrame({ srcPort: this.o.localPort, dst: this.o.remote, dstPort: this.o.remotePort, seq, ack: this.rcvNxt, flags, window: this.windowField(), ...(data ? { data } : {}) });
  }

  send(f: Buffer): void {
    this.h.stack.receiveFrame(f);
  }

  connect(): void {
    this.state = "SYN_SENT";
    const f = tcpFrame({
      srcPort: this.o.localPort,
      dst: this.o.remote,
      dstPort: this.o.remotePort,
      seq: this.sndNxt,
      flags: TCP_SYN,
      window: Math.min(0xffff, this.o.rcvWindow),
      mss: this.o.mss,
      ...(this.o.wscale !== undefined ? { wscale: this.o.wscale } : {}),
    });
    this.sndNxt = seqAdd(this.sndNxt, 1);
    this.send(f);
  }

  listen(): void {
    this.state = "LISTEN";
  }

  /** Sends up to `max` bytes from `source(n)` as the stack's window and MSS allow. Returns bytes sent. */
  pushData(source: (n: number) => Buffer, max: number): number {
    let sent = 0;
    while (sent < max) {
      const inflight = seqDiff(this.sndNxt, this.sndUna);
      const usable = this.peerWnd - inflight;
      if (usable <= 0) break;
      const n = Math.min(usable, this.peerMss, max - sent);
      const data = source(n);
      this.unacked.push(data);
      this.send(this.frame(TCP_ACK | TCP_PSH, data));
      this.sndNxt = seqAdd(this.sndNxt, data.length);
      sent += data.length;
    }
    return sent;
  }

  fin(): void {
    this.send(this.frame(TCP_FIN | TCP_ACK));
    this.sndNxt = seqAdd(this.sndNxt, 1);
    this.state = "FIN_SENT";
  }

  rst(seq = this.sndNxt): void {
    this.send(this.frame(TCP_RST | TCP_ACK, undefined, seq));
  }

  /** The guest app read what it held: window update. */
  read(): void {
    this.appPaused = false;
    this.held = 0;
    this.send(this.frame(TCP_ACK));
  }

  /** Handles one segment from the stack addressed to this endpoint. */
  onSegment(t: TcpSegment & { data: Buffer }): void {
    this.segmentsIn++;
    if (t.flags & TCP_RST) {
      this.rstReceived = true;
      this.state = "RESET";
      return;
    }
    if (this.state === "SYN_SENT") {
      if ((t.flags & (TCP_SYN | TCP_ACK)) !== (TCP_SYN | TCP_ACK)) return;
      this.#takeSyn(t);
      this.sndUna = t.ack;
      this.state = "ESTABLISHED";
      this.send(this.frame(TCP_ACK));
      return;
    }
    if (this.state === "LISTEN" && t.flags & TCP_SYN) {
      this.#takeSyn(t);
      this.state = "SYN_RCVD";
      const f = tcpFrame({
        srcPort: this.o.localPort,
        dst: this.o.remote,
        dstPort: this.o.remotePort,
        seq: this.sndNxt,
        ack: this.rcvNxt,
        flags: TCP_SYN | TCP_ACK,
        window: Math.min(0xffff, this.o.rcvWindow),
        mss: this.o.mss,
        ...(this.o.wscale !== undefined && t.options.wscale !== undefined ? { wscale: this.o.wscale } : {}),
      });
      if (t.options.wscale === undefined) {
        this.peerShift = 0;
        this.ourShift = 0;
      }
      this.sndNxt = seqAdd(this.sndNxt, 1);
      this.send(f);
      return;
    }
    if (t.flags & TCP_ACK) {
      this.acksIn++;
      if (this.state === "SYN_RCVD" && t.ack === this.sndNxt) {
        this.state = "ESTABLISHED";
        this.sndUna = t.ack;
      }
      if (seqGt(t.ack, this.sndUna)) {
        let acked = seqDiff(t.ack, this.sndUna);
        this.sndUna = t.ack;
        while (acked > 0 && this.unacked.length > 0) {
          const b = this.unacked[0]!;
          if (b.length <= acked) {
            acked -= b.length;
            this.unacked.shift();
          } else {
            this.unacked[0] = b.subarray(acked);
            acked = 0;
          }
        }
      }
      this.peerWnd = t.window * 2 ** this.peerShift;
    }
    let needAck = false;
    if (t.dataLen > 0) {
      if (t.seq === this.rcvNxt) {
        const free = this.o.rcvWindow - this.held;
        const take = Math.min(t.dataLen, Math.max(0, free));
        const d = t.data.subarray(0, take);
        this.hash.update(d);
        this.keep?.push(Buffer.from(d));
        this.received += take;
        this.rcvNxt = seqAdd(this.rcvNxt, take);
        if (this.appPaused) this.held += take;
      }
      needAck = true;
    }
    if (t.flags & TCP_FIN && seqAdd(t.seq, t.dataLen) === this.rcvNxt) {
      this.rcvNxt = seqAdd(this.rcvNxt, 1);
      this.finReceived = true;
      needAck = true;
    }
    // A segment below rcv.nxt (a window probe) also gets an ACK.
    if (t.dataLen === 0 && !(t.flags & (TCP_FIN | TCP_SYN)) && seqDiff(t.seq, this.rcvNxt) < 0) needAck = true;
    if (needAck) this.send(this.frame(TCP_ACK));
  }

  #takeSyn(t: TcpSegment): void {
    this.rcvNxt = seqAdd(t.seq, 1);
    this.peerMss = t.options.mss ?? 536;
    if (t.options.wscale !== undefined && this.o.wscale !== undefined) {
      this.peerShift = t.options.wscale;
      this.ourShift = this.o.wscale;
    }
    this.peerWnd = t.window;
  }
}

/**
 * Routes the stack's output to guest endpoints by port until no frame is left (iteratively, so a
 * long transfer never recurses). Frames for no endpoint are returned.
 */
export function pump(h: Harness, endpoints: GuestTcp[], maxRounds = 1e9): Buffer[] {
  const stray: Buffer[] = [];
  let rounds = 0;
  while (h.out.length > 0 && rounds++ < maxRounds) {
    const f = h.out.shift()!;
    const p = parseOut(f);
    const ep = p.tcp ? endpoints.find((e) => e.o.localPort === p.tcp!.dstPort && e.o.remotePort === p.tcp!.srcPort && e.o.remote === p.src) : undefined;
    if (ep && p.tcp) ep.onSegment(p.tcp);
    else stray.push(f);
  }
  return stray;
}

export { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, seqAdd };

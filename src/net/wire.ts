/**
 * Parsers and builders for the headers the stack speaks: Ethernet II, ARP, IPv4, ICMP, UDP and TCP.
 * Every parser bounds-checks before each fixed-offset read and returns either the fields or a drop
 * reason (never throws on guest bytes). Builders write one frame into one fresh buffer, so a payload is
 * copied exactly once on its way to the guest.
 */
import { checksum, finishChecksum, pseudoHeaderSum, sum16 } from "./checksum.ts";

export const ETH_HEADER_BYTES = 14;
export const IPV4_HEADER_BYTES = 20;
export const TCP_HEADER_BYTES = 20;
export const UDP_HEADER_BYTES = 8;
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_IPV6 = 0x86dd;
export const PROTO_ICMP = 1;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;

export type Drop<R extends string> = { ok: false; reason: R };

// ---------------------------------------------------------------------------------------------------- ARP

export interface ArpPacket {
  ok: true;
  op: number;
  senderMac: Buffer;
  senderIp: number;
  targetMac: Buffer;
  targetIp: number;
}

export function parseArp(buf: Buffer, off: number): ArpPacket | Drop<"arp-malformed"> {
  if (buf.length - off < 28) return { ok: false, reason: "arp-malformed" };
  if (buf.readUInt16BE(off) !== 1 || buf.readUInt16BE(off + 2) !== ETHERTYPE_IPV4 || buf[off + 4] !== 6 || buf[off + 5] !== 4)
    return { ok: false, reason: "arp-malformed" };
  const op = buf.readUInt16BE(off + 6);
  if (op !== 1 && op !== 2) return { ok: false, reason: "arp-malformed" };
  return {
    ok: true,
    op,
    senderMac: buf.subarray(off + 8, off + 14),
    senderIp: buf.readUInt32BE(off + 14),
    targetMac: buf.subarray(off + 18, off + 24),
    targetIp: buf.readUInt32BE(off + 24),
  };
}

export function buildArpReply(ourMac: Uint8Array, ourIp: number, peerMac: Uint8Array, peerIp: number): Buffer {
  const f = Buffer.alloc(ETH_HEADER_BYTES + 28);
  f.set(peerMac, 0);
  f.set(ourMac, 6);
  f.writeUInt16BE(ETHERTYPE_ARP, 12);
  const o = ETH_HEADER_BYTES;
  f.writeUInt16BE(1, o);
  f.writeUInt16BE(ETHERTYPE_IPV4, o + 2);
  f[o + 4] = 6;
  f[o + 5] = 4;
  f.writeUInt16BE(2, o + 6);
  f.set(ourMac, o + 8);
  f.writeUInt32BE(ourIp, o + 14);
  f.set(peerMac, o + 18);
  f.writeUInt32BE(peerIp, o + 24);
  return f;
}

// --------------------------------------------------------------------------------------------------- IPv4

export type Ipv4DropReason = "ipv4-malformed" | "ipv4-bad-checksum" | "ipv4-fragment" | "ipv4-options";

export interface Ipv4Packet {
  ok: true;
  src: number;
  dst: number;
  protocol: number;
  ttl: number;
  /** Offset and length of the L4 payload in the frame buffer (total length honoured, padding cut). */
  payloadOff: number;
  payloadLen: number;
}

export function parseIpv4Header(buf: Buffer, off: number): Ipv4Packet | Drop<Ipv4DropReason> {
  const avail = buf.length - off;
  if (avail < IPV4_HEADER_BYTES) return { ok: false, reason: "ipv4-malformed" };
  const vihl = buf[off]!;
  const ihl = (vihl & 0x0f) * 4;
  if (vihl >>> 4 !== 4 || ihl < IPV4_HEADER_BYTES || ihl > avail) return { ok: false, reason: "ipv4-malformed" };
  const total = buf.readUInt16BE(off + 2);
  if (total < ihl || total > avail) return { ok: false, reason: "ipv4-malformed" };
  if (checksum(buf, off, ihl) !== 0) return { ok: false, reason: "ipv4-bad-checksum" };
  // Fragments are never reassembled: a datagram with MF set or a non-zero offset is not whole
  // (gondolin forwarded such fragments as complete datagrams, research/network.md (b)).
  const frag = buf.readUInt16BE(off + 6);
  if ((frag & 0x2000) !== 0 || (frag & 0x1fff) !== 0) return { ok: false, reason: "ipv4-fragment" };
  if (ihl > IPV4_HEADER_BYTES) return { ok: false, reason: "ipv4-options" };
  return {
    ok: true,
    src: buf.readUInt32BE(off + 12),
    dst: buf.readUInt32BE(off + 16),
    protocol: buf[off + 9]!,
    ttl: buf[off + 8]!,
    payloadOff: off + ihl,
    payloadLen: total - ihl,
  };
}

export interface FrameAddressing {
  srcMac: Uint8Array;
  dstMac: Uint8Array;
  src: number;
  dst: number;
}

let ipId = 1;

/** Allocates an Ethernet+IPv4 frame with room for `l4Len` bytes and writes both headers (DF set, TTL 64). */
export function allocIpv4Frame(a: FrameAddressing, protocol: number, l4Len: number): Buffer {
  const total = IPV4_HEADER_BYTES + l4Len;
  const f = Buffer.allocUnsafe(ETH_HEADER_BYTES + total);
  f.set(a.dstMac, 0);
  f.set(a.srcMac, 6);
  f.writeUInt16BE(ETHERTYPE_IPV4, 12);
  const o = ETH_HEADER_BYTES;
  f[o] = 0x45;
  f[o + 1] = 0;
  f.writeUInt16BE(total, o + 2);
  f.writeUInt16BE(ipId, o + 4);
  ipId = (ipId + 1) & 0xffff;
  f.writeUInt16BE(0x4000, o + 6);
  f[o + 8] = 64;
  f[o + 9] = protocol;
  f.writeUInt16BE(0, o + 10);
  f.writeUInt32BE(a.src, o + 12);
  f.writeUInt32BE(a.dst, o + 16);
  f.writeUInt16BE(checksum(f, o, IPV4_HEADER_BYTES), o + 10);
  return f;
}

// --------------------------------------------------------------------------------------------------- ICMP

export interface IcmpPacket {
  ok: true;
  type: number;
  code: number;
  /** Offset/length of the whole ICMP message. */
  off: number;
  len: number;
}

export function parseIcmp(buf: Buffer, off: number, len: number): IcmpPacket | Drop<"icmp-malformed" | "icmp-bad-checksum"> {
  if (len < 8 || off + len > buf.length) return { ok: false, reason: "icmp-malformed" };
  if (checksum(buf, off, len) !== 0) return { ok: false, reason: "icmp-bad-checksum" };
  return { ok: true, type: buf[off]!, code: buf[off + 1]!, off, len };
}

/** An echo reply carrying the request's identifier, sequence and data. */
export function buildIcmpEchoReply(a: FrameAddressing, req: Buffer, off: number, len: number): Buffer {
  const f = allocIpv4Frame(a, PROTO_ICMP, len);
  const o = ETH_HEADER_BYTES + IPV4_HEADER_BYTES;
  req.copy(f, o, off, off + len);
  f[o] = 0;
  f[o + 1] = 0;
  f.writeUInt16BE(0, o + 2);
  f.writeUInt16BE(checksum(f, o, len), o + 2);
  return f;
}

export const ICMP_HOST_UNREACHABLE = 1;
export const ICMP_PORT_UNREACHABLE = 3;
export const ICMP_ADMIN_PROHIBITED = 13;

/**
 * Destination unreachable (type 3) about the datagram at `ipOff` in `orig`: quotes its IP header and the
 * first 8 bytes of its payload (RFC 792), which is what the guest's kernel matches to the socket.
 */
export function buildIcmpUnreachable(a: FrameAddressing, code: number, orig: Buffer, ipOff: number): Buffer {
  const quoteLen = Math.min(orig.length - ipOff, IPV4_HEADER_BYTES + 8);
  const len = 8 + quoteLen;
  const f = allocIpv4Frame(a, PROTO_ICMP, len);
  const o = ETH_HEADER_BYTES + IPV4_HEADER_BYTES;
  f[o] = 3;
  f[o + 1] = code;
  f.writeUInt32BE(0, o + 2);
  f.writeUInt16BE(0, o + 6);
  orig.copy(f, o + 8, ipOff, ipOff + quoteLen);
  f.writeUInt16BE(0, o + 2);
  f.writeUInt16BE(checksum(f, o, len), o + 2);
  return f;
}

// ---------------------------------------------------------------------------------------------------- UDP

export interface UdpPacket {
  ok: true;
  srcPort: number;
  dstPort: number;
  dataOff: number;
  dataLen: number;
}

export function parseUdp(buf: Buffer, off: number, len: number, src: number, dst: number): UdpPacket | Drop<"udp-malformed" | "udp-bad-checksum"> {
  if (len < UDP_HEADER_BYTES || off + len > buf.length) return { ok: false, reason: "udp-malformed" };
  const udpLen = buf.readUInt16BE(off + 4);
  if (udpLen < UDP_HEADER_BYTES || udpLen > len) return { ok: false, reason: "udp-malformed" };
  const sum = buf.readUInt16BE(off + 6);
  // A zero checksum means "none" over IPv4 (RFC 768).
  if (sum !== 0 && finishChecksum(pseudoHeaderSum(src, dst, PROTO_UDP, udpLen) + sum16(buf, off, udpLen)) !== 0)
    return { ok: false, reason: "udp-bad-checksum" };
  const srcPort = buf.readUInt16BE(off);
  const dstPort = buf.readUInt16BE(off + 2);
  if (srcPort === 0 || dstPort === 0) return { ok: false, reason: "udp-malformed" };
  return { ok: true, srcPort, dstPort, dataOff: off + UDP_HEADER_BYTES, dataLen: udpLen - UDP_HEADER_BYTES };
}

export function buildUdpFrame(a: FrameAddressing, srcPort: number, dstPort: number, data: Uint8Array): Buffer {
  const len = UDP_HEADER_BYTES + data.length;
  const f = allocIpv4Frame(a, PROTO_UDP, len);
  const o = ETH_HEADER_BYTES + IPV4_HEADER_BYTES;
  f.writeUInt16BE(srcPort, o);
  f.writeUInt16BE(dstPort, o + 2);
  f.writeUInt16BE(len, o + 4);
  f.writeUInt16BE(0, o + 6);
  f.set(data, o + UDP_HEADER_BYTES);
  const c = finishChecksum(pseudoHeaderSum(a.src, a.dst, PROTO_UDP, len) + sum16(f, o, len));
  f.writeUInt16BE(c === 0 ? 0xffff : c, o + 6);
  return f;
}

// ---------------------------------------------------------------------------------------------------- TCP

export interface TcpOptions {
  mss: number | undefined;
  /** Window-scale shift, clamped to 14 (RFC 7323 §2.3). */
  wscale: number | undefined;
}

export interface TcpSegment {
  ok: true;
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  options: TcpOptions;
  dataOff: number;
  dataLen: number;
}

export type TcpDropReason = "tcp-malformed" | "tcp-bad-checksum" | "tcp-bad-options";

/** Parses TCP options (MSS and window scale; SACK, timestamps and the rest are skipped). */
export function parseTcpOptions(buf: Buffer, off: number, len: number): TcpOptions | undefined {
  const out: TcpOptions = { mss: undefined, wscale: undefined };
  let i = off;
  const end = off + len;
  while (i < end) {
    const kind = buf[i]!;
    if (kind === 0) break;
    if (kind === 1) {
      i++;
      continue;
    }
    if (i + 1 >= end) return undefined;
    const olen = buf[i + 1]!;
    if (olen < 2 || i + olen > end) return undefined;
    if (kind === 2) {
      if (olen !== 4) return undefined;
      out.mss = buf.readUInt16BE(i + 2);
    } else if (kind === 3) {
      if (olen !== 3) return undefined;
      out.wscale = Math.min(buf[i + 2]!, 14);
    }
    i += olen;
  }
  return out;
}

export function parseTcp(buf: Buffer, off: number, len: number, src: number, dst: number): TcpSegment | Drop<TcpDropReason> {
  if (len < TCP_HEADER_BYTES || off + len > buf.length) return { ok: false, reason: "tcp-malformed" };
  const doff = (buf[off + 12]! >>> 4) * 4;
  if (doff < TCP_HEADER_BYTES || doff > len) return { ok: false, reason: "tcp-malformed" };
  if (finishChecksum(pseudoHeaderSum(src, dst, PROTO_TCP, len) + sum16(buf, off, len)) !== 0) return { ok: false, reason: "tcp-bad-checksum" };
  const options = doff > TCP_HEADER_BYTES ? parseTcpOptions(buf, off + TCP_HEADER_BYTES, doff - TCP_HEADER_BYTES) : { mss: undefined, wscale: undefined };
  if (!options) return { ok: false, reason: "tcp-bad-options" };
  const srcPort = buf.readUInt16BE(off);
  const dstPort = buf.readUInt16BE(off + 2);
  if (srcPort === 0 || dstPort === 0) return { ok: false, reason: "tcp-malformed" };
  return {
    ok: true,
    srcPort,
    dstPort,
    seq: buf.readUInt32BE(off + 4),
    ack: buf.readUInt32BE(off + 8),
    flags: buf[off + 13]! & 0x3f,
    window: buf.readUInt16BE(off + 14),
    options,
    dataOff: off + doff,
    dataLen: len - doff,
  };
}

export interface TcpHeaderFields {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  /** Sent on SYN segments only. */
  mss?: number;
  wscale?: number;
}

/**
 * Builds one TCP segment frame. `fill(frame, off)` writes the `payloadLen` payload bytes at `off`
 * (straight from the flow's send queue: the one copy of the data).
 */
export function buildTcpFrame(a: FrameAddressing, h: TcpHeaderFields, payloadLen: number, fill?: (frame: Buffer, off: number) => void): Buffer {
  const optLen = (h.mss !== undefined ? 4 : 0) + (h.wscale !== undefined ? 4 : 0);
  const hdr = TCP_HEADER_BYTES + optLen;
  const len = hdr + payloadLen;
  const f = allocIpv4Frame(a, PROTO_TCP, len);
  const o = ETH_HEADER_BYTES + IPV4_HEADER_BYTES;
  f.writeUInt16BE(h.srcPort, o);
  f.writeUInt16BE(h.dstPort, o + 2);
  f.writeUInt32BE(h.seq >>> 0, o + 4);
  f.writeUInt32BE(h.ack >>> 0, o + 8);
  f[o + 12] = (hdr / 4) << 4;
  f[o + 13] = h.flags;
  f.writeUInt16BE(h.window, o + 14);
  f.writeUInt32BE(0, o + 16); // checksum + urgent pointer
  let p = o + TCP_HEADER_BYTES;
  if (h.mss !== undefined) {
    f[p] = 2;
    f[p + 1] = 4;
    f.writeUInt16BE(h.mss, p + 2);
    p += 4;
  }
  if (h.wscale !== undefined) {
    f[p] = 1;
    f[p + 1] = 3;
    f[p + 2] = 3;
    f[p + 3] = h.wscale;
    p += 4;
  }
  if (payloadLen > 0) fill!(f, p);
  f.writeUInt16BE(finishChecksum(pseudoHeaderSum(a.src, a.dst, PROTO_TCP, len) + sum16(f, o, len)), o + 16);
  return f;
}

/**
 * The NetworkStack facade: frames from the guest in (`receiveFrames`), frames to the guest out (the
 * `output` callback), host sides through the injected connector, datagram factory, policy and resolver.
 * One instance per workspace, owned by the supervisor; pure (no sockets, files or processes here).
 *
 * L2/L3 rules (research/network.md (c) 2): accept only frames from the guest MAC to the gateway MAC (or
 * broadcast, for ARP); answer ARP only for the gateway and never learn from ARP; IPv4 fully validated,
 * source must be the guest; fragments, options and IPv6 are dropped and counted by reason; ICMP echo
 * for the gateway only; ICMP unreachable for refused UDP and RST for refused TCP, so clients fail fast.
 */
import { formatIpv4, parseIpv4, parseMac, prefixMask } from "./addr.ts";
import { resolveNetworkOptions } from "./config.ts";
import type { NetworkStackOptions, ResolvedNetworkStackOptions } from "./config.ts";
import { DnsServer, DnsTcpSession } from "./dns.ts";
import { NetErrors } from "./errors.ts";
import { TcpFlow } from "./tcp.ts";
import type { TcpEnv, TcpState } from "./tcp.ts";
import { TimerWheel, systemClock } from "./timers.ts";
import type { NetClock, Timer } from "./timers.ts";
import type {
  ByteStream,
  ByteStreamHandlers,
  DestinationPolicy,
  DnsObserver,
  HostConnector,
  HostDatagram,
  HostDatagramFactory,
  Resolver,
} from "./types.ts";
import {
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
  ETH_HEADER_BYTES,
  ICMP_HOST_UNREACHABLE,
  ICMP_PORT_UNREACHABLE,
  PROTO_ICMP,
  PROTO_TCP,
  PROTO_UDP,
  TCP_ACK,
  TCP_RST,
  TCP_SYN,
  TCP_FIN,
  buildArpReply,
  buildIcmpEchoReply,
  buildIcmpUnreachable,
  buildTcpFrame,
  buildUdpFrame,
  parseArp,
  parseIcmp,
  parseIpv4Header,
  parseTcp,
  parseUdp,
} from "./wire.ts";
import type { FrameAddressing, TcpSegment } from "./wire.ts";

export interface NetworkStackDeps {
  /** Sends one Ethernet frame to the guest; false = the link is backed up (call `outputDrained()` later). */
  output(frame: Buffer): boolean;
  connector: HostConnector;
  datagrams: HostDatagramFactory;
  policy: DestinationPolicy;
  resolver: Resolver;
  dnsObserver?: DnsObserver;
  clock?: NetClock;
  /** Initial send sequence numbers (tests force them near 2^32); default: random. */
  isn?: () => number;
}

export interface FlowInfo {
  proto: "tcp" | "udp";
  state: TcpState | "OPEN";
  guestPort: number;
  remoteIp: string;
  remotePort: number;
  /** True for flows the guest opened; false for connectToGuest (published ports). */
  fromGuest: boolean;
  bytesFromGuest: number;
  bytesToGuest: number;
  bufferedBytes: number;
}

export interface NetworkStats {
  framesIn: number;
  framesOut: number;
  bytesIn: number;
  bytesOut: number;
  /** Frames dropped, by reason. */
  drops: Record<string, number>;
  tcp: { open: number; halfOpen: number; timeWait: number; accepted: number; refused: Record<string, number> };
  udp: { open: number; accepted: number; refused: Record<string, number> };
  dns: { inFlight: number };
  /** Everything else worth counting (retransmits, challenge ACKs, DNS outcomes, timeouts...). */
  events: Record<string, number>;
  bufferedBytes: number;
  severed: boolean;
}

interface UdpFlow {
  key: string;
  guestPort: number;
  remoteIp: number;
  remoteIpText: string;
  remotePort: number;
  host: HostDatagram | undefined;
  lastActivity: number;
  idle: Timer;
  bytesFromGuest: number;
  bytesToGuest: number;
}

const EPHEMERAL_LOW = 32768;
const EPHEMERAL_HIGH = 60999;

function defaultIsn(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0]!;
}

function bump(rec: Record<string, number>, k: string, n = 1): void {
  rec[k] = (rec[k] ?? 0) + n;
}

export class NetworkStack {
  readonly config: ResolvedNetworkStackOptions;
  readonly #deps: NetworkStackDeps;
  readonly #wheel: TimerWheel;
  readonly #guestMac: Buffer;
  readonly #gwMac: Buffer;
  readonly #guestIp: number;
  readonly #gwIp: number;
  readonly #mask: number;
  readonly #isn: () => number;
  readonly #dns: DnsServer;
  readonly #tcp = new Map<string, TcpFlow>();
  readonly #udp = new Map<string, UdpFlow>();
  readonly #env: TcpEnv;
  #linkOpen = true;
  #severed = false;
  #closed = false;
  #nextEphemeral = EPHEMERAL_LOW;
  #buffered = 0;
  #tcpOpen = 0;
  #halfOpen = 0;
  #timeWait = 0;
  /** Flows with data waiting for the link to drain. */
  #stalled = new Set<TcpFlow>();
  /** Inside receiveFrames: ACKs are coalesced to one per flow per batch (like a delayed ACK, without a timer). */
  #batching = false;
  #ackLater = new Set<TcpFlow>();
  readonly #guestMacHi: number;
  readonly #guestMacLo: number;
  readonly #gwMacHi: number;
  readonly #gwMacLo: number;

  readonly #stats = {
    framesIn: 0,
    framesOut: 0,
    bytesIn: 0,
    bytesOut: 0,
    drops: {} as Record<string, number>,
    tcpAccepted: 0,
    tcpRefused: {} as Record<string, number>,
    udpAccepted: 0,
    udpRefused: {} as Record<string, number>,
    events: {} as Record<string, number>,
  };

  constructor(options: NetworkStackOptions | ResolvedNetworkStackOptions, deps: NetworkStackDeps) {
    this.config = resolveNetworkOptions(options as NetworkStackOptions);
    this.#deps = deps;
    this.#wheel = new TimerWheel(deps.clock ?? systemClock);
    this.#guestMac = parseMac(this.config.guestMac)!;
    this.#gwMac = parseMac(this.config.gatewayMac)!;
    this.#guestMacHi = this.#guestMac.readUInt32BE(0);
    this.#guestMacLo = this.#guestMac.readUInt16BE(4);
    this.#gwMacHi = this.#gwMac.readUInt32BE(0);
    this.#gwMacLo = this.#gwMac.readUInt16BE(4);
    this.#guestIp = parseIpv4(this.config.guestIp)!;
    this.#gwIp = parseIpv4(this.config.gatewayIp)!;
    this.#mask = prefixMask(this.config.prefixLength);
    this.#isn = deps.isn ?? defaultIsn;
    const hosts = new Map<string, number>();
    for (const [n, ip] of Object.entries(this.config.dns.hosts)) hosts.set(n, parseIpv4(ip)!);
    this.#dns = new DnsServer({
      wheel: this.#wheel,
      resolver: deps.resolver,
      observer: deps.dnsObserver,
      gatewayIp: this.#gwIp,
      hosts,
      maxInFlight: this.config.caps.dnsInFlight,
      timeoutMs: this.config.dns.timeoutMs,
      maxUdpBytes: this.config.mtu - 28,
      count: (r) => bump(this.#stats.events, r),
    });
    const localMss = this.config.mtu - 40;
    let wscale = 0;
    while (wscale < 14 && 0xffff * 2 ** wscale < this.config.caps.flowBufferBytes) wscale++;
    this.#env = {
      wheel: this.#wheel,
      tun: this.config.tcp,
      localMss,
      localWscale: wscale,
      emit: (f) => this.#emit(f),
      linkWritable: () => this.#linkOpen,
      waitForLink: (f) => this.#stalled.add(f),
      deferAck: (f) => {
        if (!this.#batching) return false;
        this.#ackLater.add(f);
        return true;
      },
      globalFree: () => Math.max(0, this.config.caps.totalBufferBytes - this.#buffered),
      account: (d) => {
        this.#buffered += d;
      },
      count: (r) => bump(this.#stats.events, r),
      released: (f) => this.#released(f),
      stateChanged: (f, from) => this.#stateChanged(f, from),
    };
  }

  // ------------------------------------------------------------------------------------ public API

  /**
   * Processes frames from the guest: one decoded batch from the link (what one socket read held). ACKs
   * for the batch's data are coalesced to one per flow, sent at the end.
   */
  receiveFrames(frames: readonly Buffer[]): void {
    if (this.#batching) {
      for (const f of frames) this.receiveFrame(f);
      return;
    }
    this.#batching = true;
    try {
      for (const f of frames) this.receiveFrame(f);
    } finally {
      this.#batching = false;
      const flows = [...this.#ackLater];
      this.#ackLater.clear();
      for (const f of flows) f.flushBatch();
    }
  }

  receiveFrame(frame: Buffer): void {
    const s = this.#stats;
    if (this.#severed) {
      bump(s.drops, "severed");
      return;
    }
    s.framesIn++;
    s.bytesIn += frame.length;
    if (frame.length < ETH_HEADER_BYTES) return this.#drop("eth-runt");
    if (frame.readUInt32BE(6) !== this.#guestMacHi || frame.readUInt16BE(10) !== this.#guestMacLo) return this.#drop("eth-foreign-src");
    const dHi = frame.readUInt32BE(0);
    const dLo = frame.readUInt16BE(4);
    const toUs = dHi === this.#gwMacHi && dLo === this.#gwMacLo;
    const type = frame.readUInt16BE(12);
    if (type === ETHERTYPE_ARP) {
      if (!toUs && !(dHi === 0xffffffff && dLo === 0xffff)) return this.#drop("eth-not-for-us");
      return this.#arp(frame);
    }
    if (type === ETHERTYPE_IPV6) return this.#drop("ipv6");
    if (type !== ETHERTYPE_IPV4) return this.#drop("eth-unknown-type");
    if (!toUs) return this.#drop("eth-not-for-us");
    this.#ipv4(frame);
  }

  /** The link toward the guest drained after `output` returned false: resume sending data. */
  outputDrained(): void {
    if (this.#closed) return;
    this.#linkOpen = true;
    const flows = [...this.#stalled];
    this.#stalled.clear();
    for (const f of flows) {
      if (!this.#linkOpen) {
        this.#stalled.add(f);
        continue;
      }
      f.trySend();
    }
  }

  /**
   * Opens a TCP connection from the gateway into the guest's `port` (published ports). The returned
   * stream carries host bytes into the guest; `handlers` get the guest's bytes and the lifecycle.
   */
  connectToGuest(port: number, handlers: ByteStreamHandlers): ByteStream {
    if (this.#severed) throw NetErrors.NET_LINK_CLOSED({ message: "the workspace's network was severed; no new connections into the guest" });
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw NetErrors.NET_INVALID_CONFIG({ message: `guest port ${port} is not in 1-65535` });
    const cap = this.#capHit();
    if (cap) {
      bump(this.#stats.tcpRefused, cap.reason);
      throw NetErrors.NET_CAP_EXCEEDED({ message: `cannot open a connection into the guest: ${cap.reason}`, details: { reason: cap.reason } });
    }
    let local = 0;
    for (let i = 0; i <= EPHEMERAL_HIGH - EPHEMERAL_LOW; i++) {
      const p = this.#nextEphemeral;
      this.#nextEphemeral = p >= EPHEMERAL_HIGH ? EPHEMERAL_LOW : p + 1;
      if (!this.#tcp.has(this.#key(port, this.#gwIp, p))) {
        local = p;
        break;
      }
    }
    if (local === 0) throw NetErrors.NET_CAP_EXCEEDED({ message: "no free source port toward the guest" });
    const flow = new TcpFlow(this.#env, this.#addr(this.#gwIp), local, port, this.#isn(), false);
    this.#tcp.set(this.#key(port, this.#gwIp, local), flow);
    this.#tcpOpen++;
    this.#halfOpen++;
    return flow.openToGuest(handlers);
  }

  /** Quarantine: cut every flow at once (host sides closed with NET_LINK_CLOSED), drop every later frame. */
  sever(): void {
    if (this.#severed) return;
    this.#severed = true;
    const err = NetErrors.NET_LINK_CLOSED({ message: "the workspace's network was severed" });
    for (const f of [...this.#tcp.values()]) f.kill(err);
    for (const u of [...this.#udp.values()]) this.#closeUdp(u);
    this.#dns.close();
  }

  /** Severs and stops every timer; the stack is unusable afterwards. */
  close(): void {
    this.sever();
    this.#closed = true;
    this.#wheel.close();
  }

  stats(): NetworkStats {
    const s = this.#stats;
    return {
      framesIn: s.framesIn,
      framesOut: s.framesOut,
      bytesIn: s.bytesIn,
      bytesOut: s.bytesOut,
      drops: { ...s.drops },
      tcp: { open: this.#tcpOpen, halfOpen: this.#halfOpen, timeWait: this.#timeWait, accepted: s.tcpAccepted, refused: { ...s.tcpRefused } },
      udp: { open: this.#udp.size, accepted: s.udpAccepted, refused: { ...s.udpRefused } },
      dns: { inFlight: this.#dns.inFlight },
      events: { ...s.events },
      bufferedBytes: this.#buffered,
      severed: this.#severed,
    };
  }

  flows(): FlowInfo[] {
    const out: FlowInfo[] = [];
    for (const f of this.#tcp.values())
      out.push({
        proto: "tcp",
        state: f.state,
        guestPort: f.guestPort,
        remoteIp: formatIpv4(f.addr.src),
        remotePort: f.localPort,
        fromGuest: f.initiatedByGuest,
        bytesFromGuest: f.bytesFromGuest,
        bytesToGuest: f.bytesToGuest,
        bufferedBytes: f.bufferedBytes,
      });
    for (const u of this.#udp.values())
      out.push({
        proto: "udp",
        state: "OPEN",
        guestPort: u.guestPort,
        remoteIp: u.remoteIpText,
        remotePort: u.remotePort,
        fromGuest: true,
        bytesFromGuest: u.bytesFromGuest,
        bytesToGuest: u.bytesToGuest,
        bufferedBytes: 0,
      });
    return out;
  }

  /** Runs due timers now (for hosts that drive time themselves; the wheel's own host timer does this otherwise). */
  runTimers(): void {
    this.#wheel.runDue();
  }

  // ------------------------------------------------------------------------------------ internals

  #drop(reason: string): void {
    bump(this.#stats.drops, reason);
  }

  #emit(frame: Buffer): void {
    if (this.#severed) return;
    this.#stats.framesOut++;
    this.#stats.bytesOut += frame.length;
    if (!this.#deps.output(frame)) this.#linkOpen = false;
  }

  #addr(remote: number): FrameAddressing {
    return { srcMac: this.#gwMac, dstMac: this.#guestMac, src: remote, dst: this.#guestIp };
  }

  #key(guestPort: number, remoteIp: number, remotePort: number): string {
    return `${guestPort}/${remoteIp}/${remotePort}`;
  }

  #arp(frame: Buffer): void {
    const a = parseArp(frame, ETH_HEADER_BYTES);
    if (!a.ok) return this.#drop(a.reason);
    // We never learn from ARP: the guest's MAC and IP are configured, so replies, gratuitous
    // announcements and spoofed senders change nothing (hostile-guest case 15).
    if (a.op !== 1) return this.#drop("arp-reply-ignored");
    if (a.senderIp === 0) return this.#drop("arp-probe");
    if (!a.senderMac.equals(this.#guestMac) || a.senderIp !== this.#guestIp) return this.#drop("arp-spoofed");
    if (a.senderIp === a.targetIp) return this.#drop("arp-gratuitous");
    if (a.targetIp !== this.#gwIp) return this.#drop("arp-not-gateway");
    this.#emit(buildArpReply(this.#gwMac, this.#gwIp, this.#guestMac, this.#guestIp));
  }

  #badDestination(dst: number): boolean {
    const top = dst >>> 24;
    if (top === 0 || top === 127 || top >= 224) return true; // this-network, loopback, multicast, reserved, broadcast
    if (dst === this.#guestIp) return true;
    return (dst & this.#mask) === (this.#guestIp & this.#mask) && (dst & ~this.#mask) === (~this.#mask >>> 0);
  }

  #ipv4(frame: Buffer): void {
    const ip = parseIpv4Header(frame, ETH_HEADER_BYTES);
    if (!ip.ok) return this.#drop(ip.reason);
    if (ip.src !== this.#guestIp) return this.#drop("ipv4-foreign-src");
    if (this.#badDestination(ip.dst)) return this.#drop("ipv4-bad-dst");
    if (ip.protocol === PROTO_TCP) return this.#tcpSegment(frame, ip.src, ip.dst, ip.payloadOff, ip.payloadLen);
    if (ip.protocol === PROTO_UDP) return this.#udpDatagram(frame, ip.src, ip.dst, ip.payloadOff, ip.payloadLen);
    if (ip.protocol === PROTO_ICMP) return this.#icmp(frame, ip.dst, ip.payloadOff, ip.payloadLen);
    this.#drop("ipv4-unknown-protocol");
  }

  #icmp(frame: Buffer, dst: number, off: number, len: number): void {
    const m = parseIcmp(frame, off, len);
    if (!m.ok) return this.#drop(m.reason);
    if (m.type !== 8 || m.code !== 0) return this.#drop("icmp-unsupported");
    if (dst !== this.#gwIp) return this.#drop("icmp-not-gateway");
    this.#emit(buildIcmpEchoReply(this.#addr(dst), frame, off, len));
  }

  // ------------------------------------------------------------------------------------------- UDP

  #isDns(dst: number, port: number): boolean {
    return port === 53 && (dst === this.#gwIp || this.config.dns.interceptAll);
  }

  #udpDatagram(frame: Buffer, src: number, dst: number, off: number, len: number): void {
    const u = parseUdp(frame, off, len, src, dst);
    if (!u.ok) return this.#drop(u.reason);
    const data = frame.subarray(u.dataOff, u.dataOff + u.dataLen);
    if (this.#isDns(dst, u.dstPort)) {
      const guestPort = u.srcPort;
      this.#dns.handle(Buffer.from(data), { target: formatIpv4(dst), transport: "udp" }, (answer) => {
        if (this.#severed) return;
        this.#emit(buildUdpFrame(this.#addr(dst), 53, guestPort, answer));
      });
      return;
    }
    const key = this.#key(u.srcPort, dst, u.dstPort);
    let flow = this.#udp.get(key);
    if (!flow) {
      const refuse = (reason: string, code = ICMP_PORT_UNREACHABLE) => {
        bump(this.#stats.udpRefused, reason);
        this.#emit(buildIcmpUnreachable(this.#addr(dst), code, frame, ETH_HEADER_BYTES));
      };
      const dstText = formatIpv4(dst);
      if (this.#udp.size >= this.config.caps.maxUdpFlows) {
        this.#deps.policy.capRefused?.({ proto: "udp", dstIp: dstText, dstPort: u.dstPort, guestPort: u.srcPort }, { reason: "udp-flow-cap", limit: this.config.caps.maxUdpFlows });
        return refuse("udp-flow-cap");
      }
      const v = this.#deps.policy.decide({ proto: "udp", dstIp: dstText, dstPort: u.dstPort, guestPort: u.srcPort });
      if (v.verdict !== "allow") return refuse(`denied: ${v.reason}`);
      flow = this.#openUdp(key, u.srcPort, dst, dstText, u.dstPort);
      if (!flow) return refuse("udp-host-error", ICMP_HOST_UNREACHABLE);
    }
    flow.lastActivity = this.#wheel.clock.now();
    flow.bytesFromGuest += data.length;
    try {
      flow.host?.send(Buffer.from(data));
    } catch {
      bump(this.#stats.events, "udp-host-error");
      this.#closeUdp(flow);
    }
  }

  #openUdp(key: string, guestPort: number, remoteIp: number, remoteIpText: string, remotePort: number): UdpFlow | undefined {
    const flow: UdpFlow = {
      key,
      guestPort,
      remoteIp,
      remoteIpText,
      remotePort,
      host: undefined,
      lastActivity: this.#wheel.clock.now(),
      idle: this.#wheel.timer(() => {
        const left = flow.lastActivity + this.config.udpIdleTimeoutMs - this.#wheel.clock.now();
        if (left > 0) return flow.idle.arm(left);
        bump(this.#stats.events, "udp-idle-timeout");
        this.#closeUdp(flow);
      }),
      bytesFromGuest: 0,
      bytesToGuest: 0,
    };
    const maxPayload = this.config.mtu - 28;
    try {
      flow.host = this.#deps.datagrams.open(
        { ip: remoteIpText, port: remotePort, guestPort },
        {
          onMessage: (data, from) => {
            if (this.#udp.get(key) !== flow) return;
            // Replies only from the peer this flow was opened to (hostile-guest case 31: no amplification
            // or injection from an unrelated source).
            if (from.ip !== remoteIpText || from.port !== remotePort) return bump(this.#stats.drops, "udp-foreign-peer");
            if (data.length > maxPayload) return bump(this.#stats.drops, "udp-reply-too-big");
            flow.lastActivity = this.#wheel.clock.now();
            flow.bytesToGuest += data.length;
            this.#emit(buildUdpFrame(this.#addr(remoteIp), remotePort, guestPort, data));
          },
          onError: () => {
            if (this.#udp.get(key) !== flow) return;
            bump(this.#stats.events, "udp-host-error");
            this.#closeUdp(flow);
          },
        },
      );
    } catch {
      return undefined;
    }
    this.#udp.set(key, flow);
    this.#stats.udpAccepted++;
    flow.idle.arm(this.config.udpIdleTimeoutMs);
    return flow;
  }

  #closeUdp(u: UdpFlow): void {
    if (this.#udp.get(u.key) === u) this.#udp.delete(u.key);
    u.idle.cancel();
    const h = u.host;
    u.host = undefined;
    try {
      h?.close();
    } catch {
      // closing a datagram socket has nothing left to report
    }
  }

  // ------------------------------------------------------------------------------------------- TCP

  #capHit(): { reason: string; limit: number } | undefined {
    const c = this.config.caps;
    if (this.#tcpOpen >= c.maxTcpFlows) return { reason: "tcp-flow-cap", limit: c.maxTcpFlows };
    if (this.#halfOpen >= c.maxHalfOpen) return { reason: "tcp-half-open-cap", limit: c.maxHalfOpen };
    if (this.#buffered >= c.totalBufferBytes) return { reason: "tcp-buffer-cap", limit: c.totalBufferBytes };
    return undefined;
  }

  #tcpSegment(frame: Buffer, src: number, dst: number, off: number, len: number): void {
    const seg = parseTcp(frame, off, len, src, dst);
    if (!seg.ok) return this.#drop(seg.reason);
    const key = this.#key(seg.srcPort, dst, seg.dstPort);
    let flow = this.#tcp.get(key);
    const syn = (seg.flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN)) === TCP_SYN;
    if (flow && flow.state === "TIME_WAIT" && syn) {
      flow.kill(NetErrors.NET_CONNECTION_RESET({ message: "the guest reused the port" }));
      flow = undefined;
    }
    if (flow) {
      flow.onSegment(seg, frame);
      if (flow.state !== "CLOSED" && flow.ackPending) flow.trySend();
      return;
    }
    if (seg.flags & TCP_RST) return this.#drop("tcp-no-flow");
    if (!syn) {
      this.#drop("tcp-no-flow");
      return this.#rstFor(dst, seg);
    }
    const cap = this.#capHit();
    if (cap) {
      bump(this.#stats.tcpRefused, cap.reason);
      this.#deps.policy.capRefused?.({ proto: "tcp", dstIp: formatIpv4(dst), dstPort: seg.dstPort, guestPort: seg.srcPort }, cap);
      return this.#rstFor(dst, seg);
    }
    const dstText = formatIpv4(dst);
    const dns = this.#isDns(dst, seg.dstPort);
    if (!dns) {
      const v = this.#deps.policy.decide({ proto: "tcp", dstIp: dstText, dstPort: seg.dstPort, guestPort: seg.srcPort });
      if (v.verdict !== "allow") {
        bump(this.#stats.tcpRefused, `denied: ${v.reason}`);
        return this.#rstFor(dst, seg);
      }
    }
    const f = new TcpFlow(this.#env, this.#addr(dst), seg.dstPort, seg.srcPort, this.#isn(), true);
    f.acceptSyn(seg);
    this.#tcp.set(key, f);
    this.#tcpOpen++;
    this.#halfOpen++;
    this.#stats.tcpAccepted++;
    const target = { ip: dstText, port: seg.dstPort, guestPort: seg.srcPort };
    if (dns) f.attachConnectorStream((h) => new DnsTcpSession(this.#dns, h, dst, this.#wheel));
    else f.attachConnectorStream((h) => this.#deps.connector.connect(target, h));
  }

  /** An RST for a segment that has no flow (RFC 9293 §3.10.7.1). */
  #rstFor(remote: number, seg: TcpSegment): void {
    const segLen = seg.dataLen + (seg.flags & TCP_SYN ? 1 : 0) + (seg.flags & TCP_FIN ? 1 : 0);
    const h =
      seg.flags & TCP_ACK
        ? { srcPort: seg.dstPort, dstPort: seg.srcPort, seq: seg.ack, ack: 0, flags: TCP_RST, window: 0 }
        : { srcPort: seg.dstPort, dstPort: seg.srcPort, seq: 0, ack: (seg.seq + segLen) >>> 0, flags: TCP_RST | TCP_ACK, window: 0 };
    this.#emit(buildTcpFrame(this.#addr(remote), h, 0));
  }

  #stateChanged(f: TcpFlow, from: TcpState): void {
    const wasHalf = from === "DIALING" || from === "SYN_RCVD" || from === "SYN_SENT";
    if (wasHalf && !f.halfOpen) this.#halfOpen--;
    if (f.state === "TIME_WAIT") {
      this.#tcpOpen--;
      this.#timeWait++;
    } else if (from === "TIME_WAIT") this.#timeWait--;
    else if (f.state === "CLOSED") this.#tcpOpen--;
  }

  #released(f: TcpFlow): void {
    const key = this.#key(f.guestPort, f.addr.src, f.localPort);
    if (this.#tcp.get(key) === f) this.#tcp.delete(key);
    this.#stalled.delete(f);
    this.#ackLater.delete(f);
  }
}

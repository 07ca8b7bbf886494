/**
 * The stack's configuration: `NetworkStackOptions` (what callers pass, all optional) and
 * `ResolvedNetworkStackOptions` (defaults applied, validated), so tests can build either.
 *
 * Defaults: one fixed private subnet for every workspace, 10.200.0.0/24 with the gateway (and DNS) at
 * .1 and the guest at .2 (research/network.md (c) 1; each workspace's LAN is private to its supervisor,
 * so there is nothing to collide with). MTU 65520, as passt uses: the stream netdev carries any frame up
 * to 64 KiB, and the stack's cost is per frame (research (b): 1.2 Gbit/s at 1460-byte segments against
 * 4.4 at 8960 for gondolin's stack; 2.9 Gbit/s at 64 KiB frames for a careful JS path), and under TCG
 * fewer, larger frames also mean fewer virtio round trips in the guest. Guests that cannot take it can
 * be given 1500.
 */
import { parseIpv4, parseMac, prefixMask } from "./addr.ts";
import { NetErrors } from "./errors.ts";
import type { ResolvedTcpTunables } from "./tcp.ts";

export interface NetworkCaps {
  /** Concurrent TCP flows (TIME_WAIT not counted). */
  maxTcpFlows: number;
  /** TCP flows still in the handshake. */
  maxHalfOpen: number;
  maxUdpFlows: number;
  /** Per flow and direction. */
  flowBufferBytes: number;
  /** Every flow's buffers together; past it new flows are refused and windows stop opening. */
  totalBufferBytes: number;
  maxOutOfOrderBytes: number;
  /** DNS queries forwarded and not yet answered. */
  dnsInFlight: number;
}

export interface NetworkStackOptions {
  guestMac?: string;
  gatewayMac?: string;
  guestIp?: string;
  gatewayIp?: string;
  prefixLength?: number;
  mtu?: number;
  dns?: {
    /** `--add-host` names and their IPv4 addresses. */
    hosts?: Record<string, string>;
    /** Answer UDP/TCP 53 to any destination (the guest's only resolver is us). Default true. */
    interceptAll?: boolean;
    timeoutMs?: number;
  };
  caps?: Partial<NetworkCaps>;
  tcp?: Partial<Omit<ResolvedTcpTunables, "flowBufferBytes" | "maxOutOfOrderBytes">>;
  udpIdleTimeoutMs?: number;
}

export interface ResolvedNetworkStackOptions {
  guestMac: string;
  gatewayMac: string;
  guestIp: string;
  gatewayIp: string;
  prefixLength: number;
  mtu: number;
  dns: { hosts: Record<string, string>; interceptAll: boolean; timeoutMs: number };
  caps: NetworkCaps;
  tcp: ResolvedTcpTunables;
  udpIdleTimeoutMs: number;
}

export const DEFAULT_CAPS: NetworkCaps = {
  maxTcpFlows: 256,
  maxHalfOpen: 64,
  maxUdpFlows: 1024,
  flowBufferBytes: 256 * 1024,
  totalBufferBytes: 64 * 1024 * 1024,
  maxOutOfOrderBytes: 64 * 1024,
  dnsInFlight: 64,
};

export const DEFAULT_TCP: Omit<ResolvedTcpTunables, "flowBufferBytes" | "maxOutOfOrderBytes"> = {
  rtoInitialMs: 200,
  rtoMinMs: 200,
  rtoMaxMs: 60_000,
  maxRetransmits: 12,
  handshakeTimeoutMs: 30_000,
  // An hour: longer than common keep-alive pools, and the caps bound what idle flows cost.
  idleTimeoutMs: 3_600_000,
  timeWaitMs: 2_000,
};

export const MIN_MTU = 576;
export const MAX_MTU = 65520;

function invalid(message: string): never {
  throw NetErrors.NET_INVALID_CONFIG({ message });
}

function posInt(name: string, v: number, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isInteger(v) || v < min || v > max) invalid(`${name} must be an integer in [${min}, ${max}] (got ${v})`);
  return v;
}

export function resolveNetworkOptions(o: NetworkStackOptions = {}): ResolvedNetworkStackOptions {
  const guestMac = (o.guestMac ?? "02:4d:41:00:00:02").toLowerCase();
  const gatewayMac = (o.gatewayMac ?? "02:4d:41:00:00:01").toLowerCase();
  for (const [n, m] of [["guestMac", guestMac], ["gatewayMac", gatewayMac]] as const) {
    const b = parseMac(m);
    if (!b) invalid(`${n} ${m} is not a MAC address (aa:bb:cc:dd:ee:ff)`);
    if (b[0]! & 1) invalid(`${n} ${m} is a multicast address`);
  }
  if (guestMac === gatewayMac) invalid("guestMac and gatewayMac must differ");
  const guestIp = o.guestIp ?? "10.200.0.2";
  const gatewayIp = o.gatewayIp ?? "10.200.0.1";
  const prefixLength = posInt("prefixLength", o.prefixLength ?? 24, 8, 30);
  const g = parseIpv4(guestIp);
  const gw = parseIpv4(gatewayIp);
  if (g === undefined) invalid(`guestIp ${guestIp} is not an IPv4 address`);
  if (gw === undefined) invalid(`gatewayIp ${gatewayIp} is not an IPv4 address`);
  const mask = prefixMask(prefixLength);
  if ((g & mask) !== (gw & mask)) invalid(`the guest ${guestIp} and the gateway ${gatewayIp} are not in one /${prefixLength}`);
  if (g === gw) invalid("guestIp and gatewayIp must differ");
  for (const [n, a] of [["guestIp", g], ["gatewayIp", gw]] as const) {
    const host = a & ~mask;
    if (host === 0 || host === (~mask >>> 0)) invalid(`${n} is the network or broadcast address of its subnet`);
  }
  const mtu = posInt("mtu", o.mtu ?? MAX_MTU, MIN_MTU, MAX_MTU);
  const hosts: Record<string, string> = {};
  for (const [name, ip] of Object.entries(o.dns?.hosts ?? {})) {
    const n = name.toLowerCase().replace(/\.$/, "");
    if (!/^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$/.test(n) || n.length > 253) invalid(`--add-host name ${name} is not a host name`);
    if (parseIpv4(ip) === undefined) invalid(`--add-host ${name}:${ip}: ${ip} is not an IPv4 address`);
    hosts[n] = ip;
  }
  const c = { ...DEFAULT_CAPS, ...o.caps };
  const caps: NetworkCaps = {
    maxTcpFlows: posInt("caps.maxTcpFlows", c.maxTcpFlows),
    maxHalfOpen: posInt("caps.maxHalfOpen", c.maxHalfOpen),
    maxUdpFlows: posInt("caps.maxUdpFlows", c.maxUdpFlows),
    flowBufferBytes: posInt("caps.flowBufferBytes", c.flowBufferBytes, 4096, 1 << 30),
    totalBufferBytes: posInt("caps.totalBufferBytes", c.totalBufferBytes, 4096),
    maxOutOfOrderBytes: posInt("caps.maxOutOfOrderBytes", c.maxOutOfOrderBytes, 0),
    dnsInFlight: posInt("caps.dnsInFlight", c.dnsInFlight),
  };
  const t = { ...DEFAULT_TCP, ...o.tcp };
  const tcp: ResolvedTcpTunables = {
    rtoInitialMs: posInt("tcp.rtoInitialMs", t.rtoInitialMs),
    rtoMinMs: posInt("tcp.rtoMinMs", t.rtoMinMs),
    rtoMaxMs: posInt("tcp.rtoMaxMs", t.rtoMaxMs),
    maxRetransmits: posInt("tcp.maxRetransmits", t.maxRetransmits),
    handshakeTimeoutMs: posInt("tcp.handshakeTimeoutMs", t.handshakeTimeoutMs),
    idleTimeoutMs: posInt("tcp.idleTimeoutMs", t.idleTimeoutMs),
    timeWaitMs: posInt("tcp.timeWaitMs", t.timeWaitMs, 0),
    flowBufferBytes: caps.flowBufferBytes,
    maxOutOfOrderBytes: caps.maxOutOfOrderBytes,
  };
  return {
    guestMac,
    gatewayMac,
    guestIp,
    gatewayIp,
    prefixLength,
    mtu,
    dns: { hosts, interceptAll: o.dns?.interceptAll ?? true, timeoutMs: posInt("dns.timeoutMs", o.dns?.timeoutMs ?? 5000) },
    caps,
    tcp,
    udpIdleTimeoutMs: posInt("udpIdleTimeoutMs", o.udpIdleTimeoutMs ?? 60_000),
  };
}

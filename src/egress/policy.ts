/**
 * The pure decision core of egress mediation: (mode, lists, flow facts) -> verdict. The TCP, UDP and
 * DNS paths all ask it, so one table of unit tests covers every mode (research/network.md (c)).
 *
 * "Dial what you resolved" (DESIGN): a flow counts as name N only if its destination IP was resolved
 * for N in this workspace (the pin set, or an `--add-host` mapping) and the SNI (TLS) or Host (HTTP)
 * it sends equals N. A name the guest merely asserts is never what the audit records it under.
 * Inside addresses are checked on the address actually dialled, after every spelling is normalized,
 * and only an explicit address/CIDR entry or an `--add-host` mapping lets one through: an allowed
 * *name* that resolves to 10.0.0.5 is DNS rebinding, not permission.
 *
 * Also here: the default destination policy of the network issue (no mediation decisions, public
 * allowed, inside denied unless the address was allowed), `createDestinationPolicy`.
 */
import { type AddressClass, type IpAddress, classifyAddress, describeAddress, effectiveAddress, parseAddress } from "./address.ts";
import {
  type AllowEntry,
  type PassthroughEntry,
  HOST_SERVICE_NAME,
  addressAllowed,
  entryMatchesName,
  nameAllowed,
  normalizeHostname,
  parseAllowList,
  parsePassthroughList,
} from "./allow.ts";
import { isKnownDohHost } from "./doh.ts";

export const EGRESS_MODES = ["guarded", "strict", "off"] as const;
export type EgressMode = (typeof EGRESS_MODES)[number];

/** The closed list of signals an audit record may carry (upstream's names where they exist). */
export const SIGNALS = [
  "denied",
  "direct-ip-no-sni",
  "name-destination-mismatch",
  "domain-fronting",
  "dns-over-https",
  "dns-over-tls",
  "dns-over-quic",
  "multicast-dns",
  "llmnr",
  "netbios",
  "foreign-resolver",
  "resolver-denied",
  "dns-rebinding",
  "dns-tunnel",
  "quic-udp443",
  "inside-destination",
  "cap-exceeded",
  "unmediatable-protocol",
  "malformed",
] as const;
export type Signal = (typeof SIGNALS)[number];

/** The host's loopback, where `host.microagent.internal:PORT` lands. */
export const HOST_LOOPBACK = "127.0.0.1";

/** Ports where the server speaks first: nothing to sniff, decide from the pins at once. */
export const SERVER_FIRST_PORTS: ReadonlySet<number> = new Set([21, 22, 25, 110, 143, 587, 3306]);

export interface AddHost {
  /** Normalized name. */
  name: string;
  /** Canonical IPv4/IPv6 text. */
  ip: string;
}

export interface PolicyConfig {
  mode: EgressMode;
  allow: readonly AllowEntry[];
  passthrough: readonly PassthroughEntry[];
  /** `--add-host NAME:IP`: an explicit allow of IP for NAME (and a static pin of NAME to IP). */
  addHosts: readonly AddHost[];
  /** The gateway address the guest sees (DNS server, host.microagent.internal). */
  gateway: string;
}

export interface PolicyOptions {
  mode: EgressMode;
  allow?: readonly string[];
  passthrough?: readonly string[];
  addHosts?: ReadonlyArray<{ name: string; ip: string }>;
  gateway: string;
}

/** Parse the user's strings once; throws EGRESS_ALLOW_INVALID for a bad entry. */
export function resolvePolicyConfig(o: PolicyOptions): PolicyConfig {
  const gw = parseAddress(o.gateway);
  if (!gw) throw new Error(`internal: gateway ${o.gateway} is not an address`);
  return {
    mode: o.mode,
    allow: parseAllowList(o.allow ?? []),
    passthrough: parsePassthroughList(o.passthrough ?? []),
    addHosts: (o.addHosts ?? []).map((h) => {
      const name = normalizeHostname(h.name);
      const ip = parseAddress(h.ip);
      if (!name || !ip) throw new Error(`internal: --add-host ${h.name}:${h.ip} reached the policy unparsed`);
      return { name, ip: effectiveAddress(ip).text };
    }),
    gateway: effectiveAddress(gw).text,
  };
}

/**
 * What the stack knows about a flow. `l7` is what sniffing found: `tls` (a ClientHello, `sni`
 * set when it named a host), `http` (a request head, `host` from it), `opaque` (other bytes, a
 * server-first port, or UDP), `malformed` (bytes that began as TLS/HTTP and broke the parser).
 */
export interface FlowFacts {
  proto: "tcp" | "udp";
  /** The destination as the guest addressed it, any spelling. */
  dstIp: string;
  dstPort: number;
  l7: "tls" | "http" | "opaque" | "malformed";
  sni?: string | null;
  host?: string | null;
  /** The names the pin set holds for dstIp (`pins.namesFor(dstIp)`). */
  dnsPinnedNames: readonly string[];
}

export type ConnectFacts = Omit<FlowFacts, "l7" | "sni" | "host">;

export type NameSource = "sni" | "host" | "dns-pin" | "add-host" | "host-service";

export interface Verdict {
  verdict: "allow" | "deny";
  /** The name the flow proved (null: unnamed). Never a name the guest only asserted. */
  name: string | null;
  nameSource: NameSource | null;
  /** The SNI/Host the guest sent when it did not prove it (for the audit's `hostAsserted`). */
  asserted: string | null;
  /** One sentence naming why, for the audit and for messages. */
  reason: string;
  signal: Signal | null;
  /** Terminate TLS with the workspace CA. */
  mitm: boolean;
  /** Splice the bytes untouched after the SNI check. */
  passthrough: boolean;
  /** Allowed although on no list (guarded). */
  unlisted: boolean;
  /** Where to connect: the dialled address normalized, or the host loopback for host services. */
  dial: { ip: string; port: number } | null;
  /** The class of the destination (after normalization). */
  addressClass: AddressClass | null;
}

const base = {
  name: null,
  nameSource: null,
  asserted: null,
  signal: null,
  mitm: false,
  passthrough: false,
  unlisted: false,
  dial: null,
  addressClass: null,
} satisfies Partial<Verdict>;

function deny(reason: string, signal: Signal, extra: Partial<Verdict> = {}): Verdict {
  return { ...base, ...extra, verdict: "deny", reason, signal, mitm: false, passthrough: false, dial: null };
}

/** Transport-level refusals that hold whatever the bytes say (research (c): DoT, DoQ, mDNS, LLMNR, QUIC). */
function transportSignal(proto: "tcp" | "udp", a: IpAddress, port: number): { signal: Signal; reason: string } | null {
  if (port === 53) return { signal: "denied", reason: "port 53 is answered by the mediator's resolver, never dialled" };
  if (port === 853) {
    return proto === "tcp"
      ? { signal: "dns-over-tls", reason: "DNS over TLS (TCP/853) bypasses the mediator's resolver" }
      : { signal: "dns-over-quic", reason: "DNS over QUIC (UDP/853) bypasses the mediator's resolver" };
  }
  if (proto === "udp") {
    if (port === 443) return { signal: "quic-udp443", reason: "QUIC (UDP/443) is refused so the client falls back to TCP, where TLS is mediated" };
    if (port === 5353 || a.text === "224.0.0.251" || a.text === "ff02::fb") return { signal: "multicast-dns", reason: "mDNS is not forwarded" };
    if (port === 5355 || a.text === "224.0.0.252" || a.text === "ff02::1:3") return { signal: "llmnr", reason: "LLMNR is not forwarded" };
    if (port === 137 || port === 138) return { signal: "netbios", reason: "NetBIOS name service is not forwarded" };
  }
  return null;
}

interface Prepared {
  addr: IpAddress;
  cls: AddressClass;
  addrAllow: AllowEntry | null;
  addHostNames: string[];
  pinned: string[];
}

type Early = { final: Verdict } | { prepared: Prepared };

/** The checks that need no bytes from the flow: address, gateway, transport, inside. */
function early(cfg: PolicyConfig, f: ConnectFacts): Early {
  const parsed = parseAddress(f.dstIp);
  if (!parsed) return { final: deny(`'${f.dstIp}' is not an IP address`, "unmediatable-protocol") };
  if (!Number.isInteger(f.dstPort) || f.dstPort < 1 || f.dstPort > 65535) return { final: deny(`port ${f.dstPort} is not a port`, "denied") };
  const addr = effectiveAddress(parsed);
  const cls = classifyAddress(addr);
  const dest = { addressClass: cls };
  if (addr.text === cfg.gateway) {
    const svc = f.proto === "tcp" && cfg.allow.some((e) => e.kind === "host-service" && e.port === f.dstPort);
    if (svc) {
      return {
        final: {
          ...base,
          verdict: "allow",
          name: HOST_SERVICE_NAME,
          nameSource: "host-service",
          reason: `${HOST_SERVICE_NAME}:${f.dstPort} is allowed`,
          dial: { ip: HOST_LOOPBACK, port: f.dstPort },
          addressClass: cls,
        },
      };
    }
    return {
      final: deny(
        `the gateway ${addr.text} answers DNS and the ports allowed with --egress-allow ${HOST_SERVICE_NAME}:PORT; ${f.proto}/${f.dstPort} is not one`,
        "inside-destination",
        dest,
      ),
    };
  }
  const addrAllow = addressAllowed(cfg.allow, addr, f.dstPort);
  // With mediation off only the resolver's port is kept; QUIC, mDNS and the rest are plain traffic.
  const t = cfg.mode === "off" && f.dstPort !== 53 ? null : transportSignal(f.proto, addr, f.dstPort);
  // An explicit address entry is the user's word for that destination; it outranks the transport
  // refusals (but never port 53, which always belongs to the mediator's resolver).
  if (t && (f.dstPort === 53 || !addrAllow)) return { final: deny(t.reason, t.signal, dest) };
  const addHostNames = cfg.addHosts.filter((h) => h.ip === addr.text).map((h) => h.name);
  const pinned: string[] = [];
  for (const n of [...f.dnsPinnedNames, ...addHostNames]) {
    const norm = normalizeHostname(n);
    if (norm && !pinned.includes(norm)) pinned.push(norm);
  }
  // Every mode, `off` included (DESIGN: "denied in every mode unless explicitly allowed").
  if (cls !== "public" && !addrAllow && addHostNames.length === 0) {
    return { final: deny(`${describeAddress(parsed)} is an inside destination; allow it explicitly with --egress-allow ${addr.text}:${f.dstPort}`, "inside-destination", dest) };
  }
  return { prepared: { addr, cls, addrAllow, addHostNames, pinned } };
}

function passthroughFor(cfg: PolicyConfig, name: string, port: number): PassthroughEntry | null {
  for (const e of cfg.passthrough) if (entryMatchesName(e, name, port)) return e;
  return null;
}

function listed(cfg: PolicyConfig, name: string, port: number, addHostNames: readonly string[]): boolean {
  return nameAllowed(cfg.allow, name, port) !== null || passthroughFor(cfg, name, port) !== null || addHostNames.includes(name);
}

/**
 * The verdict at SYN time, before any byte: a final verdict when the address, port or pins already
 * decide (so the stack can RST at once, research (c) piece 3), otherwise `sniff`.
 */
export function decideConnect(cfg: PolicyConfig, f: ConnectFacts): Verdict | { verdict: "sniff" } {
  if (cfg.mode === "off" || f.proto === "udp") return decideEgress(cfg, { ...f, l7: "opaque" });
  const e = early(cfg, f);
  if ("final" in e) return e.final;
  const { addrAllow, addHostNames, pinned, cls } = e.prepared;
  if (cfg.mode === "strict" && !addrAllow && !pinned.some((n) => listed(cfg, n, f.dstPort, addHostNames))) {
    // No SNI or Host can make this allowed: the name must be pinned to this address *and* listed.
    return decideEgress(cfg, { ...f, l7: "opaque" });
  }
  // An inside address admitted only by an --add-host mapping still needs the name proved.
  if (cls !== "public" && !addrAllow && pinned.length === 0) return decideEgress(cfg, { ...f, l7: "opaque" });
  return { verdict: "sniff" };
}

/** The verdict for a flow whose first bytes were sniffed (or UDP, or a server-first port). */
export function decideEgress(cfg: PolicyConfig, f: FlowFacts): Verdict {
  const e = early(cfg, f);
  if ("final" in e) return e.final;
  const { addr, cls, addrAllow, addHostNames, pinned } = e.prepared;
  const dial = { ip: addr.text, port: f.dstPort };
  if (cfg.mode === "off") {
    return { ...base, verdict: "allow", reason: "egress mediation is off", dial, addressClass: cls, unlisted: true };
  }
  const ctx = { addressClass: cls };
  if (f.l7 === "malformed") return deny("the first bytes began as TLS or HTTP but do not parse", "malformed", ctx);

  const rawSni = f.sni ?? null;
  const rawHost = f.host ?? null;
  const sni = rawSni === null ? null : normalizeHostname(rawSni);
  const host = rawHost === null ? null : normalizeHostname(rawHost);
  if (f.l7 === "tls" && sni && host && sni !== host) {
    return deny(`TLS server name ${sni} but Host ${host}`, "domain-fronting", { ...ctx, asserted: host });
  }
  const claim = f.l7 === "tls" ? sni : f.l7 === "http" ? host : null;
  const claimRaw = f.l7 === "tls" ? rawSni : f.l7 === "http" ? rawHost : null;
  const claimSource: NameSource | null = f.l7 === "tls" ? "sni" : f.l7 === "http" ? "host" : null;

  let name: string | null = null;
  let nameSource: NameSource | null = null;
  if (claim !== null) {
    if (pinned.includes(claim)) {
      name = claim;
      nameSource = claimSource;
    }
  } else if (f.l7 === "opaque" && pinned.length > 0) {
    // Nothing in the bytes names a host, so the pins are the only proof (server-first ports, UDP).
    name = pinned.find((n) => listed(cfg, n, f.dstPort, addHostNames)) ?? (pinned[0] as string);
    nameSource = addHostNames.includes(name) && !f.dnsPinnedNames.includes(name) ? "add-host" : "dns-pin";
  }
  // What the guest asserted but did not prove (an IP-literal SNI or Host counts as no name at all).
  const asserted = claim !== null && name === null ? claim : claim === null && claimRaw !== null ? claimRaw.slice(0, 255) : null;
  const mismatch = claim !== null && name === null;
  const noName = claim === null && name === null;

  // An inside address let through only by --add-host needs that mapping's name proved.
  if (cls !== "public" && !addrAllow && !(name !== null && addHostNames.includes(name))) {
    return deny(
      `${describeAddress(addr)} is an inside destination${mismatch ? `, and ${claim} was not resolved to it` : ""}`,
      mismatch ? "name-destination-mismatch" : "inside-destination",
      { ...ctx, asserted },
    );
  }

  const doh = name ?? claim;
  if (doh !== null && isKnownDohHost(doh) && !nameAllowed(cfg.allow, doh, f.dstPort)) {
    return deny(`${doh} is a DNS-over-HTTPS resolver; DNS goes through the mediator`, "dns-over-https", { ...ctx, name, nameSource, asserted });
  }

  const pass = name !== null && f.l7 === "tls" ? passthroughFor(cfg, name, f.dstPort) : null;
  const allowFields = {
    ...base,
    verdict: "allow" as const,
    name,
    nameSource,
    asserted,
    mitm: f.l7 === "tls" && pass === null,
    passthrough: pass !== null,
    dial,
    addressClass: cls,
  };

  if (cfg.mode === "strict") {
    if (name !== null && listed(cfg, name, f.dstPort, addHostNames)) {
      return { ...allowFields, reason: pass ? `${name} is on the passthrough list` : `${name} is on the allow list` };
    }
    if (addrAllow) {
      return {
        ...allowFields,
        reason: `${addr.text}:${f.dstPort} is allowed by ${addrAllow.source}`,
        signal: mismatch ? "name-destination-mismatch" : null,
      };
    }
    if (mismatch) return deny(`${claim} was not resolved to ${addr.text} in this workspace`, "name-destination-mismatch", { ...ctx, asserted });
    if (name !== null) return deny(`${name} is not on the allow list`, "denied", { ...ctx, name, nameSource });
    return deny(`${addr.text}:${f.dstPort} has no name resolved here and is not on the allow list`, "direct-ip-no-sni", { ...ctx, asserted });
  }

  // guarded: public (or explicitly allowed) destinations pass; the audit says what was proved.
  const onList = name !== null && listed(cfg, name, f.dstPort, addHostNames);
  const signal: Signal | null = mismatch ? "name-destination-mismatch" : noName && !addrAllow ? "direct-ip-no-sni" : null;
  const reason = onList
    ? `${name} is on the ${pass ? "passthrough" : "allow"} list`
    : addrAllow
      ? `${addr.text}:${f.dstPort} is allowed by ${addrAllow.source}`
      : name !== null
        ? `${name} is a public destination`
        : mismatch
          ? `${addr.text} is public; ${claim} was not resolved to it, so the flow is unnamed`
          : `${addr.text} is public; the flow names no host`;
  return { ...allowFields, reason, signal, unlisted: !onList && !addrAllow };
}

// ---------------------------------------------------------------------------------------------
// The network issue's default destination policy

export type DestinationDecision = { verdict: "allow"; dial: { ip: string; port: number } } | { verdict: "deny"; reason: string; signal: Signal };

export interface DestinationPolicy {
  decide(f: { proto: "tcp" | "udp"; dstIp: string; dstPort: number }): DestinationDecision;
}

export interface DestinationPolicyOptions {
  /** `--egress-allow` entries; only address, CIDR and host.microagent.internal:PORT entries matter here. */
  allow?: readonly string[];
  addHosts?: ReadonlyArray<{ name: string; ip: string }>;
  gateway: string;
}

/**
 * Public destinations allowed; inside ones (in every spelling) denied unless allowed by address,
 * CIDR or an `--add-host` mapping; the gateway only on allowed host-service ports (dialled on the
 * host's loopback); port 53 belongs to the stack's DNS server.
 */
export function createDestinationPolicy(o: DestinationPolicyOptions): DestinationPolicy {
  const cfg = resolvePolicyConfig({ mode: "off", allow: o.allow ?? [], addHosts: o.addHosts ?? [], gateway: o.gateway });
  return {
    decide(f) {
      const parsed = parseAddress(f.dstIp);
      if (!parsed) return { verdict: "deny", reason: `'${f.dstIp}' is not an IP address`, signal: "unmediatable-protocol" };
      const addr = effectiveAddress(parsed);
      if (f.dstPort === 53) return { verdict: "deny", reason: "port 53 is answered by the stack's DNS server, never dialled", signal: "denied" };
      const v = decideEgress(cfg, { ...f, l7: "opaque", dnsPinnedNames: [] });
      if (v.verdict === "allow" && v.dial) return { verdict: "allow", dial: v.dial };
      return { verdict: "deny", reason: v.reason || `${addr.text} is denied`, signal: v.signal ?? "denied" };
    },
  };
}

/**
 * DNS policy: what the mediator's resolver does with each query the guest sends (to the gateway or
 * to any other address on port 53, which it answers too), and what it keeps of each upstream answer.
 * Pure: takes dns-packet's decoded form, returns decisions and packets; the stack does the I/O.
 *
 * - Names under microagent.internal and `--add-host` names are answered locally, never forwarded.
 * - strict: a name on no list is REFUSED and never forwarded (so nothing leaves by DNS tunnelling).
 * - HTTPS/SVCB (64/65) get NODATA so clients send a cleartext SNI; AAAA gets NODATA (the guest is
 *   IPv4-only); ANY is refused (RFC 8482 lets a resolver decline it).
 * - Answers: A records off the CNAME chain, AAAA/HTTPS/SVCB and inside addresses (rebinding) are
 *   dropped; TTLs are capped at the pin lifetime so the guest does not outlive its pins.
 */
import dnsPacket from "dns-packet";
import type { Answer, Packet, Question } from "dns-packet";
import { cidrContains, effectiveAddress, isInside, parseAddress } from "./address.ts";
import { HOST_SERVICE_NAME, INTERNAL_ZONE, entryMatchesName, nameAllowed, normalizeHostname } from "./allow.ts";
import type { PolicyConfig, Signal } from "./policy.ts";

/** Names the mediator answers with the gateway address. */
export const GATEWAY_NAMES: readonly string[] = [HOST_SERVICE_NAME, `mediation.${INTERNAL_ZONE}`, `gateway.${INTERNAL_ZONE}`];

export type DnsTransport = "dns" | "dot" | "doq" | "mdns" | "llmnr" | "netbios";

/** What a guest packet to (proto, ip, port) is, as far as name resolution goes; null: not DNS. */
export function classifyDnsTransport(f: { proto: "tcp" | "udp"; dstIp: string; dstPort: number }): DnsTransport | null {
  const a = parseAddress(f.dstIp);
  const ip = a ? effectiveAddress(a).text : "";
  if (f.dstPort === 53) return "dns";
  if (f.dstPort === 853) return f.proto === "tcp" ? "dot" : "doq";
  if (f.proto === "udp" && (f.dstPort === 5353 || ip === "224.0.0.251" || ip === "ff02::fb")) return "mdns";
  if (f.dstPort === 5355 || ip === "224.0.0.252" || ip === "ff02::1:3") return "llmnr";
  if (f.proto === "udp" && (f.dstPort === 137 || f.dstPort === 138)) return "netbios";
  return null;
}

/** `foreign-resolver` when the guest sent its query to an address other than the gateway. */
export function resolverSignal(dstIp: string, gateway: string): Signal | null {
  const a = parseAddress(dstIp);
  return a && effectiveAddress(a).text === gateway ? null : "foreign-resolver";
}

export type DnsRcode = "NOERROR" | "FORMERR" | "SERVFAIL" | "NXDOMAIN" | "NOTIMP" | "REFUSED";

export type DnsQueryDecision =
  /** Send the (re-encoded, see `forwardQuery`) question upstream, then `filterDnsResponse`. */
  | { action: "forward"; qname: string; qtype: string; signal: Signal | null; record: "egress_dns_allow"; reason: string }
  /** Answer from the mediator: A records for `addresses` (empty: NODATA). */
  | { action: "answer"; qname: string; qtype: string; addresses: string[]; signal: Signal | null; record: "egress_dns_allow"; reason: string }
  /** Answer with an error code (NODATA is `answer` with no addresses). */
  | { action: "reject"; rcode: DnsRcode; qname: string | null; qtype: string | null; signal: Signal | null; record: "egress_dns_allow" | "egress_dns_deny"; reason: string };

export interface DnsQueryContext {
  /** The address the guest sent the query to (its "resolver"). */
  dstIp: string;
  proto: "tcp" | "udp";
  limiter?: DnsRateLimiter;
}

/** A DNS name as the guest sent it, in comparison form; null when it is not a plain ASCII host name. */
export function normalizeDnsName(name: string): string | null {
  if (!/^[\x21-\x7e]*$/.test(name)) return null;
  return normalizeHostname(name);
}

/** Long random-looking labels: the shape of data smuggled in names (research (e) case 9). */
export function looksLikeTunnel(name: string): boolean {
  if (name.length > 160) return true;
  const labels = name.split(".");
  let longish = 0;
  for (const l of labels) {
    if (l.length >= 48) return true;
    if (l.length >= 24) longish++;
  }
  return longish >= 3;
}

function nameListed(cfg: PolicyConfig, name: string): boolean {
  if (nameAllowed(cfg.allow, name, null)) return true;
  if (cfg.passthrough.some((e) => entryMatchesName(e, name, null))) return true;
  return cfg.addHosts.some((h) => h.name === name);
}

const NODATA_TYPES: ReadonlyMap<string, string> = new Map([
  ["AAAA", "AAAA gets NODATA: the workspace network is IPv4-only"],
  ["UNKNOWN_64", "SVCB gets NODATA so the client sends a cleartext SNI"],
  ["UNKNOWN_65", "HTTPS gets NODATA so the client sends a cleartext SNI (no ECH)"],
  ["SVCB", "SVCB gets NODATA so the client sends a cleartext SNI"],
  ["HTTPS", "HTTPS gets NODATA so the client sends a cleartext SNI (no ECH)"],
]);

/** The decision for one decoded guest query. */
export function decideDnsQuery(cfg: PolicyConfig, q: Packet, ctx: DnsQueryContext): DnsQueryDecision {
  const foreign = resolverSignal(ctx.dstIp, cfg.gateway);
  const bad = (rcode: DnsRcode, reason: string, qname: string | null = null, qtype: string | null = null): DnsQueryDecision => ({
    action: "reject",
    rcode,
    qname,
    qtype,
    signal: foreign ?? "denied",
    record: "egress_dns_deny",
    reason,
  });
  if (q.type !== "query") return bad("FORMERR", "a response where a query was expected");
  if ((q as { opcode?: string }).opcode !== undefined && (q as { opcode?: string }).opcode !== "QUERY") return bad("NOTIMP", "only standard queries are answered");
  const questions = q.questions ?? [];
  if (questions.length !== 1) return bad("FORMERR", `a query must carry exactly one question, this one has ${questions.length}`);
  const question = questions[0] as Question;
  const qtype = String(question.type);
  if (question.class !== undefined && question.class !== "IN") return bad("REFUSED", `class ${question.class} is not served`, question.name, qtype);
  const qname = normalizeDnsName(question.name);
  if (!qname) return bad("REFUSED", "the name is not a host name", question.name.slice(0, 255), qtype);
  const allowRec = (reason: string, extra: Partial<DnsQueryDecision> = {}) => ({ signal: foreign, record: "egress_dns_allow" as const, reason, ...extra });

  // The mediator's own zone and --add-host names: local answers, never forwarded.
  if (GATEWAY_NAMES.includes(qname)) {
    return { action: "answer", qname, qtype, addresses: qtype === "A" ? [cfg.gateway] : [], ...allowRec(`${qname} is the gateway`) } as DnsQueryDecision;
  }
  if (qname === INTERNAL_ZONE || qname.endsWith(`.${INTERNAL_ZONE}`)) return bad("NXDOMAIN", `${qname} does not exist`, qname, qtype);
  const mapped = cfg.addHosts.filter((h) => h.name === qname).map((h) => h.ip);
  if (mapped.length > 0) {
    const v4 = mapped.filter((ip) => !ip.includes(":"));
    return { action: "answer", qname, qtype, addresses: qtype === "A" ? v4 : [], ...allowRec(`${qname} is mapped with --add-host`) } as DnsQueryDecision;
  }

  if (cfg.mode === "strict" && !nameListed(cfg, qname)) {
    // Refused before forwarding: nothing in the name leaves the host (DNS tunnelling, case 9).
    return bad("REFUSED", `${qname} is not on the allow list`, qname, qtype);
  }
  if (qtype === "ANY") return bad("REFUSED", "ANY queries are declined (RFC 8482)", qname, qtype);
  const nodata = NODATA_TYPES.get(qtype);
  if (nodata) return { action: "answer", qname, qtype, addresses: [], ...allowRec(nodata) } as DnsQueryDecision;

  const suspect = looksLikeTunnel(qname);
  if (ctx.limiter && !ctx.limiter.take(suspect)) {
    return { ...bad("REFUSED", suspect ? "too many tunnel-shaped names" : "too many queries", qname, qtype), signal: suspect ? "dns-tunnel" : "cap-exceeded" };
  }
  return { action: "forward", qname, qtype, signal: foreign ?? (suspect ? "dns-tunnel" : null), record: "egress_dns_allow", reason: "forwarded" };
}

/** Token buckets: all queries, and a much smaller one for tunnel-shaped names (guarded mode). */
export class DnsRateLimiter {
  private tokens: number;
  private suspectTokens: number;
  private last: number;
  private readonly o: { qps?: number; burst?: number; suspectQps?: number; suspectBurst?: number; now?: () => number };
  constructor(o: { qps?: number; burst?: number; suspectQps?: number; suspectBurst?: number; now?: () => number } = {}) {
    this.o = o;
    this.tokens = o.burst ?? 200;
    this.suspectTokens = o.suspectBurst ?? 20;
    this.last = (o.now ?? Date.now)();
  }
  take(suspect: boolean): boolean {
    const now = (this.o.now ?? Date.now)();
    const dt = Math.max(0, now - this.last) / 1000;
    this.last = now;
    this.tokens = Math.min(this.o.burst ?? 200, this.tokens + dt * (this.o.qps ?? 100));
    this.suspectTokens = Math.min(this.o.suspectBurst ?? 20, this.suspectTokens + dt * (this.o.suspectQps ?? 2));
    if (this.tokens < 1) return false;
    if (suspect && this.suspectTokens < 1) return false;
    this.tokens -= 1;
    if (suspect) this.suspectTokens -= 1;
    return true;
  }
}

const RCODE_NUM: Record<DnsRcode, number> = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 };
const FLAG_RD = 0x0100;
const FLAG_RA = 0x0080;
const FLAG_AA = 0x0400;

/** The query to send upstream: re-encoded from the decision, so what leaves is what was judged. */
export function forwardQuery(q: Packet, qname: string, id: number): Buffer {
  const question = (q.questions ?? [])[0] as Question;
  return dnsPacket.encode({ id, type: "query", flags: FLAG_RD, questions: [{ name: qname, type: question.type, class: "IN" }] });
}

/** A response from the mediator itself: the decision's addresses (A), NODATA, or an error code. */
export function localResponse(q: Packet, d: Exclude<DnsQueryDecision, { action: "forward" }>, ttlSeconds = 60): Buffer {
  const questions = (q.questions ?? []).slice(0, 1);
  const rd = ((q.flags ?? 0) & FLAG_RD) !== 0 ? FLAG_RD : 0;
  const rcode = d.action === "reject" ? RCODE_NUM[d.rcode] : 0;
  const answers: Answer[] =
    d.action === "answer" ? d.addresses.map((ip) => ({ name: d.qname, type: "A", class: "IN", ttl: ttlSeconds, data: ip }) as Answer) : [];
  return dnsPacket.encode({ id: q.id ?? 0, type: "response", flags: rd | FLAG_RA | (d.action === "answer" ? FLAG_AA : 0) | rcode, questions, answers });
}

export interface FilteredResponse {
  ok: true;
  packet: Packet;
  /** The addresses answered (for the audit's `answers`); pin with `pins.record(qname, packet.answers)`. */
  addresses: string[];
  dropped: Array<{ type: string; data: string; why: string }>;
  signal: Signal | null;
}

/**
 * What the guest gets of an upstream response: the answer section on the CNAME chain from the
 * question, without AAAA/HTTPS/SVCB and without inside addresses (DNS rebinding) unless an address
 * or CIDR entry allows them; authority only SOA (negative caching), additional only OPT. TTLs are
 * capped at `maxTtlSeconds` (the pin lifetime).
 */
export function filterDnsResponse(
  cfg: PolicyConfig,
  qname: string,
  resp: Packet,
  maxTtlSeconds = 300,
): FilteredResponse | { ok: false; reason: string } {
  if (resp.type !== "response") return { ok: false, reason: "not a response" };
  const rq = (resp.questions ?? [])[0];
  if (!rq || normalizeDnsName(rq.name) !== qname) return { ok: false, reason: "the response answers another question" };
  const chain = new Set([qname]);
  const answers = resp.answers ?? [];
  for (let hop = 0, cur = qname; hop < 8; hop++) {
    const c = answers.find((a) => a.type === "CNAME" && normalizeDnsName(a.name) === cur);
    const next = c && c.type === "CNAME" ? normalizeDnsName(String(c.data)) : null;
    if (!next || chain.has(next)) break;
    chain.add(next);
    cur = next;
  }
  const dropped: FilteredResponse["dropped"] = [];
  const keptAll: Answer[] = [];
  const addresses: string[] = [];
  let rebinding = false;
  const cap = (a: Answer): Answer => ({ ...a, ttl: Math.min((a as { ttl?: number }).ttl ?? maxTtlSeconds, maxTtlSeconds) }) as Answer;
  for (const a of answers) {
    if (a.type === "OPT") continue;
    const owner = normalizeDnsName(a.name);
    const type = String(a.type);
    if (!owner || !chain.has(owner)) {
      dropped.push({ type, data: String(a.data).slice(0, 64), why: "off the CNAME chain of the question" });
      continue;
    }
    const nodata = NODATA_TYPES.get(type);
    if (nodata) {
      dropped.push({ type, data: "", why: nodata });
      continue;
    }
    if (type === "A") {
      const ip = parseAddress(String(a.data));
      const explicit = ip !== null && cfg.allow.some((e) => (e.kind === "address" && effectiveAddress(e.address).text === effectiveAddress(ip).text) || (e.kind === "cidr" && cidrContains(e.cidr, ip)));
      if (!ip || (isInside(ip) && !explicit)) {
        rebinding = true;
        dropped.push({ type, data: String(a.data), why: "an inside address (DNS rebinding)" });
        continue;
      }
      addresses.push(effectiveAddress(ip).text);
    }
    keptAll.push(cap(a));
  }
  const packet: Packet = {
    ...resp,
    answers: keptAll,
    authorities: (resp.authorities ?? []).filter((a) => a.type === "SOA"),
    additionals: (resp.additionals ?? []).filter((a) => a.type === "OPT"),
  };
  return { ok: true, packet, addresses, dropped, signal: rebinding ? "dns-rebinding" : null };
}

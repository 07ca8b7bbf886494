/**
 * The mediating DNS observer for the network stack: the stack answers UDP/TCP 53 to any address
 * (its `interceptAll`), the local names (`host.microagent.internal`, `--add-host`, and the names of
 * `stackDnsHosts`), and asks this observer about everything else. Here each query is judged by
 * `decideDnsQuery` (strict: REFUSED for names on no list, never forwarded; `foreign-resolver` when
 * the guest aimed at another resolver; HTTPS/SVCB and AAAA get NODATA), and each upstream answer is
 * filtered (`filterDnsResponse`: off-chain records, inside addresses, AAAA/HTTPS dropped, TTLs
 * capped at the pin lifetime) and its A records pinned to the name asked, which is what makes
 * "dial what you resolved" possible. Every decision is an `egress_dns_allow`/`egress_dns_deny` record.
 */
import dnsPacket from "dns-packet";
import type { Packet } from "dns-packet";
import type { DnsObserver, DnsQueryDecision as StackDecision, DnsQueryEvent } from "../net/types.ts";
import { GATEWAY_NAMES, DnsRateLimiter, decideDnsQuery, filterDnsResponse } from "./dns-policy.ts";
import type { DnsQueryDecision } from "./dns-policy.ts";
import { dnsRecord } from "./audit.ts";
import type { DnsPins } from "./pins.ts";
import type { PolicyConfig } from "./policy.ts";
import type { AuditSink } from "./mediator-types.ts";

/** dns-packet's names for query types (the ones the policy distinguishes; the rest as it spells them). */
const TYPE_NAMES: Readonly<Record<number, string>> = { 1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV", 35: "NAPTR", 255: "ANY" };

function typeName(n: number): string {
  return TYPE_NAMES[n] ?? `UNKNOWN_${n}`;
}

/**
 * Names the stack must answer locally with the gateway address (its `dns.hosts`), beside
 * `host.microagent.internal` which it knows itself: `mediation.microagent.internal` (seed 001) and
 * `gateway.microagent.internal`.
 */
export function stackDnsHosts(gateway: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of GATEWAY_NAMES) if (n !== "host.microagent.internal") out[n] = gateway;
  return out;
}

export interface DnsMediatorOptions {
  config: PolicyConfig;
  pins: DnsPins;
  audit: AuditSink;
  limiter?: DnsRateLimiter;
}

/** A `DnsObserver` that pins, filters and audits (see the module comment). */
export function createDnsMediator(o: DnsMediatorOptions): DnsObserver & { stats: Record<string, number> } {
  const decisions = new WeakMap<DnsQueryEvent, DnsQueryDecision>();
  const limiter = o.limiter ?? new DnsRateLimiter();
  const stats = { forwarded: 0, refused: 0, nodata: 0, pinned: 0, filtered: 0 };
  const bump = (k: keyof typeof stats, n = 1) => (stats[k] += n);
  return {
    stats,
    onQuery(q: DnsQueryEvent): StackDecision {
      const qtype = typeName(q.type);
      const packet: Packet = { type: "query", id: 0, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name: q.name, type: qtype as never, class: "IN" }] };
      const ctx = { dstIp: q.target, proto: q.transport === "tcp" ? ("tcp" as const) : ("udp" as const) };
      const d = decideDnsQuery(o.config, packet, { ...ctx, limiter });
      if (d.action === "reject") {
        o.audit.write(dnsRecord(d, ctx));
        bump("refused");
        return d.rcode === "NXDOMAIN" ? { action: "nxdomain" } : { action: "refuse" };
      }
      if (d.action === "answer") {
        // NODATA (the stack answered the names with addresses already): forwarded, then emptied, so
        // the guest gets the resolver's SOA for negative caching. Audited now, with no answers.
        o.audit.write(dnsRecord(d, ctx));
        bump("nodata");
      }
      decisions.set(q, d);
      bump("forwarded");
      return { action: "forward" };
    },
    onAnswer(q: DnsQueryEvent, answer: Buffer): Buffer | undefined {
      const d = decisions.get(q);
      if (!d) return undefined; // a query this observer never allowed: fail closed (SERVFAIL)
      let resp: Packet;
      try {
        resp = dnsPacket.decode(answer);
      } catch {
        return undefined;
      }
      const ctx = { dstIp: q.target, proto: q.transport === "tcp" ? ("tcp" as const) : ("udp" as const) };
      if (d.action === "answer") {
        return dnsPacket.encode({ ...resp, answers: [], authorities: (resp.authorities ?? []).filter((a) => a.type === "SOA"), additionals: (resp.additionals ?? []).filter((a) => a.type === "OPT") });
      }
      if (d.action !== "forward") return undefined;
      const f = filterDnsResponse(o.config, d.qname, resp, o.pins.maxTtlSeconds);
      if (!f.ok) {
        o.audit.write({ ...dnsRecord(d, ctx, []), type: "egress_dns_deny", decision: "deny", reason: `the upstream answer was dropped: ${f.reason}`, signal: "malformed" });
        return undefined;
      }
      if (f.dropped.length > 0) bump("filtered", f.dropped.length);
      bump("pinned", o.pins.record(d.qname, f.packet.answers ?? []).length);
      o.audit.write({ ...dnsRecord(d, ctx, f.addresses), signal: d.signal ?? f.signal });
      return dnsPacket.encode(f.packet);
    },
  };
}

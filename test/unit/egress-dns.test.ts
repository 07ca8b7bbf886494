/**
 * The DNS pin set and the resolver policy, on real dns-packet encodings (queries encoded, then
 * decoded, the way the stack's DNS server will see them). Hostile-guest cases 5, 7, 8, 9, 10.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import dnsPacket from "dns-packet";
import type { Packet } from "dns-packet";
import { DnsPins } from "../../src/egress/pins.ts";
import {
  DnsRateLimiter,
  classifyDnsTransport,
  decideDnsQuery,
  filterDnsResponse,
  forwardQuery,
  localResponse,
  looksLikeTunnel,
} from "../../src/egress/dns-policy.ts";
import { isDohRequest, isKnownDohHost } from "../../src/egress/doh.ts";
import { resolvePolicyConfig } from "../../src/egress/policy.ts";

const GW = "10.200.0.1";
const strict = resolvePolicyConfig({ mode: "strict", gateway: GW, allow: ["allowed.test", ".cdn.test", "10.50.0.0/16"], passthrough: ["bank.test"], addHosts: [{ name: "mock.test", ip: "127.0.0.1" }] });
const guarded = resolvePolicyConfig({ mode: "guarded", gateway: GW, allow: ["allowed.test"], addHosts: [{ name: "mock.test", ip: "127.0.0.1" }] });

function query(name: string, type: string, id = 7): Packet {
  const wire = dnsPacket.encode({ id, type: "query", flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: type as "A", class: "IN" }] });
  return dnsPacket.decode(wire);
}

test("egress-dns: pins follow the CNAME chain from the name asked, clamp TTLs to 30-300 s and expire", () => {
  let now = 1_000_000;
  const pins = new DnsPins({ now: () => now });
  const made = pins.record("WWW.Allowed.Test.", [
    { name: "www.allowed.test", type: "CNAME", ttl: 10, data: "edge.cdn.test" },
    { name: "edge.cdn.test", type: "CNAME", ttl: 10, data: "e1.cdn.test" },
    { name: "e1.cdn.test", type: "A", ttl: 5, data: "93.184.216.34" },
    { name: "unrelated.test", type: "A", ttl: 600, data: "6.6.6.6" }, // off the chain: not pinned
    { name: "e1.cdn.test", type: "A", ttl: 100000, data: "93.184.216.35" },
  ]);
  assert.deepEqual(made, [
    { name: "www.allowed.test", ip: "93.184.216.34", ttlSeconds: 30 },
    { name: "www.allowed.test", ip: "93.184.216.35", ttlSeconds: 300 },
  ]);
  assert.deepEqual(pins.namesFor("93.184.216.34"), ["www.allowed.test"]);
  assert.deepEqual(pins.namesFor("::ffff:93.184.216.34"), ["www.allowed.test"], "any spelling of the address");
  assert.deepEqual(pins.namesFor("6.6.6.6"), []);
  assert.equal(pins.isPinned("www.allowed.test", "93.184.216.35"), true);
  assert.equal(pins.isPinned("edge.cdn.test", "93.184.216.34"), false, "pinned to the name asked, not the chain's names");
  now += 29_000;
  assert.equal(pins.isPinned("www.allowed.test", "93.184.216.34"), true);
  now += 2_000;
  assert.equal(pins.isPinned("www.allowed.test", "93.184.216.34"), false, "30 s floor passed");
  assert.equal(pins.isPinned("www.allowed.test", "93.184.216.35"), true);
  now += 300_000;
  assert.equal(pins.isPinned("www.allowed.test", "93.184.216.35"), false, "300 s ceiling passed");
  // a CNAME loop ends the walk instead of spinning
  assert.deepEqual(pins.record("a.test", [{ name: "a.test", type: "CNAME", data: "b.test" }, { name: "b.test", type: "CNAME", data: "a.test" }]), []);
});

test("egress-dns: the pin set is bounded, least recently pinned first out, and one IP can carry several names", () => {
  const pins = new DnsPins({ maxPins: 100 });
  for (let i = 0; i < 10_000; i++) pins.pin(`n${i}.test`, `93.184.${(i >> 8) & 255}.${i & 255}`, 60);
  assert.equal(pins.size, 100);
  assert.equal(pins.isPinned("n0.test", "93.184.0.0"), false);
  assert.equal(pins.isPinned("n9999.test", "93.184.39.15"), true);
  const shared = new DnsPins();
  shared.pin("a.test", "1.2.3.4");
  shared.pin("b.test", "1.2.3.4");
  assert.deepEqual(shared.namesFor("1.2.3.4").sort(), ["a.test", "b.test"]);
  assert.equal(shared.pin("not a name", "1.2.3.4"), false);
  assert.equal(shared.pin("a.test", "999.1.1.1"), false);
});

test("egress-dns: case 5: HTTPS/SVCB get NODATA (no ECH), AAAA gets NODATA, ANY is refused", () => {
  for (const t of ["HTTPS", "UNKNOWN_65", "SVCB", "UNKNOWN_64", "AAAA"]) {
    const q = query("allowed.test", t === "HTTPS" ? "UNKNOWN_65" : t === "SVCB" ? "UNKNOWN_64" : t);
    const d = decideDnsQuery(guarded, q, { dstIp: GW, proto: "udp" });
    assert.equal(d.action, "answer", t);
    assert.deepEqual((d as { addresses: string[] }).addresses, [], t);
    const resp = dnsPacket.decode(localResponse(q, d as Exclude<typeof d, { action: "forward" }>));
    assert.equal((resp as unknown as { rcode: string }).rcode, "NOERROR");
    assert.equal(resp.answers?.length, 0, "NODATA: success with no answers");
    assert.equal(resp.id, 7);
  }
  const any = decideDnsQuery(guarded, query("allowed.test", "ANY"), { dstIp: GW, proto: "udp" });
  assert.equal(any.action, "reject");
  // and an upstream answer carrying HTTPS/AAAA records is stripped of them
  const f = filterDnsResponse(guarded, "allowed.test", {
    type: "response",
    id: 1,
    questions: [{ name: "allowed.test", type: "A", class: "IN" }],
    answers: [
      { name: "allowed.test", type: "A", class: "IN", ttl: 3600, data: "93.184.216.34" },
      { name: "allowed.test", type: "AAAA", class: "IN", ttl: 60, data: "2606:2800::1" },
      { name: "allowed.test", type: "UNKNOWN_65" as "A", class: "IN", ttl: 60, data: Buffer.from([0, 1, 0]) as unknown as string },
    ],
  } as Packet);
  assert.ok(f.ok);
  assert.deepEqual(f.packet.answers?.map((a) => a.type), ["A"]);
  assert.equal((f.packet.answers?.[0] as { ttl: number }).ttl, 300, "TTL capped at the pin lifetime");
  assert.equal(f.dropped.length, 2);
});

test("egress-dns: case 7: DoT, DoQ, mDNS, LLMNR and NetBIOS are classified by transport; DoH by request", () => {
  assert.equal(classifyDnsTransport({ proto: "tcp", dstIp: "1.1.1.1", dstPort: 853 }), "dot");
  assert.equal(classifyDnsTransport({ proto: "udp", dstIp: "1.1.1.1", dstPort: 853 }), "doq");
  assert.equal(classifyDnsTransport({ proto: "udp", dstIp: "224.0.0.251", dstPort: 5353 }), "mdns");
  assert.equal(classifyDnsTransport({ proto: "udp", dstIp: "224.0.0.252", dstPort: 5355 }), "llmnr");
  assert.equal(classifyDnsTransport({ proto: "udp", dstIp: "10.0.0.255", dstPort: 137 }), "netbios");
  assert.equal(classifyDnsTransport({ proto: "tcp", dstIp: "8.8.8.8", dstPort: 53 }), "dns");
  assert.equal(classifyDnsTransport({ proto: "tcp", dstIp: "8.8.8.8", dstPort: 443 }), null);
  assert.equal(isDohRequest({ method: "POST", target: "/dns-query", contentType: "application/dns-message" }), true);
  assert.equal(isDohRequest({ method: "GET", target: "/dns-query?dns=AAABAAABAAAAAAAAA3d3dwdleGFtcGxlA2NvbQAAAQAB" }), true);
  assert.equal(isDohRequest({ method: "GET", target: "/anything?dns=AAABAAABAAAAAAAAA3d3dwdleGFtcGxl" }), true);
  assert.equal(isDohRequest({ method: "GET", target: "/resolve?name=x", accept: "application/dns-json" }), true);
  assert.equal(isDohRequest({ method: "GET", target: "/api/v1/models" }), false);
  assert.equal(isKnownDohHost("dns.google"), true);
  assert.equal(isKnownDohHost("abc.cloudflare-dns.com"), true);
  assert.equal(isKnownDohHost("google.com"), false);
});

test("egress-dns: case 8: a query to a foreign resolver is answered by the mediator and flagged; strict refuses off-list names", () => {
  const d = decideDnsQuery(guarded, query("example.org", "A"), { dstIp: "1.1.1.1", proto: "udp" });
  assert.equal(d.action, "forward");
  assert.equal(d.signal, "foreign-resolver");
  const tcp = decideDnsQuery(guarded, query("example.org", "A"), { dstIp: "1.1.1.1", proto: "tcp" });
  assert.equal(tcp.signal, "foreign-resolver", "dig +tcp too");
  const own = decideDnsQuery(guarded, query("example.org", "A"), { dstIp: GW, proto: "udp" });
  assert.equal(own.action, "forward");
  assert.equal(own.signal, null);
  const refused = decideDnsQuery(strict, query("example.org", "A"), { dstIp: "1.1.1.1", proto: "udp" });
  assert.equal(refused.action, "reject");
  assert.equal((refused as { rcode: string }).rcode, "REFUSED");
  assert.equal(refused.record, "egress_dns_deny");
  assert.equal(refused.signal, "foreign-resolver");
  const wire = dnsPacket.decode(localResponse(query("example.org", "A", 4242), refused as Exclude<typeof refused, { action: "forward" }>));
  assert.equal((wire as unknown as { rcode: string }).rcode, "REFUSED");
  assert.equal(wire.id, 4242);
  // strict: listed names, suffixes and passthrough names are forwarded
  for (const n of ["allowed.test", "a.cdn.test", "bank.test"]) assert.equal(decideDnsQuery(strict, query(n, "A"), { dstIp: GW, proto: "udp" }).action, "forward", n);
  assert.equal(decideDnsQuery(strict, query("cdn.test", "A"), { dstIp: GW, proto: "udp" }).action, "reject", "a suffix does not admit its apex");
});

test("egress-dns: the mediator's own names and --add-host names are answered locally", () => {
  const gw = decideDnsQuery(strict, query("host.microagent.internal", "A"), { dstIp: GW, proto: "udp" });
  assert.equal(gw.action, "answer");
  assert.deepEqual((gw as { addresses: string[] }).addresses, [GW]);
  const a = dnsPacket.decode(localResponse(query("host.microagent.internal", "A"), gw as Exclude<typeof gw, { action: "forward" }>));
  assert.deepEqual(a.answers?.map((x) => (x as { data: string }).data), [GW]);
  const mock = decideDnsQuery(strict, query("MOCK.test", "A"), { dstIp: GW, proto: "udp" });
  assert.deepEqual((mock as { addresses: string[] }).addresses, ["127.0.0.1"]);
  const nx = decideDnsQuery(guarded, query("other.microagent.internal", "A"), { dstIp: GW, proto: "udp" });
  assert.equal((nx as { rcode: string }).rcode, "NXDOMAIN");
  // malformed questions
  const two = dnsPacket.decode(dnsPacket.encode({ id: 1, type: "query", questions: [{ name: "a.test", type: "A" }, { name: "b.test", type: "A" }] }));
  assert.equal((decideDnsQuery(guarded, two, { dstIp: GW, proto: "udp" }) as { rcode: string }).rcode, "FORMERR");
  const resp = dnsPacket.decode(dnsPacket.encode({ id: 1, type: "response", questions: [{ name: "a.test", type: "A" }] }));
  assert.equal((decideDnsQuery(guarded, resp, { dstIp: GW, proto: "udp" }) as { rcode: string }).rcode, "FORMERR");
  const bin = dnsPacket.decode(dnsPacket.encode({ id: 1, type: "query", questions: [{ name: "a\u0000b.test", type: "A" }] }));
  assert.equal(decideDnsQuery(guarded, bin, { dstIp: GW, proto: "udp" }).action, "reject");
});

test("egress-dns: the forwarded query is re-encoded from the judged name, not the guest's bytes", () => {
  const q = query("Allowed.Test", "A", 99);
  const d = decideDnsQuery(strict, q, { dstIp: GW, proto: "udp" });
  assert.equal(d.action, "forward");
  const fwd = dnsPacket.decode(forwardQuery(q, d.qname, 1234));
  assert.equal(fwd.id, 1234);
  assert.equal(fwd.questions?.[0]?.name, "allowed.test");
  assert.equal(fwd.questions?.[0]?.type, "A");
  assert.equal(fwd.additionals?.length, 0, "no guest-chosen EDNS options ride along");
});

test("egress-dns: case 9: tunnelling-shaped names: strict refuses without forwarding, guarded flags and rate-caps them", () => {
  const label = () => Array.from({ length: 50 }, (_, i) => "abcdefghijklmnopqrstuvwxyz234567"[(i * 7 + 3) % 32]).join("");
  const name = `${label()}.${label()}.exfil.attacker.test`;
  assert.equal(looksLikeTunnel(name), true);
  assert.equal(looksLikeTunnel("www.example.com"), false);
  const s = decideDnsQuery(strict, query(name, "TXT"), { dstIp: GW, proto: "udp" });
  assert.equal(s.action, "reject");
  assert.equal((s as { rcode: string }).rcode, "REFUSED");
  let now = 0;
  const limiter = new DnsRateLimiter({ now: () => now, qps: 100, burst: 200, suspectQps: 2, suspectBurst: 20 });
  const results = Array.from({ length: 100 }, () => decideDnsQuery(guarded, query(name, "TXT"), { dstIp: GW, proto: "udp", limiter }));
  const forwarded = results.filter((r) => r.action === "forward");
  assert.equal(forwarded.length, 20, "the suspect bucket's burst, then refusals");
  assert.ok(forwarded.every((r) => r.signal === "dns-tunnel"));
  assert.ok(results.slice(20).every((r) => r.action === "reject" && r.signal === "dns-tunnel"));
  assert.equal(decideDnsQuery(guarded, query("www.example.com", "A"), { dstIp: GW, proto: "udp", limiter }).action, "forward", "ordinary names keep flowing");
  now += 1000;
  assert.equal(decideDnsQuery(guarded, query(name, "TXT"), { dstIp: GW, proto: "udp", limiter }).action, "forward", "the bucket refills");
});

test("egress-dns: case 10: inside answers are dropped from upstream responses (rebinding) unless an address entry allows them", () => {
  const resp = (ip: string): Packet =>
    dnsPacket.decode(
      dnsPacket.encode({
        id: 1,
        type: "response",
        questions: [{ name: "allowed.test", type: "A", class: "IN" }],
        answers: [
          { name: "allowed.test", type: "CNAME", class: "IN", ttl: 60, data: "edge.allowed.test" },
          { name: "edge.allowed.test", type: "A", class: "IN", ttl: 60, data: ip },
          { name: "glue.evil.test", type: "A", class: "IN", ttl: 60, data: "93.184.216.99" },
        ],
        authorities: [{ name: "evil.test", type: "NS", class: "IN", ttl: 60, data: "ns.evil.test" }],
      }),
    );
  for (const ip of ["10.0.0.5", "169.254.169.254", "127.0.0.1", "0.0.0.0"]) {
    const f = filterDnsResponse(guarded, "allowed.test", resp(ip));
    assert.ok(f.ok);
    assert.equal(f.signal, "dns-rebinding", ip);
    assert.deepEqual(f.addresses, [], ip);
    assert.deepEqual(f.packet.answers?.map((a) => a.type), ["CNAME"], ip);
    assert.equal(f.packet.authorities?.length, 0, "only SOA survives in authority");
  }
  const pub = filterDnsResponse(guarded, "allowed.test", resp("93.184.216.34"));
  assert.ok(pub.ok);
  assert.equal(pub.signal, null);
  const pins = new DnsPins();
  pins.record("allowed.test", pub.packet.answers ?? []);
  assert.deepEqual(pins.namesFor("93.184.216.34"), ["allowed.test"]);
  assert.deepEqual(pins.namesFor("93.184.216.99"), [], "glue off the chain is neither answered nor pinned");
  const corp = filterDnsResponse(strict, "allowed.test", resp("10.50.1.2"));
  assert.ok(corp.ok);
  assert.deepEqual(corp.addresses, ["10.50.1.2"], "10.50.0.0/16 is allowed explicitly (corporate DNS)");
  const wrong = filterDnsResponse(guarded, "other.test", resp("93.184.216.34"));
  assert.equal(wrong.ok, false, "a response to another question is refused");
});

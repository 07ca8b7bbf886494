/**
 * The decision core against the hostile-guest list of research/network.md (e), at the level of
 * verdicts: each case names the attack, then asserts the verdict, the signal and what the audit
 * would record as the name. The pins come from a real DnsPins fed with decoded answers.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { DnsPins } from "../../src/egress/pins.ts";
import { type FlowFacts, type PolicyConfig, createDestinationPolicy, decideConnect, decideEgress, resolvePolicyConfig } from "../../src/egress/policy.ts";

const GW = "10.200.0.1";
const ATTACKER = "45.33.32.66"; // a public address nobody resolved
const ALLOWED_IP = "93.184.216.34";

function cfg(mode: "guarded" | "strict" | "off", extra: { allow?: string[]; passthrough?: string[]; addHosts?: Array<{ name: string; ip: string }> } = {}): PolicyConfig {
  return resolvePolicyConfig({ mode, gateway: GW, allow: extra.allow ?? [], passthrough: extra.passthrough ?? [], addHosts: extra.addHosts ?? [] });
}

function pinsWith(...pairs: Array<[string, string]>): DnsPins {
  const p = new DnsPins();
  for (const [name, ip] of pairs) p.record(name, [{ name, type: "A", ttl: 60, data: ip }]);
  return p;
}

function flow(pins: DnsPins, f: Omit<FlowFacts, "dnsPinnedNames">): FlowFacts {
  return { ...f, dnsPinnedNames: pins.namesFor(f.dstIp) };
}

test("egress-policy: case 1, strict: SNI allowed.test to an IP never resolved for it is name-destination-mismatch, no dial", () => {
  const c = cfg("strict", { allow: ["allowed.test"] });
  const pins = pinsWith(["allowed.test", ALLOWED_IP]);
  const v = decideEgress(c, flow(pins, { proto: "tcp", dstIp: ATTACKER, dstPort: 443, l7: "tls", sni: "allowed.test" }));
  assert.equal(v.verdict, "deny");
  assert.equal(v.signal, "name-destination-mismatch");
  assert.equal(v.name, null, "never recorded under the asserted name");
  assert.equal(v.asserted, "allowed.test");
  assert.equal(v.dial, null);
  // and at SYN time already: no pinned name at that IP is allowed, so nothing the guest sends can help
  const early = decideConnect(c, { proto: "tcp", dstIp: ATTACKER, dstPort: 443, dnsPinnedNames: pins.namesFor(ATTACKER) });
  assert.equal(early.verdict, "deny", "RST at SYN");
  // the honest flow to the resolved address passes, intercepted, dialling that address
  const ok = decideEgress(c, flow(pins, { proto: "tcp", dstIp: ALLOWED_IP, dstPort: 443, l7: "tls", sni: "Allowed.Test." }));
  assert.equal(ok.verdict, "allow");
  assert.equal(ok.name, "allowed.test");
  assert.equal(ok.nameSource, "sni");
  assert.equal(ok.mitm, true);
  assert.deepEqual(ok.dial, { ip: ALLOWED_IP, port: 443 });
  assert.deepEqual(decideConnect(c, { proto: "tcp", dstIp: ALLOWED_IP, dstPort: 443, dnsPinnedNames: pins.namesFor(ALLOWED_IP) }), { verdict: "sniff" });
});

test("egress-policy: case 2 at the core, guarded: the spoofed SNI is intercepted (upstream verification decides) and unnamed", () => {
  const pins = pinsWith(["allowed.test", ALLOWED_IP]);
  const v = decideEgress(cfg("guarded", { passthrough: ["allowed.test"] }), flow(pins, { proto: "tcp", dstIp: ATTACKER, dstPort: 443, l7: "tls", sni: "allowed.test" }));
  assert.equal(v.verdict, "allow");
  assert.equal(v.name, null);
  assert.equal(v.signal, "name-destination-mismatch");
  assert.equal(v.mitm, true, "an unproved name is never spliced through as passthrough");
  assert.equal(v.passthrough, false);
  assert.equal(v.unlisted, true);
});

test("egress-policy: case 3: plain HTTP Host: allowed.test to an attacker IP, strict denies, guarded allows it unnamed", () => {
  const pins = pinsWith(["allowed.test", ALLOWED_IP]);
  const f = flow(pins, { proto: "tcp", dstIp: ATTACKER, dstPort: 80, l7: "http", host: "allowed.test" });
  const s = decideEgress(cfg("strict", { allow: ["allowed.test"] }), f);
  assert.equal(s.verdict, "deny");
  assert.equal(s.signal, "name-destination-mismatch");
  const g = decideEgress(cfg("guarded", { allow: ["allowed.test"] }), f);
  assert.equal(g.verdict, "allow");
  assert.equal(g.name, null);
  assert.equal(g.asserted, "allowed.test");
  assert.equal(g.signal, "name-destination-mismatch");
  assert.equal(g.mitm, false, "plain HTTP is parsed, not intercepted");
  const honest = decideEgress(cfg("strict", { allow: ["allowed.test"] }), flow(pins, { proto: "tcp", dstIp: ALLOWED_IP, dstPort: 80, l7: "http", host: "allowed.test" }));
  assert.equal(honest.verdict, "allow");
  assert.equal(honest.nameSource, "host");
});

test("egress-policy: case 4 at the core: SNI and Host disagreeing is domain fronting", () => {
  const pins = pinsWith(["allowed.test", ALLOWED_IP]);
  for (const mode of ["guarded", "strict"] as const) {
    const v = decideEgress(cfg(mode, { allow: ["allowed.test"] }), flow(pins, { proto: "tcp", dstIp: ALLOWED_IP, dstPort: 443, l7: "tls", sni: "allowed.test", host: "evil.test" }));
    assert.equal(v.verdict, "deny", mode);
    assert.equal(v.signal, "domain-fronting", mode);
  }
});

test("egress-policy: case 6 at the core: known DoH hosts are refused unless listed", () => {
  const pins = pinsWith(["dns.google", "8.8.8.8"]);
  const v = decideEgress(cfg("guarded"), flow(pins, { proto: "tcp", dstIp: "8.8.8.8", dstPort: 443, l7: "tls", sni: "dns.google" }));
  assert.equal(v.verdict, "deny");
  assert.equal(v.signal, "dns-over-https");
  const listed = decideEgress(cfg("guarded", { allow: ["dns.google"] }), flow(pins, { proto: "tcp", dstIp: "8.8.8.8", dstPort: 443, l7: "tls", sni: "dns.google" }));
  assert.equal(listed.verdict, "allow", "an explicit allow is the user's choice");
});

test("egress-policy: case 7: DoT, DoQ, mDNS, LLMNR and QUIC are refused in both mediated modes", () => {
  const table: Array<["tcp" | "udp", string, number, string]> = [
    ["tcp", "1.1.1.1", 853, "dns-over-tls"],
    ["udp", "1.1.1.1", 853, "dns-over-quic"],
    ["udp", "224.0.0.251", 5353, "multicast-dns"],
    ["udp", "8.8.4.4", 5353, "multicast-dns"],
    ["udp", "224.0.0.252", 5355, "llmnr"],
    ["udp", "1.1.1.1", 443, "quic-udp443"],
    ["udp", "8.8.8.8", 137, "netbios"],
  ];
  for (const mode of ["guarded", "strict"] as const) {
    for (const [proto, ip, port, signal] of table) {
      const v = decideConnect(cfg(mode, { allow: [".cloudflare.com"] }), { proto, dstIp: ip, dstPort: port, dnsPinnedNames: ["one.cloudflare.com"] });
      assert.equal(v.verdict, "deny", `${mode} ${proto}/${port}`);
      assert.equal((v as { signal: string }).signal, signal, `${mode} ${proto}/${port}`);
    }
  }
  // an explicit address entry outranks the transport refusal, except for port 53
  const own = decideConnect(cfg("strict", { allow: ["9.9.9.9:853"] }), { proto: "tcp", dstIp: "9.9.9.9", dstPort: 853, dnsPinnedNames: [] });
  assert.deepEqual(own, { verdict: "sniff" });
  const dns = decideConnect(cfg("guarded", { allow: ["9.9.9.9"] }), { proto: "udp", dstIp: "9.9.9.9", dstPort: 53, dnsPinnedNames: [] });
  assert.equal(dns.verdict, "deny", "port 53 always belongs to the mediator's resolver");
});

test("egress-policy: case 10: an allowed name rebinding to 10.0.0.5 or 169.254.169.254 is denied on the dialled address", () => {
  const pins = pinsWith(["allowed.test", ALLOWED_IP]);
  pins.record("allowed.test", [{ name: "allowed.test", type: "A", ttl: 30, data: "10.0.0.5" }]);
  pins.record("allowed.test", [{ name: "allowed.test", type: "A", ttl: 30, data: "169.254.169.254" }]);
  for (const mode of ["guarded", "strict"] as const) {
    for (const ip of ["10.0.0.5", "169.254.169.254"]) {
      const c = cfg(mode, { allow: ["allowed.test"] });
      const early = decideConnect(c, { proto: "tcp", dstIp: ip, dstPort: 443, dnsPinnedNames: pins.namesFor(ip) });
      assert.equal(early.verdict, "deny", `${mode} ${ip} at SYN`);
      assert.equal((early as { signal: string }).signal, "inside-destination");
      const late = decideEgress(c, flow(pins, { proto: "tcp", dstIp: ip, dstPort: 443, l7: "tls", sni: "allowed.test" }));
      assert.equal(late.verdict, "deny", `${mode} ${ip}`);
      assert.equal(late.signal, "inside-destination");
    }
  }
  // the public answer still works
  assert.equal(decideEgress(cfg("strict", { allow: ["allowed.test"] }), flow(pins, { proto: "tcp", dstIp: ALLOWED_IP, dstPort: 443, l7: "tls", sni: "allowed.test" })).verdict, "allow");
});

test("egress-policy: case 11: raw IP with no name: strict RST at SYN, guarded allows it unnamed with direct-ip-no-sni", () => {
  const c = cfg("strict", { allow: ["allowed.test"] });
  const syn = decideConnect(c, { proto: "tcp", dstIp: "1.1.1.1", dstPort: 443, dnsPinnedNames: [] });
  assert.equal(syn.verdict, "deny");
  assert.equal((syn as { signal: string }).signal, "direct-ip-no-sni");
  const g = decideEgress(cfg("guarded"), { proto: "tcp", dstIp: "1.1.1.1", dstPort: 443, l7: "tls", sni: null, dnsPinnedNames: [] });
  assert.equal(g.verdict, "allow");
  assert.equal(g.signal, "direct-ip-no-sni");
  assert.equal(g.name, null);
  assert.equal(g.mitm, true);
  const ipSni = decideEgress(cfg("guarded"), { proto: "tcp", dstIp: "1.1.1.1", dstPort: 443, l7: "tls", sni: "1.1.1.1", dnsPinnedNames: [] });
  assert.equal(ipSni.signal, "direct-ip-no-sni", "an IP literal in SNI names no host");
  const opaque = decideEgress(cfg("guarded"), { proto: "tcp", dstIp: "1.1.1.1", dstPort: 22, l7: "opaque", dnsPinnedNames: [] });
  assert.equal(opaque.signal, "direct-ip-no-sni");
  // an address entry is the way to allow a raw IP in strict
  const listed = decideEgress(cfg("strict", { allow: ["1.1.1.1:443"] }), { proto: "tcp", dstIp: "1.1.1.1", dstPort: 443, l7: "tls", sni: null, dnsPinnedNames: [] });
  assert.equal(listed.verdict, "allow");
  assert.equal(decideEgress(cfg("strict", { allow: ["1.1.1.1:443"] }), { proto: "tcp", dstIp: "1.1.1.1", dstPort: 8443, l7: "tls", sni: null, dnsPinnedNames: [] }).verdict, "deny");
});

test("egress-policy: case 12: metadata and inside addresses in every spelling are denied on the dialled address", () => {
  const spellings = [
    "169.254.169.254",
    "2852039166",
    "0251.0376.0251.0376",
    "0xa9.0xfe.0xa9.0xfe",
    "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",
    "10.0.0.1",
    "012.0.0.1",
    "167772161",
    "100.64.0.1",
    "127.0.0.1",
    "127.1",
    "0x7f000001",
    "::1",
    "::ffff:127.0.0.1",
    "0.0.0.0",
    "0",
    "192.168.1.1",
    "172.16.0.1",
    "255.255.255.255",
    "224.0.0.1",
    "fe80::1",
    "fd00::1",
  ];
  for (const mode of ["guarded", "strict", "off"] as const) {
    const c = cfg(mode, mode === "off" ? {} : { allow: [".example.com"] });
    for (const ip of spellings) {
      const v = decideEgress(c, { proto: "tcp", dstIp: ip, dstPort: 80, l7: "http", host: "a.example.com", dnsPinnedNames: ["a.example.com"] });
      assert.equal(v.verdict, "deny", `${mode} ${ip}`);
      assert.equal(v.dial, null);
      assert.equal(v.signal === "inside-destination" || v.signal === "name-destination-mismatch", true, `${mode} ${ip}: ${v.signal}`);
    }
  }
  // the gateway (host.microagent.internal) is inside too, except on ports the user allowed
  const gw = cfg("guarded", { allow: ["host.microagent.internal:9000"] });
  const svc = decideEgress(gw, { proto: "tcp", dstIp: GW, dstPort: 9000, l7: "opaque", dnsPinnedNames: [] });
  assert.equal(svc.verdict, "allow");
  assert.equal(svc.name, "host.microagent.internal");
  assert.deepEqual(svc.dial, { ip: "127.0.0.1", port: 9000 }, "a host service is dialled on the host's loopback");
  assert.equal(decideEgress(gw, { proto: "tcp", dstIp: GW, dstPort: 9001, l7: "opaque", dnsPinnedNames: [] }).verdict, "deny");
  assert.equal(decideEgress(gw, { proto: "udp", dstIp: GW, dstPort: 9000, l7: "opaque", dnsPinnedNames: [] }).verdict, "deny");
  assert.equal(decideEgress(gw, { proto: "tcp", dstIp: "::ffff:10.200.0.1", dstPort: 9000, l7: "opaque", dnsPinnedNames: [] }).verdict, "allow");
});

test("egress-policy: explicit address/CIDR entries and --add-host mappings admit inside destinations", () => {
  const c = cfg("strict", { allow: ["10.0.0.5:5432", "192.168.50.0/24"], addHosts: [{ name: "mock.test", ip: "127.0.0.1" }] });
  assert.equal(decideEgress(c, { proto: "tcp", dstIp: "10.0.0.5", dstPort: 5432, l7: "opaque", dnsPinnedNames: [] }).verdict, "allow");
  assert.equal(decideEgress(c, { proto: "tcp", dstIp: "10.0.0.5", dstPort: 22, l7: "opaque", dnsPinnedNames: [] }).verdict, "deny");
  assert.equal(decideEgress(c, { proto: "tcp", dstIp: "192.168.50.7", dstPort: 22, l7: "opaque", dnsPinnedNames: [] }).verdict, "allow");
  // --add-host: the mapping's name proves itself; another name to the same address does not
  const named = decideEgress(c, { proto: "tcp", dstIp: "127.0.0.1", dstPort: 8443, l7: "tls", sni: "mock.test", dnsPinnedNames: [] });
  assert.equal(named.verdict, "allow");
  assert.equal(named.name, "mock.test");
  assert.equal(named.mitm, true);
  const other = decideEgress(c, { proto: "tcp", dstIp: "127.0.0.1", dstPort: 8443, l7: "tls", sni: "evil.test", dnsPinnedNames: [] });
  assert.equal(other.verdict, "deny");
  assert.equal(other.signal, "name-destination-mismatch");
  const opaque = decideEgress(c, { proto: "tcp", dstIp: "127.0.0.1", dstPort: 5432, l7: "opaque", dnsPinnedNames: [] });
  assert.equal(opaque.verdict, "allow");
  assert.equal(opaque.nameSource, "add-host");
  assert.deepEqual(decideConnect(c, { proto: "tcp", dstIp: "127.0.0.1", dstPort: 8443, dnsPinnedNames: [] }), { verdict: "sniff" });
  assert.equal(decideConnect(c, { proto: "tcp", dstIp: "127.0.0.2", dstPort: 8443, dnsPinnedNames: [] }).verdict, "deny");
});

test("egress-policy: strict names, suffixes, ports and passthrough", () => {
  const pins = pinsWith(["api.example.com", "93.184.216.1"], ["db.example.com", "93.184.216.2"], ["x.cdn.test", "93.184.216.3"], ["bank.test", "93.184.216.4"], ["other.test", "93.184.216.5"]);
  const c = cfg("strict", { allow: ["api.example.com", "db.example.com:5432", ".cdn.test"], passthrough: ["bank.test"] });
  const d = (ip: string, port: number, l7: FlowFacts["l7"], sni?: string) => decideEgress(c, flow(pins, { proto: "tcp", dstIp: ip, dstPort: port, l7, ...(l7 === "tls" ? { sni } : l7 === "http" ? { host: sni } : {}) }));
  assert.equal(d("93.184.216.1", 443, "tls", "api.example.com").verdict, "allow");
  assert.equal(d("93.184.216.2", 5432, "opaque").verdict, "allow");
  assert.equal(d("93.184.216.2", 5432, "opaque").nameSource, "dns-pin");
  assert.equal(d("93.184.216.2", 443, "tls", "db.example.com").verdict, "deny", "the entry names port 5432");
  assert.equal(d("93.184.216.3", 443, "tls", "x.cdn.test").verdict, "allow");
  const bank = d("93.184.216.4", 443, "tls", "bank.test");
  assert.equal(bank.verdict, "allow");
  assert.equal(bank.passthrough, true);
  assert.equal(bank.mitm, false);
  const other = d("93.184.216.5", 443, "tls", "other.test");
  assert.equal(other.verdict, "deny");
  assert.equal(other.signal, "denied");
  assert.equal(other.name, "other.test", "a proved but unlisted name is recorded as itself");
  assert.equal(d("93.184.216.1", 443, "malformed").signal, "malformed");
});

test("egress-policy: guarded allows public names, marks unlisted ones, and mode off does no L7 policy", () => {
  const pins = pinsWith(["news.test", "93.184.216.9"]);
  const g = decideEgress(cfg("guarded", { allow: ["api.test"] }), flow(pins, { proto: "tcp", dstIp: "93.184.216.9", dstPort: 443, l7: "tls", sni: "news.test" }));
  assert.equal(g.verdict, "allow");
  assert.equal(g.name, "news.test");
  assert.equal(g.unlisted, true);
  assert.equal(g.signal, null);
  const off = cfg("off");
  assert.equal(decideEgress(off, { proto: "udp", dstIp: "1.1.1.1", dstPort: 443, l7: "opaque", dnsPinnedNames: [] }).verdict, "allow", "QUIC is plain traffic with mediation off");
  assert.equal(decideEgress(off, { proto: "tcp", dstIp: "1.1.1.1", dstPort: 443, l7: "tls", sni: "x.test", dnsPinnedNames: [] }).mitm, false);
  assert.equal(decideConnect(off, { proto: "tcp", dstIp: "10.1.1.1", dstPort: 443, dnsPinnedNames: [] }).verdict, "deny");
});

test("egress-policy: the network issue's default destination policy", () => {
  const p = createDestinationPolicy({ gateway: GW, allow: ["10.9.0.0/16", "172.17.0.2:8080", "host.microagent.internal:11434", "api.example.com"], addHosts: [{ name: "mock.test", ip: "127.0.0.1" }] });
  assert.deepEqual(p.decide({ proto: "tcp", dstIp: "93.184.216.34", dstPort: 443 }), { verdict: "allow", dial: { ip: "93.184.216.34", port: 443 } });
  assert.deepEqual(p.decide({ proto: "udp", dstIp: "1.1.1.1", dstPort: 443 }), { verdict: "allow", dial: { ip: "1.1.1.1", port: 443 } });
  assert.deepEqual(p.decide({ proto: "tcp", dstIp: "::ffff:8.8.8.8", dstPort: 80 }), { verdict: "allow", dial: { ip: "8.8.8.8", port: 80 } });
  for (const ip of ["169.254.169.254", "2852039166", "::ffff:169.254.169.254", "10.0.0.1", "100.64.1.1", "127.0.0.2", "0.0.0.0", "255.255.255.255", "224.0.0.9"]) {
    const d = p.decide({ proto: "tcp", dstIp: ip, dstPort: 80 });
    assert.equal(d.verdict, "deny", ip);
    assert.match((d as { reason: string }).reason, /inside destination/, ip);
  }
  assert.equal(p.decide({ proto: "tcp", dstIp: "10.9.3.4", dstPort: 22 }).verdict, "allow");
  assert.equal(p.decide({ proto: "tcp", dstIp: "172.17.0.2", dstPort: 8080 }).verdict, "allow");
  assert.equal(p.decide({ proto: "tcp", dstIp: "172.17.0.2", dstPort: 8081 }).verdict, "deny");
  assert.deepEqual(p.decide({ proto: "tcp", dstIp: "127.0.0.1", dstPort: 3000 }), { verdict: "allow", dial: { ip: "127.0.0.1", port: 3000 } }, "an --add-host mapping allows its address");
  assert.deepEqual(p.decide({ proto: "tcp", dstIp: GW, dstPort: 11434 }), { verdict: "allow", dial: { ip: "127.0.0.1", port: 11434 } });
  assert.equal(p.decide({ proto: "tcp", dstIp: GW, dstPort: 22 }).verdict, "deny");
  assert.equal(p.decide({ proto: "udp", dstIp: "8.8.8.8", dstPort: 53 }).verdict, "deny", "DNS goes to the stack's server");
  assert.equal(p.decide({ proto: "tcp", dstIp: "nonsense", dstPort: 80 }).verdict, "deny");
});

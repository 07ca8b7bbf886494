/**
 * The network stack frame by frame below TCP: ARP, IPv4 validation, ICMP, UDP flows and the DNS server,
 * plus the hostile-guest cases of research/network.md (e) that live at these layers (14-20, 31).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import dnsPacket from "dns-packet";
import {
  GUEST_IP,
  GuestTcp,
  TCP_SYN,
  arpFrame,
  drain,
  fixIpChecksum,
  guestAddr,
  guestIp,
  guestMac,
  gwIp,
  gwMac,
  harness,
  icmpEchoFrame,
  ip,
  parseOut,
  pump,
  tcpFrame,
  udpFrame,
} from "../helpers/net-guest.ts";
import { ETHERTYPE_ARP, ETH_HEADER_BYTES, parseArp } from "../../src/net/wire.ts";

const PUBLIC = ip("93.184.216.34");

test("net-l2l3: ARP: answers a request for the gateway with the gateway MAC", () => {
  const h = harness();
  h.stack.receiveFrame(arpFrame(1, guestMac, guestIp, gwIp));
  const [f] = drain(h);
  assert.ok(f);
  assert.equal(f.readUInt16BE(12), ETHERTYPE_ARP);
  assert.ok(f.subarray(0, 6).equals(guestMac));
  const a = parseArp(f, ETH_HEADER_BYTES);
  assert.ok(a.ok);
  assert.equal(a.op, 2);
  assert.ok(a.senderMac.equals(gwMac));
  assert.equal(a.senderIp, gwIp);
  assert.equal(a.targetIp, guestIp);
});

test("net-l2l3: ARP spoofing (case 15): gratuitous, replies, other targets, foreign MACs change nothing", () => {
  const h = harness();
  const evil = Buffer.from([2, 0, 0, 0, 0, 0x66]);
  h.stack.receiveFrame(arpFrame(1, guestMac, guestIp, guestIp)); // gratuitous
  h.stack.receiveFrame(arpFrame(2, guestMac, gwIp, guestIp)); // "I am the gateway"
  h.stack.receiveFrame(arpFrame(1, guestMac, guestIp, ip("10.200.0.77"))); // another host
  h.stack.receiveFrame(arpFrame(1, evil, guestIp, gwIp)); // foreign source MAC
  h.stack.receiveFrame(arpFrame(1, evil, guestIp, gwIp, Buffer.alloc(6, 0xff), guestMac)); // foreign sender MAC inside ARP
  h.stack.receiveFrame(arpFrame(1, guestMac, ip("10.200.0.9"), gwIp)); // another sender IP
  assert.equal(h.out.length, 0);
  const d = h.stack.stats().drops;
  assert.equal(d["arp-gratuitous"], 1);
  assert.equal(d["arp-reply-ignored"], 1);
  assert.equal(d["arp-not-gateway"], 1);
  assert.equal(d["eth-foreign-src"], 1);
  assert.equal(d["arp-spoofed"], 2);
  // Still answers with the configured MACs afterwards.
  h.stack.receiveFrame(arpFrame(1, guestMac, guestIp, gwIp));
  const a = parseArp(drain(h)[0]!, ETH_HEADER_BYTES);
  assert.ok(a.ok && a.senderMac.equals(gwMac) && a.targetMac.equals(guestMac));
});

test("net-l2l3: ICMP echo: answered for the gateway only, with the same id, sequence and data", () => {
  const h = harness();
  h.stack.receiveFrame(icmpEchoFrame(gwIp, 0x1234, 7, Buffer.from("ping-data")));
  const p = parseOut(drain(h)[0]!);
  assert.equal(p.src, gwIp);
  assert.equal(p.icmp!.type, 0);
  assert.equal(p.icmp!.body.readUInt16BE(0), 0x1234);
  assert.equal(p.icmp!.body.readUInt16BE(2), 7);
  assert.equal(p.icmp!.body.subarray(4).toString(), "ping-data");
  h.stack.receiveFrame(icmpEchoFrame(PUBLIC, 1, 1, Buffer.from("x")));
  assert.equal(h.out.length, 0);
  assert.equal(h.stack.stats().drops["icmp-not-gateway"], 1);
});

test("net-l2l3: IPv6 (case 14): NDP, RA and v6 TCP/UDP frames are dropped and counted, nothing forwarded", () => {
  const h = harness();
  for (const nextHeader of [58, 6, 17]) {
    const f = Buffer.alloc(14 + 40 + 20);
    Buffer.from([0x33, 0x33, 0, 0, 0, 1]).copy(f, 0);
    guestMac.copy(f, 6);
    f.writeUInt16BE(0x86dd, 12);
    f[14] = 0x60;
    f[14 + 6] = nextHeader;
    h.stack.receiveFrame(f);
    gwMac.copy(f, 0);
    h.stack.receiveFrame(f);
  }
  assert.equal(h.stack.stats().drops["ipv6"], 6);
  assert.equal(h.out.length + h.connector.streams.length + h.datagrams.opened.length, 0);
});

test("net-l2l3: DHCP spoofing (case 16): DISCOVER/OFFER frames are ignored (no DHCP server)", () => {
  const h = harness();
  const discover = udpFrame(68, ip("255.255.255.255"), 67, Buffer.alloc(240), { srcMac: guestMac, dstMac: Buffer.alloc(6, 0xff), src: 0, dst: ip("255.255.255.255") });
  const offer = udpFrame(67, guestIp, 68, Buffer.alloc(240), { srcMac: guestMac, dstMac: gwMac, src: ip("10.200.0.66"), dst: guestIp });
  const toBcast = udpFrame(68, ip("255.255.255.255"), 67, Buffer.alloc(240), { srcMac: guestMac, dstMac: gwMac, src: guestIp, dst: ip("255.255.255.255") });
  h.stack.receiveFrame(discover);
  h.stack.receiveFrame(offer);
  h.stack.receiveFrame(toBcast);
  assert.equal(h.out.length + h.datagrams.opened.length, 0);
  const d = h.stack.stats().drops;
  assert.equal(d["eth-not-for-us"], 1);
  assert.equal(d["ipv4-foreign-src"], 1);
  assert.equal(d["ipv4-bad-dst"], 1);
});

test("net-l2l3: source spoofing (case 17): a SYN from 10.9.9.9 or a foreign MAC is dropped and counted", () => {
  const h = harness();
  h.stack.receiveFrame(tcpFrame({ srcPort: 1234, dst: PUBLIC, dstPort: 80, seq: 1, flags: TCP_SYN }, { srcMac: guestMac, dstMac: gwMac, src: ip("10.9.9.9"), dst: PUBLIC }));
  h.stack.receiveFrame(tcpFrame({ srcPort: 1234, dst: PUBLIC, dstPort: 80, seq: 1, flags: TCP_SYN }, { srcMac: Buffer.from([2, 9, 9, 9, 9, 9]), dstMac: gwMac, src: guestIp, dst: PUBLIC }));
  assert.equal(h.out.length + h.connector.streams.length, 0);
  assert.equal(h.stack.stats().drops["ipv4-foreign-src"], 1);
  assert.equal(h.stack.stats().drops["eth-foreign-src"], 1);
  assert.equal(h.policy.asked.length, 0, "the policy never even sees a spoofed flow");
});

test("net-l2l3: fragments (case 18): MF or offset frames are dropped and counted, no allocation growth", () => {
  const h = harness();
  const heapBefore = process.memoryUsage().heapUsed;
  for (let i = 0; i < 20000; i++) {
    const f = udpFrame(5000, PUBLIC, 443, Buffer.alloc(64, i & 255));
    f.writeUInt16BE(i % 2 ? 0x2000 : 0x2000 | (i & 0x1fff) || 1, ETH_HEADER_BYTES + 6);
    h.stack.receiveFrame(fixIpChecksum(f));
  }
  assert.equal(h.stack.stats().drops["ipv4-fragment"], 20000);
  assert.equal(h.datagrams.opened.length, 0);
  assert.ok(process.memoryUsage().heapUsed - heapBefore < 16 << 20);
});

test("net-l2l3: malformed IPv4 (case 19): IHL < 5, total length above the frame, bad checksums, options", () => {
  const h = harness();
  const base = () => udpFrame(5000, PUBLIC, 443, Buffer.from("hello"));
  const ihl4 = base();
  ihl4[ETH_HEADER_BYTES] = 0x44;
  h.stack.receiveFrame(fixIpChecksum(ihl4));
  const long = base();
  long.writeUInt16BE(2000, ETH_HEADER_BYTES + 2);
  h.stack.receiveFrame(fixIpChecksum(long));
  const badSum = base();
  badSum[ETH_HEADER_BYTES + 10] = badSum[ETH_HEADER_BYTES + 10]! ^ 0xff;
  h.stack.receiveFrame(badSum);
  const v5 = base();
  v5[ETH_HEADER_BYTES] = 0x55;
  h.stack.receiveFrame(fixIpChecksum(v5));
  const badUdp = base();
  badUdp[badUdp.length - 1] = badUdp[badUdp.length - 1]! ^ 1;
  h.stack.receiveFrame(badUdp);
  const runt = Buffer.alloc(10);
  h.stack.receiveFrame(runt);
  // IPv4 options: IHL 6 with a NOP option word.
  const opt = Buffer.alloc(base().length + 4);
  const b = base();
  b.copy(opt, 0, 0, ETH_HEADER_BYTES + 20);
  opt.writeUInt32BE(0x01010101, ETH_HEADER_BYTES + 20);
  b.copy(opt, ETH_HEADER_BYTES + 24, ETH_HEADER_BYTES + 20);
  opt[ETH_HEADER_BYTES] = 0x46;
  opt.writeUInt16BE(opt.length - ETH_HEADER_BYTES, ETH_HEADER_BYTES + 2);
  h.stack.receiveFrame(fixIpChecksum(opt));
  const d = h.stack.stats().drops;
  assert.equal(d["ipv4-malformed"], 3);
  assert.equal(d["ipv4-bad-checksum"], 1);
  assert.equal(d["udp-bad-checksum"], 1);
  assert.equal(d["eth-runt"], 1);
  assert.equal(d["ipv4-options"], 1);
  assert.equal(h.out.length + h.datagrams.opened.length, 0);
});

test("net-l2l3: UDP: a flow per 5-tuple to the policy-allowed peer, replies only from that peer (case 31)", () => {
  const h = harness();
  h.stack.receiveFrame(udpFrame(5000, PUBLIC, 4433, Buffer.from("q1")));
  h.stack.receiveFrame(udpFrame(5000, PUBLIC, 4433, Buffer.from("q2")));
  assert.equal(h.datagrams.opened.length, 1);
  const d = h.datagrams.opened[0]!;
  assert.deepEqual(d.target, { ip: "93.184.216.34", port: 4433, guestPort: 5000 });
  assert.deepEqual(d.sent.map(String), ["q1", "q2"]);
  d.h.onMessage(Buffer.from("r1"), { ip: "93.184.216.34", port: 4433 });
  d.h.onMessage(Buffer.from("spoof"), { ip: "6.6.6.6", port: 4433 });
  d.h.onMessage(Buffer.from("spoof"), { ip: "93.184.216.34", port: 4434 });
  const outs = drain(h).map(parseOut);
  assert.equal(outs.length, 1);
  assert.equal(outs[0]!.src, PUBLIC);
  assert.equal(outs[0]!.udp!.srcPort, 4433);
  assert.equal(outs[0]!.udp!.dstPort, 5000);
  assert.equal(outs[0]!.udp!.data.toString(), "r1");
  assert.equal(h.stack.stats().drops["udp-foreign-peer"], 2);
  h.clock.advance(61_000);
  assert.ok(d.closed, "idle timeout closed the flow");
  assert.equal(h.stack.stats().udp.open, 0);
});

test("net-l2l3: UDP: a denied destination gets ICMP port unreachable quoting the datagram", () => {
  const h = harness();
  const f = udpFrame(5000, ip("10.99.0.5"), 443, Buffer.from("quic"));
  h.stack.receiveFrame(f);
  const p = parseOut(drain(h)[0]!);
  assert.equal(p.icmp!.type, 3);
  assert.equal(p.icmp!.code, 3);
  const quoted = p.icmp!.body.subarray(4);
  assert.ok(quoted.subarray(0, 28).equals(f.subarray(ETH_HEADER_BYTES, ETH_HEADER_BYTES + 28)), "IP header + 8 bytes quoted");
  assert.equal(h.datagrams.opened.length, 0);
  assert.equal(h.stack.stats().udp.refused["denied: test-inside"], 1);
});

test("net-l2l3: UDP flood to 10^4 ports (case 31): capped at maxUdpFlows, the rest refused", () => {
  const h = harness({ caps: { maxUdpFlows: 1024 } });
  for (let p = 1; p <= 10_000; p++) h.stack.receiveFrame(udpFrame(5000, PUBLIC, p === 53 || p === 9 ? 20000 + p : p, Buffer.from("x")));
  assert.equal(h.datagrams.opened.length, 1024);
  assert.equal(h.stack.stats().udp.refused["udp-flow-cap"], 10_000 - 1024);
  assert.equal(drain(h).filter((f) => parseOut(f).icmp?.type === 3).length, 10_000 - 1024);
});

function query(name: string, type: string, id = 0x4242, extra: Partial<dnsPacket.Packet> = {}): Buffer {
  return dnsPacket.encode({ type: "query", id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: type as "A", name }], ...extra });
}

function dnsAnswers(h: ReturnType<typeof harness>) {
  return drain(h).map((f) => {
    const p = parseOut(f);
    return { p, msg: dnsPacket.decode(p.udp!.data) as dnsPacket.DecodedPacket & { rcode?: string } };
  });
}

test("net-l2l3: DNS: host.microagent.internal and --add-host names answered locally; AAAA gets NODATA", () => {
  const h = harness({ dns: { hosts: { "Model.Test": "192.0.2.10" } } });
  h.stack.receiveFrame(udpFrame(33000, gwIp, 53, query("host.microagent.internal", "A")));
  h.stack.receiveFrame(udpFrame(33001, gwIp, 53, query("model.test.", "A", 7)));
  h.stack.receiveFrame(udpFrame(33002, gwIp, 53, query("HOST.microagent.internal", "AAAA", 8)));
  h.stack.receiveFrame(udpFrame(33003, gwIp, 53, query("nope.microagent.internal", "A", 9)));
  const a = dnsAnswers(h);
  assert.equal(a.length, 4);
  assert.equal(a[0]!.p.src, gwIp);
  assert.equal(a[0]!.p.udp!.srcPort, 53);
  assert.equal(a[0]!.p.udp!.dstPort, 33000);
  assert.equal(a[0]!.msg.id, 0x4242);
  assert.equal(a[0]!.msg.rcode, "NOERROR");
  assert.deepEqual(a[0]!.msg.answers!.map((r) => [r.type, (r as { data: string }).data]), [["A", "10.200.0.1"]]);
  assert.deepEqual(a[1]!.msg.answers!.map((r) => (r as { data: string }).data), ["192.0.2.10"]);
  assert.equal(a[2]!.msg.rcode, "NOERROR");
  assert.equal(a[2]!.msg.answers!.length, 0);
  assert.equal(a[3]!.msg.rcode, "NXDOMAIN");
  assert.equal(h.resolver.queries.length, 0, "nothing forwarded");
});

test("net-l2l3: DNS: other names are forwarded without blocking; answers come back asynchronously; foreign resolvers are answered by us", async () => {
  const h = harness();
  const seen: string[] = [];
  h.stack.receiveFrame(udpFrame(33000, gwIp, 53, query("example.com", "A", 11)));
  h.stack.receiveFrame(udpFrame(33001, ip("1.1.1.1"), 53, query("example.org", "A", 12)));
  assert.equal(h.resolver.pending.length, 2);
  assert.equal(h.out.length, 0, "the frame loop returned before any answer");
  // Meanwhile ARP still works.
  h.stack.receiveFrame(arpFrame(1, guestMac, guestIp, gwIp));
  assert.equal(drain(h).length, 1);
  for (const p of h.resolver.pending) {
    const q = dnsPacket.decode(p.raw);
    seen.push(q.questions![0]!.name);
    p.resolve(dnsPacket.encode({ type: "response", id: q.id!, flags: dnsPacket.RECURSION_AVAILABLE, questions: q.questions!, answers: [{ type: "A", name: q.questions![0]!.name, ttl: 30, data: "93.184.216.34" }] }));
  }
  await new Promise((r) => setImmediate(r));
  const a = dnsAnswers(h);
  assert.deepEqual(seen, ["example.com", "example.org"]);
  assert.equal(a.length, 2);
  assert.equal(a[1]!.p.src, ip("1.1.1.1"), "answered with the guest's target as the source");
  assert.equal(a[1]!.msg.id, 12);
  assert.equal((a[0]!.msg.answers![0] as { data: string }).data, "93.184.216.34");
  assert.equal(h.stack.stats().events["dns-forwarded"], 2);
});

test("net-l2l3: DNS: malformed and hostile queries are refused or dropped; timeouts and the in-flight cap give SERVFAIL", async () => {
  const h = harness({ caps: { dnsInFlight: 2 } });
  const send = (b: Buffer) => h.stack.receiveFrame(udpFrame(33000, gwIp, 53, b));
  send(Buffer.from([1, 2, 3])); // too short: dropped
  const resp = query("a.test", "A");
  resp.writeUInt16BE(resp.readUInt16BE(2) | 0x8000, 2);
  send(resp); // a response: never answered (no loops)
  const two = query("a.test", "A");
  two.writeUInt16BE(2, 4); // QDCOUNT 2
  send(two);
  const longLabel = query("a".repeat(63) + ".test", "A");
  longLabel[12] = 64; // label length 64
  send(longLabel);
  const ptr = Buffer.from(query("a.test", "A"));
  ptr[12] = 0xc0;
  ptr[13] = 12; // compression pointer loop in the question
  send(ptr);
  const rc = dnsAnswers(h).map((a) => a.msg.rcode);
  assert.deepEqual(rc, ["FORMERR", "FORMERR", "FORMERR"]);
  assert.equal(h.stack.stats().events["dns-malformed"], 4);
  assert.equal(h.stack.stats().events["dns-not-query"], 1);
  send(query("x1.test", "A", 1));
  send(query("x2.test", "A", 2));
  send(query("x3.test", "A", 3)); // over the cap
  const capped = dnsAnswers(h);
  assert.equal(capped.length, 1);
  assert.equal(capped[0]!.msg.rcode, "SERVFAIL");
  assert.equal(capped[0]!.msg.id, 3);
  h.clock.advance(5000);
  const timedOut = dnsAnswers(h);
  assert.deepEqual(timedOut.map((a) => [a.msg.id, a.msg.rcode]), [[1, "SERVFAIL"], [2, "SERVFAIL"]]);
  assert.equal(h.stack.stats().dns.inFlight, 0);
  // A late upstream answer after the timeout is ignored.
  h.resolver.pending[0]!.resolve(Buffer.alloc(12));
  await new Promise((r) => setImmediate(r));
  assert.equal(h.out.length, 0);
});

test("net-l2l3: DNS: the observer hook refuses, and rewrites answers (the egress seam)", async () => {
  const h = harness({}, {
    dnsObserver: {
      onQuery: (q) => (q.name.endsWith(".blocked") ? { action: "refuse" } : { action: "forward" }),
      onAnswer: (q, answer) => {
        const m = dnsPacket.decode(answer);
        return dnsPacket.encode({ ...m, answers: (m.answers ?? []).filter((r) => r.type === "A"), id: m.id! }) ?? (void q as never);
      },
    },
  });
  h.stack.receiveFrame(udpFrame(33000, gwIp, 53, query("x.blocked", "A", 5)));
  assert.equal(dnsAnswers(h)[0]!.msg.rcode, "REFUSED");
  assert.equal(h.resolver.queries.length, 0);
  h.stack.receiveFrame(udpFrame(33000, gwIp, 53, query("ok.test", "A", 6)));
  const p = h.resolver.pending[0]!;
  p.resolve(dnsPacket.encode({ type: "response", id: 6, questions: [{ type: "A", name: "ok.test" }], answers: [{ type: "A", name: "ok.test", data: "192.0.2.1" }, { type: "TXT", name: "ok.test", data: "strip me" }] }));
  await new Promise((r) => setImmediate(r));
  const m = dnsAnswers(h)[0]!.msg;
  assert.deepEqual(m.answers!.map((r) => r.type), ["A"]);
});

test("net-l2l3: DNS over TCP/53: several length-prefixed queries on one connection (glibc A+AAAA)", async () => {
  const h = harness();
  const g = new GuestTcp(h, { localPort: 45000, remote: gwIp, remotePort: 53 });
  g.connect();
  h.clock.advance(1); // the session connects on the next tick
  pump(h, [g]);
  assert.equal(g.state, "ESTABLISHED");
  assert.equal(h.connector.streams.length, 0, "served in-process, not dialled");
  g.keep = [];
  const msgs = [query("host.microagent.internal", "A", 1), query("host.microagent.internal", "AAAA", 2)];
  const wire = Buffer.concat(msgs.flatMap((m) => [Buffer.from([m.length >> 8, m.length & 255]), m]));
  g.pushData(() => wire, wire.length);
  pump(h, [g]);
  const all = Buffer.concat(g.keep);
  const ids: number[] = [];
  for (let o = 0; o < all.length; ) {
    const len = all.readUInt16BE(o);
    ids.push(dnsPacket.decode(all.subarray(o + 2, o + 2 + len)).id!);
    o += 2 + len;
  }
  assert.deepEqual(ids, [1, 2]);
  g.fin();
  pump(h, [g]);
  assert.ok(g.finReceived, "the session ends after the guest does");
});

test("net-l2l3: sever (quarantine) cuts every flow at once and drops every later frame", () => {
  const h = harness();
  const g = new GuestTcp(h, { localPort: 40000, remote: PUBLIC, remotePort: 80 });
  g.connect();
  pump(h, [g]);
  h.stack.receiveFrame(udpFrame(5000, PUBLIC, 4433, Buffer.from("x")));
  h.stack.sever();
  assert.ok(h.connector.last.destroyed);
  assert.equal((h.connector.last.destroyed as { code?: string }).code, "NET_LINK_CLOSED");
  assert.ok(h.datagrams.opened[0]!.closed);
  drain(h);
  h.stack.receiveFrame(arpFrame(1, guestMac, guestIp, gwIp));
  h.stack.receiveFrame(icmpEchoFrame(gwIp, 1, 1, Buffer.alloc(0)));
  assert.equal(h.out.length, 0);
  assert.equal(h.stack.stats().drops["severed"], 2);
  assert.equal(h.stack.stats().tcp.open, 0);
  assert.throws(() => h.stack.connectToGuest(80, { onConnect() {}, onData() {}, onDrain() {}, onEnd() {}, onClose() {} }), { code: "NET_LINK_CLOSED" });
  void GUEST_IP;
  void guestAddr;
});

test("net-l2l3: DNS: an upstream answer larger than the guest's UDP limit is truncated with TC set", async () => {
  const h = harness();
  h.stack.receiveFrame(udpFrame(33000, gwIp, 53, query("big.test", "TXT", 21)));
  const p = h.resolver.pending[0]!;
  const answers = Array.from({ length: 20 }, (_, i) => ({ type: "TXT" as const, name: "big.test", data: "x".repeat(100) + i }));
  p.resolve(dnsPacket.encode({ type: "response", id: 21, questions: [{ type: "TXT", name: "big.test" }], answers }));
  await new Promise((r) => setImmediate(r));
  const [a] = dnsAnswers(h);
  assert.ok(a!.p.udp!.data.length <= 512);
  assert.equal(a!.msg.flag_tc, true);
  assert.equal(a!.msg.answers!.length, 0);
});

test("net-l2l3: UDP: a host datagram that cannot open gives ICMP host unreachable", () => {
  const h = harness({}, { datagrams: { open: () => { throw new Error("EMFILE"); } } });
  h.stack.receiveFrame(udpFrame(5000, PUBLIC, 4433, Buffer.from("x")));
  const p = parseOut(drain(h)[0]!);
  assert.equal(p.icmp!.type, 3);
  assert.equal(p.icmp!.code, 1);
  assert.equal(h.stack.stats().udp.refused["udp-host-error"], 1);
});

test("net-l2l3: configuration is validated with NET_INVALID_CONFIG naming the field", async () => {
  const { resolveNetworkOptions } = await import("../../src/net/config.ts");
  const bad: Array<[object, RegExp]> = [
    [{ guestIp: "10.0.0.2", gatewayIp: "10.1.0.1" }, /not in one \/24/],
    [{ mtu: 100 }, /mtu/],
    [{ guestMac: "01:00:00:00:00:01" }, /multicast/],
    [{ guestIp: "10.200.0.255" }, /broadcast/],
    [{ dns: { hosts: { "bad name": "1.2.3.4" } } }, /not a host name/],
    [{ dns: { hosts: { ok: "1.2.3" } } }, /not an IPv4/],
    [{ caps: { maxTcpFlows: 0 } }, /maxTcpFlows/],
  ];
  for (const [o, re] of bad) assert.throws(() => resolveNetworkOptions(o), (e: unknown) => (e as { code?: string }).code === "NET_INVALID_CONFIG" && re.test((e as Error).message), JSON.stringify(o));
  const d = resolveNetworkOptions();
  assert.equal(d.mtu, 65520);
  assert.equal(d.gatewayIp, "10.200.0.1");
  assert.equal(d.caps.maxTcpFlows, 256);
  assert.equal(d.caps.maxHalfOpen, 64);
});

/**
 * Hostile-guest cases of research (e) that the mediator unit tests left half-proved, each through
 * the real NetworkStack and EgressMediator in-process (test/helpers/egress-world.ts: the test plays
 * the guest, upstreams are local servers on 127.0.0.1 with their own CA). Every test asserts what
 * the guest sees (an RST, an ICMP error, an rcode, an HTTP status, the bytes) and the audit record.
 * docs/egress-hostile-cases.md maps every case to its tests.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import dnsPacket from "dns-packet";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { createServer, type AddressInfo, type Socket } from "node:net";
import { A_IP, B_IP, EVIL_IP, GW, exchange, get, guestTls, settle, world, workspaceCa } from "../helpers/egress-world.ts";
import type { World } from "../helpers/egress-world.ts";
import { ip as ipNum, udpFrame } from "../helpers/net-guest.ts";
import type { GuestSocket } from "../helpers/egress-guest.ts";
import { LeafIssuer } from "../../src/egress/ca.ts";

/** What a guest SYN gets: a connection, an RST, or (frames dropped) nothing within `ms`. */
async function synOutcome(net: World["net"], ip: string, port: number, ms = 300): Promise<"connected" | "refused" | "no-answer"> {
  let done = false;
  const p = net.tcp(ip, port).then(
    (s) => {
      done = true;
      s.destroy();
      return "connected" as const;
    },
    () => {
      done = true;
      return "refused" as const;
    },
  );
  const r = await Promise.race([p, settle(ms).then(() => "no-answer" as const)]);
  if (!done) p.catch(() => {});
  return r;
}

/** One DNS query over the guest's TCP (dig +tcp): length-prefixed, to `target`:53. */
async function dnsOverTcp(s: GuestSocket, name: string): Promise<{ rcode: string; answers: Array<{ type: string; data?: unknown }> }> {
  const q = dnsPacket.encode({ id: 77, type: "query", flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: "A", class: "IN" }] });
  const framed = Buffer.concat([Buffer.from([q.length >> 8, q.length & 255]), q]);
  const reply = await new Promise<Buffer>((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const t = setTimeout(() => reject(new Error("no DNS/TCP answer")), 5000);
    s.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        clearTimeout(t);
        resolve(buf.subarray(2, 2 + buf.readUInt16BE(0)));
      }
    });
    s.write(framed);
  });
  return dnsPacket.decode(reply) as never;
}

test("egress-hostile: case 5: an HTTPS (type 65) query gets NODATA, audited; the client then sends a cleartext SNI the mediator reads", async () => {
  const w = await world({});
  w.resolver.set("allowed.test", A_IP);
  try {
    for (const t of ["UNKNOWN_65", "UNKNOWN_64"]) {
      const r = await w.net.dnsQuery("allowed.test", t);
      assert.equal(r.rcode, "NOERROR", t);
      assert.equal(r.answers!.length, 0, `${t}: NODATA, so no ECH config reaches the client`);
    }
    await w.net.dnsQuery("allowed.test");
    const t = await guestTls(await w.net.tcp(A_IP, 443), "allowed.test");
    assert.match(await exchange(t, get("allowed.test")), /hello from allowed\.test/);
    await settle(100);
    const nodata = w.rec.of("egress_dns_allow").filter((r) => r.name === "allowed.test" && (r.qtype === "UNKNOWN_65" || r.qtype === "UNKNOWN_64"));
    assert.equal(nodata.length, 2, JSON.stringify(w.rec.all));
    assert.ok(nodata.every((r) => Array.isArray(r.answers) && r.answers.length === 0), "audited with no answers");
    const allow = w.rec.of("egress_allow")[0]!;
    assert.equal(allow.sni, "allowed.test", "the SNI was read in clear from the ClientHello");
    assert.equal(allow.name, "allowed.test");
  } finally {
    await w.close();
  }
});

test("egress-hostile: case 6: DoH inside MITM (POST and GET ?dns=, dns-json) is 403 to the guest, audited dns-over-https, never reaches the upstream", async () => {
  const w = await world({}, { addHosts: [{ name: "allowed.test", ip: A_IP }] });
  const open = async () => guestTls(await w.net.tcp(A_IP, 443), "allowed.test");
  try {
    const q = dnsPacket.encode({ id: 0, type: "query", questions: [{ name: "example.org", type: "A" }] });
    const b64 = q.toString("base64url");
    const reqs = [
      `POST /dns-query HTTP/1.1\r\nHost: allowed.test\r\nContent-Type: application/dns-message\r\nAccept: application/dns-message\r\nContent-Length: ${q.length}\r\nConnection: close\r\n\r\n${q.toString("latin1")}`,
      `GET /dns-query?dns=${b64} HTTP/1.1\r\nHost: allowed.test\r\nAccept: application/dns-message\r\nConnection: close\r\n\r\n`,
      `GET /resolve?name=example.org&type=A HTTP/1.1\r\nHost: allowed.test\r\nAccept: application/dns-json\r\nConnection: close\r\n\r\n`,
    ];
    for (const r of reqs) assert.match(await exchange(await open(), r), /^HTTP\/1\.1 403/, r.slice(0, 40));
    // an ordinary request on the same name still works
    assert.match(await exchange(await open(), get("allowed.test", "/ok")), /path=\/ok/);
    await settle(100);
    const doh = w.rec.of("egress_deny").filter((r) => r.signal === "dns-over-https");
    assert.equal(doh.length, 3, JSON.stringify(w.rec.of("egress_deny")));
    assert.ok(doh.every((r) => r.name === "allowed.test" && r.dst === `${A_IP}:443`));
    assert.deepEqual(w.seen.a, ["allowed.test /ok"], "no DoH request reached the upstream");
  } finally {
    await w.close();
  }
});

test("egress-hostile: case 7: DoT (TCP/853) RST, DoQ (UDP/853), mDNS and LLMNR ports ICMP unreachable, each audited with its signal; multicast groups dropped at L3 and counted; nothing dialled", async () => {
  const w = await world({});
  try {
    await assert.rejects(w.net.tcp("1.1.1.1", 853), /ECONNREFUSED/, "DoT: RST at SYN");
    const doq = await w.net.udpSend("1.1.1.1", 853, Buffer.from("doq initial"));
    const mdns = await w.net.udpSend(EVIL_IP, 5353, Buffer.from("mdns query"));
    const llmnr = await w.net.udpSend(EVIL_IP, 5355, Buffer.from("llmnr query"));
    for (const [what, icmp] of [["DoQ", doq], ["mDNS", mdns], ["LLMNR", llmnr]] as const) assert.deepEqual(icmp.map((m) => m.type), [3], `${what}: destination unreachable`);
    // The multicast groups themselves never get past L3 (no ICMP for multicast, RFC 1122): counted drops.
    const drops = () => w.net.stack.stats().drops["ipv4-bad-dst"] ?? 0;
    const before = drops();
    assert.deepEqual(await w.net.udpSend("224.0.0.251", 5353, Buffer.from("mdns")), []);
    assert.deepEqual(await w.net.udpSend("224.0.0.252", 5355, Buffer.from("llmnr")), []);
    assert.equal(drops() - before, 2);
    await settle(100);
    const sig = (t: string, dst: string) => w.rec.all.find((r) => r.type === t && r.dst === dst)?.signal;
    assert.equal(sig("egress_deny", "1.1.1.1:853"), "dns-over-tls");
    assert.equal(sig("egress_udp_deny", "1.1.1.1:853"), "dns-over-quic");
    assert.equal(sig("egress_udp_deny", `${EVIL_IP}:5353`), "multicast-dns");
    assert.equal(sig("egress_udp_deny", `${EVIL_IP}:5355`), "llmnr");
    assert.deepEqual(w.routes.dials, []);
  } finally {
    await w.close();
  }
});

test("egress-hostile: case 8: dig +tcp @1.1.1.1 is answered by the mediator (foreign-resolver); strict REFUSES an off-list name over TCP without forwarding", async () => {
  const g = await world({});
  g.resolver.set("allowed.test", A_IP);
  try {
    const r = await dnsOverTcp(await g.net.tcp("1.1.1.1", 53), "allowed.test");
    assert.equal(r.rcode, "NOERROR");
    assert.deepEqual(r.answers.map((a) => a.data), [A_IP]);
    await settle(100);
    const rec = g.rec.of("egress_dns_allow").find((x) => x.name === "allowed.test")!;
    assert.equal(rec.signal, "foreign-resolver");
    assert.equal(rec.dst, "1.1.1.1:53");
    assert.deepEqual(g.routes.dials, [], "nothing dialled to 1.1.1.1");
  } finally {
    await g.close();
  }
  const s = await world({ egress: "strict", egressAllow: ["allowed.test"] });
  s.resolver.set("b.test", B_IP);
  try {
    const r = await dnsOverTcp(await s.net.tcp("1.1.1.1", 53), "b.test");
    assert.equal(r.rcode, "REFUSED");
    assert.deepEqual(s.resolver.asked, [], "never forwarded");
    await settle(100);
    const d = s.rec.of("egress_dns_deny").find((x) => x.name === "b.test")!;
    assert.equal(d.signal, "foreign-resolver");
  } finally {
    await s.close();
  }
});

/** A tunnelling-shaped name: long random-looking labels under the attacker's zone. */
function tunnelName(i: number): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz234567";
  const label = (seed: number) => Array.from({ length: 60 }, (_, k) => alphabet[(seed * 31 + k * 7 + ((seed >> 3) ^ k)) % 32]).join("");
  return `${label(i)}.${label(i + 1000)}.x.attacker.test`;
}

test("egress-hostile: case 9: DNS tunnelling: strict REFUSES every query, forwarding none; guarded forwards a burst flagged dns-tunnel, then REFUSES, audited", async () => {
  const s = await world({ egress: "strict", egressAllow: ["allowed.test"] });
  try {
    for (let i = 0; i < 30; i++) assert.equal((await s.net.dnsQuery(tunnelName(i), "TXT")).rcode, "REFUSED");
    assert.deepEqual(s.resolver.asked, [], "nothing forwarded upstream");
    await settle();
    assert.equal(s.rec.of("egress_dns_deny").length, 30);
  } finally {
    await s.close();
  }
  const g = await world({});
  g.resolver.set("allowed.test", A_IP);
  try {
    const rcodes: string[] = [];
    for (let i = 0; i < 40; i++) rcodes.push((await g.net.dnsQuery(tunnelName(i), "TXT")).rcode!);
    const forwarded = rcodes.filter((r) => r === "NOERROR").length;
    assert.ok(forwarded >= 20 && forwarded <= 22, `the suspect burst (20, plus refill) is forwarded, then refused: ${rcodes.join(",")}`);
    assert.equal(rcodes.filter((r) => r === "REFUSED").length, 40 - forwarded);
    assert.equal(g.resolver.asked.filter((q) => q.endsWith("attacker.test/TXT")).length, forwarded, "only the burst reached the resolver");
    assert.deepEqual((await g.net.dnsQuery("allowed.test")).answers!.map((a) => a.data), [A_IP], "ordinary names keep resolving");
    await settle();
    assert.ok(g.rec.of("egress_dns_allow").filter((r) => r.signal === "dns-tunnel").length === forwarded, "the forwarded ones are flagged");
    assert.equal(g.rec.of("egress_dns_deny").filter((r) => r.signal === "dns-tunnel").length, 40 - forwarded);
  } finally {
    await g.close();
  }
});

test("egress-hostile: case 10: rebinding: an allowed name answers a public IP, then 10.0.0.5 and 169.254.169.254; the inside answers never reach the guest and a connect to them is RST", async () => {
  const w = await world({});
  w.resolver.set("allowed.test", A_IP);
  try {
    assert.deepEqual((await w.net.dnsQuery("allowed.test")).answers!.map((a) => a.data), [A_IP]);
    const t = await guestTls(await w.net.tcp(A_IP, 443), "allowed.test");
    assert.match(await exchange(t, get("allowed.test", "/before")), /path=\/before/);
    for (const inside of ["10.0.0.5", "169.254.169.254"]) {
      w.resolver.set("allowed.test", inside);
      const r = await w.net.dnsQuery("allowed.test");
      assert.equal(r.answers!.filter((a) => a.type === "A").length, 0, `${inside} was dropped from the answer`);
      await assert.rejects(w.net.tcp(inside, 443), /ECONNREFUSED/, inside);
      assert.ok(!w.med.pins.isPinned("allowed.test", inside));
    }
    await settle(100);
    const rebind = w.rec.of("egress_dns_allow").filter((r) => r.name === "allowed.test" && r.signal === "dns-rebinding");
    assert.equal(rebind.length, 2);
    assert.ok(rebind.every((r) => r.answers?.length === 0));
    for (const inside of ["10.0.0.5", "169.254.169.254"]) {
      const d = w.rec.of("egress_deny").find((r) => r.dst === `${inside}:443`)!;
      assert.equal(d.signal, "inside-destination", inside);
      assert.equal(d.name, null, "never audited under the name that rebound");
    }
    assert.ok(!w.routes.dials.some((d) => d.startsWith("10.") || d.startsWith("169.")));
  } finally {
    await w.close();
  }
});

test("egress-hostile: case 12: inside destinations through the frame path (metadata, 10/8, 100.64/10, gateway ports not published) are RST and audited on the dialled address; loopback, this-network and broadcast are dropped at L3", async () => {
  const w = await world({ mediation: ["7000=127.0.0.1:1"], mediationOptional: true });
  try {
    const targets: Array<[string, number]> = [["169.254.169.254", 80], ["10.0.0.5", 80], ["100.64.0.1", 80], ["172.16.0.1", 80], ["192.168.1.1", 80], [GW, 22], [GW, 8080], [GW, 53 + 10000]];
    for (const [ip, port] of targets) assert.equal(await synOutcome(w.net, ip, port), "refused", `${ip}:${port}`);
    const udp = await w.net.udpSend("169.254.169.254", 80, Buffer.from("x"));
    assert.deepEqual(udp.map((m) => m.type), [3]);
    const drops = () => w.net.stack.stats().drops["ipv4-bad-dst"] ?? 0;
    const before = drops();
    for (const ip of ["127.0.0.1", "0.0.0.0", "10.200.0.255", "10.200.0.2"]) assert.equal(await synOutcome(w.net, ip, 22, 100), "no-answer", ip);
    assert.equal(drops() - before, 4, "counted, never routed");
    await settle(100);
    for (const [ip, port] of targets) {
      const d = w.rec.all.find((r) => r.type === "egress_deny" && r.dst === `${ip}:${port}`);
      assert.ok(d, `${ip}:${port} audited: ${JSON.stringify(w.rec.all.map((r) => r.dst))}`);
      assert.equal(d.name, null);
      assert.ok(d.signal === "inside-destination" || d.signal === "denied", `${ip}:${port}: ${d.signal}`);
    }
    assert.equal(w.rec.all.find((r) => r.dst === "169.254.169.254:80" && r.type === "egress_deny")!.signal, "inside-destination");
    assert.ok(w.rec.of("egress_udp_deny").some((r) => r.dst === "169.254.169.254:80"));
    assert.deepEqual(w.routes.dials, [], "nothing dialled");
  } finally {
    await w.close();
  }
});

test("egress-hostile: case 26: 10^4 distinct SNIs against the default issuer: issuance capped, the LRU bounded at 256, no issue() call blocks 5 ms", () => {
  const issuer = new LeafIssuer(workspaceCa);
  const h = monitorEventLoopDelay({ resolution: 1 });
  let issued = 0;
  let refused = 0;
  const times: number[] = [];
  h.enable();
  for (let i = 0; i < 10_000; i++) {
    const t0 = process.hrtime.bigint();
    const leaf = issuer.issue(`n${i}.flood.test`);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (leaf) issued++;
    else refused++;
  }
  h.disable();
  times.sort((a, b) => a - b);
  const p999 = times[Math.floor(times.length * 0.999)]!;
  assert.ok(issued <= 64 + 16 * 2, `the burst (64) plus the rate (16/s) over the loop: ${issued}`);
  assert.equal(issued + refused, 10_000);
  assert.ok(issuer.size <= 256, `LRU bounded: ${issuer.size}`);
  assert.ok(p999 < 5, `issue() p99.9 ${p999.toFixed(3)} ms (max ${times.at(-1)!.toFixed(3)} ms)`);
});

test("egress-hostile: case 26 through the mediator: SNIs past the issuance cap get an RST and egress_cap_exceeded; a name already issued keeps working", async () => {
  const w = await world({}, { addHosts: [{ name: "allowed.test", ip: A_IP }], issuer: { newNamesBurst: 3, newNamesPerSecond: 0.001 } });
  try {
    const t = await guestTls(await w.net.tcp(A_IP, 443), "allowed.test");
    assert.match(await exchange(t, get("allowed.test", "/first")), /path=\/first/);
    let refused = 0;
    for (let i = 0; i < 12; i++) {
      await guestTls(await w.net.tcp(A_IP, 443), `n${i}.flood.test`).then(
        (s) => s.destroy(),
        () => refused++,
      );
    }
    // n0..n1 get leaves (then fail upstream: the server's certificate names allowed.test only); the rest are capped.
    assert.equal(refused, 12);
    const again = await guestTls(await w.net.tcp(A_IP, 443), "allowed.test");
    assert.match(await exchange(again, get("allowed.test", "/again")), /path=\/again/, "a cached leaf is not a new name");
    await settle(100);
    const caps = w.rec.of("egress_cap_exceeded");
    assert.equal(caps.length, 10);
    assert.ok(caps.every((r) => r.decision === "deny" && r.signal === "cap-exceeded"));
    assert.equal(w.rec.of("egress_mitm_upstream_error").length, 2);
    assert.ok(w.med.issuer!.size <= 3);
  } finally {
    await w.close();
  }
});

test("egress-hostile: case 31: a UDP flood to 2,000 ports: the stack's flow cap answers ICMP unreachable and the refusals are audited as egress_cap_exceeded", async () => {
  const w = await world({}, { stack: { caps: { maxUdpFlows: 64 } } as never });
  try {
    const icmpBefore = w.net.icmp.length;
    for (let p = 0; p < 2000; p++) w.net.stack.receiveFrame(udpFrame(30000 + (p % 1000), ipNum(EVIL_IP), 10000 + p, Buffer.from("x")));
    w.net.pump();
    await settle(100);
    assert.equal(w.net.icmp.length - icmpBefore, 2000 - 64, "every datagram past the cap gets an ICMP error");
    assert.equal(w.net.stack.stats().udp.open, 64);
    assert.equal(w.rec.of("egress_udp_allow").length, 64);
    const caps = w.rec.of("egress_cap_exceeded").filter((r) => r.proto === "udp");
    assert.equal(caps.length, 2000 - 64, "each refusal reaches the audit sink (the file coalesces them)");
    assert.match(caps[0]!.reason, /UDP flows/);
  } finally {
    await w.close();
  }
});

test("egress-hostile: the stack's own TCP cap (256 flows, the same as --egress-max-conns) is audited as egress_cap_exceeded (case 21 at the default caps)", async () => {
  const w = await world({});
  const open: GuestSocket[] = [];
  try {
    for (let i = 0; i < 256; i++) open.push(await w.net.tcp(EVIL_IP, 80));
    await assert.rejects(w.net.tcp(EVIL_IP, 80), /ECONNREFUSED/, "the 257th flow");
    await settle(50);
    const caps = w.rec.of("egress_cap_exceeded");
    assert.equal(caps.length, 1, JSON.stringify(w.rec.all.slice(-3)));
    assert.equal(caps[0]!.dst, `${EVIL_IP}:80`);
    assert.equal(caps[0]!.limit, 256);
    assert.match(caps[0]!.reason, /256 open TCP flows|--egress-max-conns 256/);
  } finally {
    for (const s of open) s.destroy();
    await w.close();
  }
});

test("egress-hostile: case 34: quarantine cuts a MITM flow, a spliced flow and a mediation-channel flow at once, each audited closed; later frames are dropped", async () => {
  const held = new Set<Socket>();
  const listener = createServer((c) => {
    held.add(c);
    c.on("error", () => {});
    c.write("hello\n");
  });
  await new Promise<void>((r) => listener.listen(0, "127.0.0.1", () => r()));
  const mport = (listener.address() as AddressInfo).port;
  let upstreamClosed = 0;
  const w = await world(
    { mediation: [`7000=127.0.0.1:${mport}`] },
    {
      addHosts: [{ name: "allowed.test", ip: A_IP }],
      handlerA: (req, res) => {
        res.writeHead(200, { "content-type": "text/plain" });
        res.write("streaming\n");
        req.socket.once("close", () => upstreamClosed++);
      },
    },
  );
  try {
    const t = await guestTls(await w.net.tcp(A_IP, 443), "allowed.test");
    const gotHead = new Promise<void>((r) => t.once("data", () => r()));
    t.write(get("allowed.test", "/stream"));
    await gotHead;
    const plain = await w.net.tcp(EVIL_IP, 80);
    plain.write("POST /slow HTTP/1.1\r\nHost: evil.test\r\nContent-Length: 1000000\r\n\r\npartial");
    const m = await w.net.tcp(GW, 7000);
    await new Promise<void>((r) => m.once("data", () => r()));
    await settle(100);
    assert.equal(w.med.stats.active, 3);
    const listenerClosed = Promise.all([...held].map((c) => new Promise<void>((r) => (c.destroyed ? r() : c.once("close", () => r())))));
    // What NetworkService.sever does on quarantine.
    w.net.stack.sever();
    w.med.sever();
    await Promise.race([listenerClosed, settle(2000).then(() => assert.fail("the mediation listener's connection stayed open"))]);
    await settle(200);
    assert.equal(upstreamClosed, 1, "the upstream of the MITM flow saw its connection close");
    assert.equal(w.med.stats.active, 0);
    const closes = w.rec.of("egress_close");
    assert.equal(closes.length, 3, JSON.stringify(closes));
    assert.ok(closes.every((r) => /severed/.test(r.reason)), closes.map((r) => r.reason).join(" | "));
    assert.deepEqual(closes.map((r) => r.name).sort(), [null, "allowed.test", "mediation.microagent.internal"].sort() as never);
    // The guest: its flows are gone on the stack side; a new SYN gets no answer at all (frames dropped).
    assert.equal(w.net.stack.stats().tcp.open, 0);
    const framesOut = w.net.stack.stats().framesOut;
    const late = w.net.tcp(A_IP, 443);
    late.catch(() => {});
    await settle(200);
    assert.equal(w.net.stack.stats().framesOut, framesOut, "nothing answers after quarantine");
    assert.equal(w.med.policy.decide({ proto: "tcp", dstIp: A_IP, dstPort: 443, guestPort: 1 }).verdict, "deny");
  } finally {
    for (const c of held) c.destroy();
    listener.close();
    await w.close();
  }
});

test("egress-hostile: a DNS decision whose audit record cannot be written severs the mediator (fail closed) and the guest gets SERVFAIL, not an unaudited answer", async () => {
  const w = await world(
    {},
    {
      audit: {
        write: () => {
          throw new Error("EIO: disk gone");
        },
      },
    },
  );
  w.resolver.set("allowed.test", A_IP);
  try {
    const r = await w.net.dnsQuery("allowed.test");
    assert.equal(r.rcode, "SERVFAIL");
    assert.equal(r.answers?.length ?? 0, 0);
    assert.match(String(w.med.failure), /EIO/, "the mediator recorded its failure");
    assert.equal((await w.net.dnsQuery("allowed.test")).rcode, "SERVFAIL", "and stays closed");
    await assert.rejects(w.net.tcp(A_IP, 443), /ECONNREFUSED/, "no flow passes unaudited");
  } finally {
    await w.close();
  }
});

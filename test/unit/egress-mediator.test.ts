/**
 * The egress mediator end to end at the stack level: the real NetworkStack, the test playing the
 * guest (a guest-side TCP endpoint wrapped as a Duplex, with Node's real TLS and HTTP clients over
 * it), and local HTTPS/HTTP servers on 127.0.0.1 with their own CA passed as the upstream CA. Guest
 * addresses are public-looking; LoopbackRoutes maps each to a loopback port, so nothing but
 * loopback is ever dialled. Each hostile case asserts what the guest sees and the audit record.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, X509Certificate } from "node:crypto";
import { createServer as createHttpsServer } from "node:https";
import { createServer as createHttpServer } from "node:http";
import type { Server } from "node:http";
import { connect as tlsConnect } from "node:tls";
import type { TLSSocket } from "node:tls";
import type { AddressInfo, Socket } from "node:net";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { caFromPem, generateCa, LeafIssuer } from "../../src/egress/ca.ts";
import type { LeafIssuerOptions, WorkspaceCa } from "../../src/egress/ca.ts";
import { EgressMediator } from "../../src/egress/mediator.ts";
import { resolveEgressFlags } from "../../src/egress/flags.ts";
import type { EgressFlags } from "../../src/egress/flags.ts";
import { EgressAuditLog } from "../../src/egress/audit.ts";
import type { EgressRecord } from "../../src/egress/audit.ts";
import { upstreamTrust } from "../../src/egress/trust.ts";
import { stackDnsHosts } from "../../src/egress/dns-mediator.ts";
import { GuestNet, LoopbackRoutes, TableResolver } from "../helpers/egress-guest.ts";
import type { GuestSocket } from "../helpers/egress-guest.ts";
import { makePlaceholder, type SwapSecret } from "../../src/secrets/placeholder.ts";
import { SecretValue } from "../../src/secrets/resolve.ts";

const GW = "10.200.0.1";
const A_IP = "93.184.216.34"; // allowed.test
const B_IP = "93.184.216.35"; // b.test
const EVIL_IP = "93.184.216.66"; // an attacker's address: its server has a cert for evil.test only

/** A "public" CA of the test's upstreams, and leaves for their names. */
const upstreamCaPem = generateCa({ workspace: "upstream-test-root" });
const upstreamCa: WorkspaceCa = caFromPem(upstreamCaPem.keyPem, upstreamCaPem.certPem);
const upstreamIssuer = new LeafIssuer(upstreamCa, { newNamesPerSecond: Infinity });
const workspaceCaPem = generateCa({ workspace: "ws" });
const workspaceCa = caFromPem(workspaceCaPem.keyPem, workspaceCaPem.certPem);

class Records {
  readonly all: EgressRecord[] = [];
  write(r: Omit<EgressRecord, "time" | "workspace">): void {
    this.all.push({ ...r, time: new Date().toISOString(), workspace: "ws" } as EgressRecord);
  }
  of(type: EgressRecord["type"]): EgressRecord[] {
    return this.all.filter((r) => r.type === type);
  }
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return (server.address() as AddressInfo).port;
}

function httpsServer(name: string, handler?: Parameters<typeof createHttpsServer>[1]): Server {
  const leaf = upstreamIssuer.issue(name)!;
  return createHttpsServer(
    { cert: leaf.chainPem, key: leaf.keyPem },
    handler ??
      ((req, res) => {
        let n = 0;
        const h = createHash("sha256");
        req.on("data", (d: Buffer) => {
          n += d.length;
          h.update(d);
        });
        req.on("end", () => res.end(`hello from ${name} host=${req.headers.host} path=${req.url} got=${n} sha=${h.digest("hex")}${req.headers.authorization ? ` auth=${req.headers.authorization}` : ""}${req.headers["x-api-key"] ? ` key=${req.headers["x-api-key"]}` : ""}`));
      }),
  );
}

interface World {
  net: GuestNet;
  med: EgressMediator;
  rec: Records;
  routes: LoopbackRoutes;
  resolver: TableResolver;
  servers: Server[];
  close(): Promise<void>;
}

async function world(flags: EgressFlags, o: { addHosts?: Array<{ name: string; ip: string }>; issuer?: LeafIssuerOptions; sniffTimeoutMs?: number; audit?: { write: Records["write"] }; swap?: SwapSecret[] } = {}): Promise<World> {
  const rec = new Records();
  const routes = new LoopbackRoutes();
  const resolver = new TableResolver();
  const servers: Server[] = [];
  const A = httpsServer("allowed.test");
  const B = httpsServer("b.test");
  const EVIL = httpsServer("evil.test");
  const PLAIN = createHttpServer((req, res) => res.end(`plain host=${req.headers.host}`));
  servers.push(A, B, EVIL, PLAIN);
  routes.map(`${A_IP}:443`, await listen(A)).map(`${B_IP}:443`, await listen(B)).map(`${EVIL_IP}:443`, await listen(EVIL));
  const plainPort = await listen(PLAIN);
  for (const a of [A_IP, B_IP, EVIL_IP]) routes.map(`${a}:80`, plainPort);
  const addHosts = o.addHosts ?? [];
  const med = new EgressMediator({
    egress: resolveEgressFlags(flags),
    gateway: GW,
    addHosts,
    audit: o.audit ?? rec,
    upstream: routes,
    issuer: new LeafIssuer(workspaceCa, o.issuer ?? {}),
    upstreamCa: upstreamTrust([upstreamCa.certPem]),
    ...(o.sniffTimeoutMs ? { sniffTimeoutMs: o.sniffTimeoutMs } : {}),
    ...(o.swap ? { swap: o.swap } : {}),
  });
  const hosts: Record<string, string> = { ...stackDnsHosts(GW) };
  for (const h of addHosts) hosts[h.name] = h.ip;
  const net = new GuestNet({ stack: { dns: { hosts } }, policy: med.policy, connector: med.connector, dnsObserver: med.dnsObserver, resolver });
  return {
    net,
    med,
    rec,
    routes,
    resolver,
    servers,
    async close() {
      med.sever();
      net.close();
      for (const s of servers) {
        s.closeAllConnections?.();
        await new Promise((r) => s.close(r));
      }
    },
  };
}

/** TLS from the guest over its TCP socket. */
function guestTls(sock: GuestSocket, servername: string, ca: string[], alpn = ["http/1.1"]): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const t = tlsConnect({ socket: sock, servername, ca, ALPNProtocols: alpn });
    t.once("secureConnect", () => resolve(t));
    t.once("error", reject);
  });
}

/** Sends a raw request and reads until the server closes (requests carry Connection: close). */
function exchange(s: TLSSocket | GuestSocket, raw: string | Buffer, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const t = setTimeout(() => reject(new Error(`no end of response within ${timeoutMs} ms; got ${Buffer.concat(chunks).toString().slice(0, 200)}`)), timeoutMs);
    s.on("data", (d: Buffer) => chunks.push(d));
    s.once("end", () => {
      clearTimeout(t);
      resolve(Buffer.concat(chunks).toString());
    });
    s.once("error", (e) => {
      clearTimeout(t);
      if (chunks.length > 0) resolve(Buffer.concat(chunks).toString());
      else reject(e);
    });
    s.write(raw);
  });
}

const get = (host: string, path = "/") => `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;

async function settle(ms = 50): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

test("egress-mediator: guarded MITM works with the workspace CA trusted; allow and close audited with bytes", async () => {
  const w = await world({}, { addHosts: [{ name: "allowed.test", ip: A_IP }] });
  try {
    const s = await w.net.tcp(A_IP, 443);
    const t = await guestTls(s, "allowed.test", [workspaceCa.certPem]);
    const peer = new X509Certificate(t.getPeerCertificate(true).raw);
    assert.ok(peer.checkIssued(workspaceCa.cert), "the guest sees a leaf of the workspace CA");
    assert.equal(t.alpnProtocol, "http/1.1");
    const body = await exchange(t, get("allowed.test", "/x"));
    assert.match(body, /^HTTP\/1\.1 200/);
    assert.match(body, /hello from allowed\.test host=allowed\.test path=\/x/);
    t.end();
    await settle(200);
    const allow = w.rec.of("egress_allow")[0]!;
    assert.equal(allow.name, "allowed.test");
    assert.equal(allow.sni, "allowed.test");
    assert.equal(allow.mitm, true);
    assert.equal(allow.dst, `${A_IP}:443`);
    const close = w.rec.of("egress_close")[0]!;
    assert.equal(close.flowId, allow.flowId);
    assert.ok(close.bytesUp! > 200 && close.bytesDown! > 200, `bytes counted both ways: ${close.bytesUp}/${close.bytesDown}`);
    assert.ok(typeof close.durationMs === "number");
    assert.deepEqual(w.routes.dials, [`${A_IP}:443`], "dialled the address the guest asked for");
  } finally {
    await w.close();
  }
});

test("egress-mediator: passthrough shows the upstream's own certificate; bytes forwarded untouched", async () => {
  const w = await world({ egressPassthrough: ["allowed.test"] }, { addHosts: [{ name: "allowed.test", ip: A_IP }] });
  try {
    const s = await w.net.tcp(A_IP, 443);
    const t = await guestTls(s, "allowed.test", [upstreamCa.certPem]);
    const peer = new X509Certificate(t.getPeerCertificate(true).raw);
    assert.ok(peer.checkIssued(upstreamCa.cert), "the upstream's certificate, not ours");
    assert.ok(!peer.checkIssued(workspaceCa.cert));
    const body = await exchange(t, get("allowed.test"));
    assert.match(body, /hello from allowed\.test/);
    t.end();
    await settle(200);
    const allow = w.rec.of("egress_allow")[0]!;
    assert.ok(allow, JSON.stringify(w.rec.all));
    assert.equal(allow.passthrough, true);
    assert.equal(allow.mitm, false);
    const close = w.rec.of("egress_close")[0]!;
    assert.equal(close.passthrough, true);
    assert.ok(close.bytesUp! > 100 && close.bytesDown! > 500);
  } finally {
    await w.close();
  }
});

test("egress-mediator: a client that does not trust the workspace CA fails; audit says egress_mitm_handshake_error naming --egress-passthrough (case 30)", async () => {
  const w = await world({}, { addHosts: [{ name: "allowed.test", ip: A_IP }] });
  try {
    const s = await w.net.tcp(A_IP, 443);
    await assert.rejects(guestTls(s, "allowed.test", [upstreamCa.certPem]), /unable to get local issuer certificate|self.signed|unable to verify/i);
    await settle(200);
    const e = w.rec.of("egress_mitm_handshake_error")[0];
    assert.ok(e, `records: ${JSON.stringify(w.rec.all.map((r) => r.type))}`);
    assert.equal(e.sni, "allowed.test");
    assert.match(e.reason, /--egress-passthrough allowed\.test/);
    assert.equal(w.med.stats.handshakeErrors, 1);
  } finally {
    await w.close();
  }
  // ... and the same client works once the host is passed through.
  const w2 = await world({ egressPassthrough: ["allowed.test"] }, { addHosts: [{ name: "allowed.test", ip: A_IP }] });
  try {
    const t = await guestTls(await w2.net.tcp(A_IP, 443), "allowed.test", [upstreamCa.certPem]);
    assert.match(await exchange(t, get("allowed.test")), /hello from allowed\.test/);
  } finally {
    await w2.close();
  }
});

test("egress-mediator: strict allows only listed names; DNS REFUSED off-list; raw IP RST at SYN (cases 11, 8)", async () => {
  const w = await world({ egress: "strict", egressAllow: ["allowed.test"] });
  w.resolver.set("allowed.test", A_IP).set("b.test", B_IP);
  try {
    const a = await w.net.dnsQuery("allowed.test");
    assert.deepEqual(a.answers!.map((r) => r.data), [A_IP]);
    const b = await w.net.dnsQuery("b.test");
    assert.equal(b.rcode, "REFUSED");
    assert.ok(!w.resolver.asked.some((q) => q.startsWith("b.test")), "an off-list name is never forwarded");
    const t = await guestTls(await w.net.tcp(A_IP, 443), "allowed.test", [workspaceCa.certPem]);
    assert.match(await exchange(t, get("allowed.test")), /hello from allowed\.test/);
    await assert.rejects(w.net.tcp(B_IP, 443), /ECONNREFUSED/, "unpinned address: RST at SYN");
    // case 8: a query aimed at another resolver is answered by the mediator and flagged
    const f = await w.net.dnsQuery("b.test", "A", "1.1.1.1");
    assert.equal(f.rcode, "REFUSED");
    await settle();
    const dnsDeny = w.rec.of("egress_dns_deny");
    assert.ok(dnsDeny.some((r) => r.name === "b.test" && r.signal === "denied"));
    assert.ok(dnsDeny.some((r) => r.name === "b.test" && r.signal === "foreign-resolver" && r.dst === "1.1.1.1:53"));
    assert.ok(w.rec.of("egress_dns_allow").some((r) => r.name === "allowed.test" && r.answers?.[0] === A_IP));
    const deny = w.rec.of("egress_deny").find((r) => r.dst === `${B_IP}:443`)!;
    assert.equal(deny.signal, "direct-ip-no-sni");
    assert.equal(deny.name, null);
  } finally {
    await w.close();
  }
});

test("egress-mediator: guarded answers a foreign resolver too, flagged foreign-resolver; AAAA and HTTPS get NODATA (case 8, 5)", async () => {
  const w = await world({});
  w.resolver.set("allowed.test", A_IP);
  try {
    const r = await w.net.dnsQuery("allowed.test", "A", "8.8.8.8");
    assert.deepEqual(r.answers!.map((x) => x.data), [A_IP]);
    const aaaa = await w.net.dnsQuery("allowed.test", "AAAA");
    assert.equal(aaaa.rcode, "NOERROR");
    assert.equal(aaaa.answers!.length, 0);
    await settle();
    assert.ok(w.rec.of("egress_dns_allow").some((x) => x.signal === "foreign-resolver" && x.dst === "8.8.8.8:53"));
    assert.ok(w.med.pins.isPinned("allowed.test", A_IP), "the answer was pinned to the name asked");
  } finally {
    await w.close();
  }
});

test("egress-mediator: SNI of an allowed name to an address it was not resolved to: strict RST after the ClientHello, name-destination-mismatch (case 1)", async () => {
  const w = await world({ egress: "strict", egressAllow: ["allowed.test", "b.test"] });
  w.resolver.set("allowed.test", A_IP).set("b.test", B_IP);
  try {
    await w.net.dnsQuery("b.test");
    const s = await w.net.tcp(B_IP, 443); // b.test is pinned to B_IP, so the SYN passes; the hello decides
    await assert.rejects(guestTls(s, "allowed.test", [workspaceCa.certPem]), /ECONNRESET|socket disconnected|closed/i);
    await settle();
    const d = w.rec.of("egress_deny").at(-1)!;
    assert.equal(d.signal, "name-destination-mismatch");
    assert.equal(d.name, null);
    assert.equal(d.hostAsserted, "allowed.test");
    assert.ok(!w.routes.dials.includes(`${B_IP}:443`), "no upstream dial");
  } finally {
    await w.close();
  }
});

test("egress-mediator: guarded, SNI allowed.test to an attacker's address: upstream verification fails, egress_mitm_upstream_error, never named allowed.test (case 2)", async () => {
  const w = await world({});
  try {
    const s = await w.net.tcp(EVIL_IP, 443);
    await assert.rejects(guestTls(s, "allowed.test", [workspaceCa.certPem]), /ECONNRESET|socket disconnected|closed/i);
    await settle();
    const e = w.rec.of("egress_mitm_upstream_error")[0]!;
    assert.ok(e, JSON.stringify(w.rec.all));
    assert.equal(e.name, null);
    assert.equal(e.sni, "allowed.test");
    assert.match(e.error!, /altnames|does not match|Hostname|certificate/i, e.error);
    assert.ok(!w.rec.all.some((r) => r.name === "allowed.test"));
  } finally {
    await w.close();
  }
});

test("egress-mediator: plain HTTP Host allowed.test to an unresolved address: strict denies, guarded allows it unnamed with the signal (case 3)", async () => {
  const g = await world({});
  try {
    const s = await g.net.tcp(EVIL_IP, 80);
    assert.match(await exchange(s, get("allowed.test")), /plain host=allowed\.test/);
    await settle();
    const a = g.rec.of("egress_allow")[0]!;
    assert.equal(a.name, null);
    assert.equal(a.hostAsserted, "allowed.test");
    assert.equal(a.signal, "name-destination-mismatch");
  } finally {
    await g.close();
  }
  const st = await world({ egress: "strict", egressAllow: ["allowed.test", "b.test"] });
  st.resolver.set("b.test", B_IP);
  try {
    await st.net.dnsQuery("b.test");
    const s = await st.net.tcp(B_IP, 80);
    await assert.rejects(exchange(s, get("allowed.test")), /ECONNRESET/);
    await settle();
    assert.equal(st.rec.of("egress_deny").at(-1)!.signal, "name-destination-mismatch");
  } finally {
    await st.close();
  }
});

test("egress-mediator: domain fronting inside MITM gets 421; DoH gets 403; h2c, CONNECT, huge heads, CL+TE refused (cases 4, 6, 27)", async () => {
  const w = await world({}, { addHosts: [{ name: "allowed.test", ip: A_IP }] });
  const open = async () => guestTls(await w.net.tcp(A_IP, 443), "allowed.test", [workspaceCa.certPem]);
  try {
    assert.match(await exchange(await open(), get("evil.test")), /^HTTP\/1\.1 421 Misdirected Request/);
    assert.match(await exchange(await open(), "POST /dns-query HTTP/1.1\r\nHost: allowed.test\r\nContent-Type: application/dns-message\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), /^HTTP\/1\.1 403/);
    assert.match(await exchange(await open(), "GET / HTTP/1.1\r\nHost: allowed.test\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n"), /^HTTP\/1\.1 400/);
    assert.match(await exchange(await open(), "CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test\r\n\r\n"), /^HTTP\/1\.1 (405|400)/);
    assert.match(await exchange(await open(), `GET / HTTP/1.1\r\nHost: allowed.test\r\nX-Big: ${"a".repeat(20000)}\r\n\r\n`), /^HTTP\/1\.1 431/);
    assert.match(await exchange(await open(), "POST / HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), /^HTTP\/1\.1 400/);
    // keep-alive: the second request on one connection is inspected too
    const t = await open();
    const both = await exchange(t, "GET /1 HTTP/1.1\r\nHost: allowed.test\r\n\r\nGET /2 HTTP/1.1\r\nHost: evil.test\r\n\r\n");
    assert.match(both, /path=\/1/);
    assert.match(both, /421 Misdirected/);
    await settle();
    const denies = w.rec.of("egress_deny");
    const front = denies.filter((r) => r.signal === "domain-fronting");
    assert.equal(front.length, 2);
    assert.equal(front[0]!.hostAsserted, "evil.test");
    assert.equal(front[0]!.name, "allowed.test");
    assert.ok(denies.some((r) => r.signal === "dns-over-https"));
    assert.ok(denies.filter((r) => r.signal === "malformed").length >= 2);
  } finally {
    await w.close();
  }
});

test("egress-mediator: a known DoH host is refused at the ClientHello (case 6)", async () => {
  const w = await world({}, { addHosts: [{ name: "dns.google", ip: A_IP }] });
  try {
    await assert.rejects(guestTls(await w.net.tcp(A_IP, 443), "dns.google", [workspaceCa.certPem]), /ECONNRESET|disconnected/);
    await settle();
    assert.equal(w.rec.of("egress_deny").at(-1)!.signal, "dns-over-https");
  } finally {
    await w.close();
  }
});

test("egress-mediator: DNS rebinding to an inside address is filtered, and a direct connect to it is RST (case 10)", async () => {
  const w = await world({});
  w.resolver.set("rebind.test", "10.0.0.5");
  try {
    const r = await w.net.dnsQuery("rebind.test");
    assert.equal(r.answers!.length, 0, "the inside address never reaches the guest");
    await assert.rejects(w.net.tcp("10.0.0.5", 443), /ECONNREFUSED/);
    await settle();
    assert.ok(w.rec.of("egress_dns_allow").some((x) => x.name === "rebind.test" && x.signal === "dns-rebinding"));
    assert.equal(w.rec.of("egress_deny").at(-1)!.signal, "inside-destination");
  } finally {
    await w.close();
  }
});

test("egress-mediator: metadata and inside addresses denied in every spelling; raw IP under guarded is direct-ip-no-sni (cases 11, 12)", async () => {
  const w = await world({});
  try {
    for (const a of ["169.254.169.254", "10.1.2.3", "100.64.0.1", "172.16.0.1", "192.168.1.1"]) await assert.rejects(w.net.tcp(a, 80), /ECONNREFUSED/, a);
    for (const spelled of ["::ffff:169.254.169.254", "0251.0376.0251.0376", "2852039166", "0xa9.0xfe.0xa9.0xfe", "127.1"]) {
      const v = w.med.policy.decide({ proto: "tcp", dstIp: spelled, dstPort: 80, guestPort: 1 });
      assert.equal(v.verdict, "deny", spelled);
    }
    const s = await w.net.tcp(EVIL_IP, 80);
    assert.match(await exchange(s, Buffer.from("\x00\x01binary\r\n")), /400|Bad Request|^$/);
    await settle();
    assert.ok(w.rec.of("egress_deny").filter((r) => r.signal === "inside-destination").length >= 5);
    assert.ok(w.rec.of("egress_allow").some((r) => r.signal === "direct-ip-no-sni" && r.name === null));
  } finally {
    await w.close();
  }
});

test("egress-mediator: QUIC (UDP 443) gets ICMP unreachable with quic-udp443; other UDP per policy (case 13)", async () => {
  const w = await world({});
  try {
    const icmp = await w.net.udpSend(A_IP, 443, Buffer.from("junk quic initial"));
    assert.deepEqual(icmp.map((m) => m.type), [3], "destination unreachable");
    const ok = await w.net.udpSend(A_IP, 12345, Buffer.from("hello"));
    assert.equal(ok.length, 0);
    const inside = await w.net.udpSend("10.0.0.9", 12345, Buffer.from("hello"));
    assert.equal(inside.length, 1);
    await settle(1100); // denies are coalesced for up to a window
    assert.equal(w.rec.of("egress_udp_deny")[0]!.signal, "quic-udp443");
    assert.ok(w.rec.of("egress_udp_allow").some((r) => r.dst === `${A_IP}:12345`));
  } finally {
    await w.close();
  }
});

test("egress-mediator: --egress-max-conns refuses the next flow with egress_cap_exceeded (case 21)", async () => {
  const w = await world({ egressMaxConns: 3 });
  try {
    const open: GuestSocket[] = [];
    for (let i = 0; i < 3; i++) open.push(await w.net.tcp(EVIL_IP, 80));
    await assert.rejects(w.net.tcp(EVIL_IP, 80), /ECONNREFUSED/);
    assert.equal(w.rec.of("egress_cap_exceeded")[0]!.limit, 3);
    assert.equal(resolveEgressFlags({}).maxConns, 256, "the default");
    for (const s of open) s.destroy();
  } finally {
    await w.close();
  }
});

test("egress-mediator: --egress-max-total-bytes cuts the flow and refuses later ones", async () => {
  const w = await world({ egressMaxTotalBytes: "2000" }, { addHosts: [{ name: "allowed.test", ip: A_IP }] });
  try {
    const s = await w.net.tcp(EVIL_IP, 80);
    await assert.rejects(exchange(s, `POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n${"x".repeat(5000)}`), /ECONNRESET/);
    await assert.rejects(w.net.tcp(EVIL_IP, 80), /ECONNREFUSED/);
    assert.ok(w.rec.of("egress_cap_exceeded").length >= 1);
  } finally {
    await w.close();
  }
});

test("egress-mediator: a slowloris ClientHello is closed at the sniff timeout (case 23)", async () => {
  const w = await world({}, { sniffTimeoutMs: 300 });
  try {
    const s = await w.net.tcp(A_IP, 443);
    const t0 = Date.now();
    const closed = new Promise<void>((r) => s.once("close", () => r()));
    s.on("error", () => {});
    s.write(Buffer.from([0x16, 0x03]));
    await closed;
    assert.ok(Date.now() - t0 >= 250, "held until the timeout");
    assert.ok(s.reset, "reset");
    await settle(1100);
    assert.match(w.rec.of("egress_deny").at(-1)!.reason, /no complete ClientHello/);
  } finally {
    await w.close();
  }
});

test("egress-mediator: many new SNIs are rate-capped at issuance (case 26)", async () => {
  const w = await world({}, { issuer: { newNamesBurst: 2, newNamesPerSecond: 0.001 } });
  try {
    let refused = 0;
    for (let i = 0; i < 4; i++) {
      const s = await w.net.tcp(A_IP, 443);
      await guestTls(s, `n${i}.test`, [workspaceCa.certPem]).then(
        (t) => t.destroy(),
        () => refused++,
      );
    }
    assert.ok(refused >= 2);
    assert.ok(w.rec.of("egress_cap_exceeded").length >= 2);
    assert.ok(w.med.issuer!.size <= 2);
  } finally {
    await w.close();
  }
});

test("egress-mediator: a 20 MiB POST and 5 parallel MITM'd connections complete byte-exact (case 28)", async () => {
  const w = await world({}, { addHosts: [{ name: "allowed.test", ip: A_IP }] });
  try {
    const body = Buffer.alloc(20 << 20);
    for (let i = 0; i < body.length; i += 4) body.writeUInt32LE((i * 2654435761) >>> 0, i);
    const sha = createHash("sha256").update(body).digest("hex");
    const one = async () => {
      const t = await guestTls(await w.net.tcp(A_IP, 443), "allowed.test", [workspaceCa.certPem]);
      return exchange(t, Buffer.concat([Buffer.from(`POST /up HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`), body]), 120_000);
    };
    const big = await one();
    assert.match(big, new RegExp(`got=${body.length} sha=${sha}`));
    const small = await Promise.all(
      Array.from({ length: 5 }, async (_, i) => exchange(await guestTls(await w.net.tcp(A_IP, 443), "allowed.test", [workspaceCa.certPem]), get("allowed.test", `/p${i}`))),
    );
    small.forEach((r, i) => assert.match(r, new RegExp(`path=/p${i}`)));
  } finally {
    await w.close();
  }
});

// 10^6 denies take ~30 s here (the policy and record building, not the file); 2*10^5 keep the unit suite fast.
const FLOOD = 200_000;
test("egress-mediator: an audit flood of 2*10^5 denies stays under 1 MiB (case 32)", async () => {
  const dir = mkdtempSync(join(tmpdir(), "egress-flood-"));
  const audit = new EgressAuditLog(dir, { workspace: "ws" });
  const w = await world({}, { audit });
  try {
    for (let i = 0; i < FLOOD; i++) w.med.policy.decide({ proto: "tcp", dstIp: `10.0.${(i >> 8) & 3}.${i & 255}`, dstPort: 80, guestPort: 1000 + (i % 60000) });
    audit.flushPending();
    const size = statSync(audit.path).size;
    assert.ok(size < 1 << 20, `audit is ${size} bytes`);
  } finally {
    await w.close();
    audit.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("egress-mediator: the mediation channel relays gateway:7000 to the host listener; down = readiness error and RST; optional = ready", async () => {
  const { createServer } = await import("node:net");
  const conns = new Set<Socket>();
  const echo = createServer((s) => {
    conns.add(s);
    s.on("data", (d) => s.end(`echo:${d}`));
  });
  await new Promise<void>((r) => echo.listen(0, "127.0.0.1", () => r()));
  const port = (echo.address() as AddressInfo).port;
  const w = await world({ mediation: [`7000=127.0.0.1:${port}`] });
  try {
    const ready = await w.med.mediationReadiness();
    assert.deepEqual(ready.map((r) => [r.name, r.ready]), [["mediationReady", true]]);
    const s = await w.net.tcp(GW, 7000);
    assert.equal(await exchange(s, "ping"), "echo:ping");
    await settle(100);
    assert.equal(w.rec.of("egress_allow").at(-1)!.name, "mediation.microagent.internal");
    s.destroy();
    for (const c of conns) c.destroy();
    await new Promise((r) => echo.close(r));
    const down = await w.med.mediationReadiness();
    assert.equal(down[0]!.ready, false);
    assert.equal(down[0]!.code, "MEDIATION_UNREACHABLE");
    assert.match(down[0]!.detail, /^error: mediation channel required but unreachable/);
    await assert.rejects(w.net.tcp(GW, 7000), /ECONNREFUSED/, "nothing flows while the listener is down");
    assert.match(w.rec.all.at(-1)!.reason, /mediation channel required but unreachable/);
    await assert.rejects(w.net.tcp(GW, 7001), /ECONNREFUSED/, "other gateway ports stay closed");
  } finally {
    await w.close();
  }
  const o = await world({ mediation: [`7000=127.0.0.1:${port}`], mediationOptional: true });
  try {
    const r = await o.med.mediationReadiness();
    assert.equal(r[0]!.ready, true);
    assert.match(r[0]!.detail, /optional and unreachable/);
  } finally {
    await o.close();
  }
});

test("egress-mediator: an audit that cannot be written severs the mediator (fail closed) and reports it", async () => {
  let failed: Error | null = null;
  const audit = {
    write: () => {
      throw new Error("EIO: disk gone");
    },
  };
  const w = await world({}, { audit });
  try {
    const s = await w.net.tcp(EVIL_IP, 80).catch(() => null); // the allow record (after the sniff) fails to write
    if (s) await exchange(s, get("x")).catch(() => "");
    assert.ok(w.med.failure, "the mediator recorded its failure");
    await assert.rejects(w.net.tcp(EVIL_IP, 80), /ECONNREFUSED/, "no flow passes unaudited");
    failed = w.med.failure;
  } finally {
    await w.close();
  }
  assert.match(String(failed), /EIO/);
});

test("egress-mediator: swap secrets: the placeholder becomes the value only on intercepted requests to the bound, proved name; audited without the value", async () => {
  const value = "sk-test-only-value-0123456789";
  const bound: SwapSecret = { name: "API_KEY", token: makePlaceholder(), hosts: ["allowed.test"], value: new SecretValue(Buffer.from(value)) };
  const smuggle: SwapSecret = { name: "SMUGGLE", token: makePlaceholder(), hosts: ["allowed.test"], value: new SecretValue(Buffer.from("x\r\nX-Evil: 1")) };
  const w = await world({}, { addHosts: [{ name: "allowed.test", ip: A_IP }, { name: "b.test", ip: B_IP }], swap: [bound, smuggle] });
  try {
    const t = await guestTls(await w.net.tcp(A_IP, 443), "allowed.test", [workspaceCa.certPem]);
    const basic = Buffer.from(`user:${bound.token}`).toString("base64");
    const body = await exchange(t, `GET /swap HTTP/1.1\r\nHost: allowed.test\r\nX-Api-Key: ${bound.token}\r\nAuthorization: Basic ${basic}\r\nConnection: close\r\n\r\n`);
    assert.match(body, new RegExp(`key=${value}`), "the upstream got the value in X-Api-Key");
    assert.match(body, new RegExp(`auth=Basic ${Buffer.from(`user:${value}`).toString("base64")}`), "and inside Basic credentials");
    assert.doesNotMatch(body, new RegExp(bound.token));
    // Another host (not bound): the placeholder goes as is, audited as denied.
    const t2 = await guestTls(await w.net.tcp(B_IP, 443), "b.test", [workspaceCa.certPem]);
    const other = await exchange(t2, `GET / HTTP/1.1\r\nHost: b.test\r\nX-Api-Key: ${bound.token}\r\nConnection: close\r\n\r\n`);
    assert.match(other, new RegExp(`key=${bound.token}`), "the unbound host sees only the placeholder");
    assert.doesNotMatch(other, new RegExp(value));
    // A forged SNI to B's address naming the bound host is never "allowed.test": no swap, whatever the Host says.
    const forged = await w.net.tcp(B_IP, 443);
    await guestTls(forged, "allowed.test", [workspaceCa.certPem]).then(
      async (t3) => {
        const r = await exchange(t3, `GET / HTTP/1.1\r\nHost: allowed.test\r\nX-Api-Key: ${bound.token}\r\nConnection: close\r\n\r\n`).catch((e: Error) => e.message);
        assert.doesNotMatch(r, new RegExp(value));
      },
      () => {},
    );
    // A value with a line break is never written into a head (it would add header lines).
    const t4 = await guestTls(await w.net.tcp(A_IP, 443), "allowed.test", [workspaceCa.certPem]);
    const sm = await exchange(t4, `GET / HTTP/1.1\r\nHost: allowed.test\r\nX-Api-Key: ${smuggle.token}\r\nConnection: close\r\n\r\n`);
    assert.match(sm, new RegExp(`key=${smuggle.token}`), "the placeholder went as is");
    await settle(200);
    const unsafe = w.rec.of("secret_swap_denied").filter((r) => r.secret === "SMUGGLE");
    assert.equal(unsafe.length, 1);
    assert.match(unsafe[0]!.reason, /line break/);
    const swaps = w.rec.of("secret_swap");
    assert.deepEqual(swaps.map((r) => [r.secret, r.host, r.header]), [["API_KEY", "allowed.test", "x-api-key"], ["API_KEY", "allowed.test", "authorization"]]);
    const denied = w.rec.of("secret_swap_denied").filter((r) => r.secret === "API_KEY");
    assert.deepEqual(denied.map((r) => [r.secret, r.host]), [["API_KEY", "b.test"]]);
    const all = JSON.stringify(w.rec.all);
    assert.ok(!all.includes(value) && !all.includes(bound.token), "neither the value nor the token is in any audit record");
  } finally {
    await w.close();
  }
});

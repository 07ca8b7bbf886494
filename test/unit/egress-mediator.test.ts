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
import type { AddressInfo } from "node:net";
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
        req.on("end", () => res.end(`hello from ${name} host=${req.headers.host} path=${req.url} got=${n} sha=${h.digest("hex")}`));
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

async function world(flags: EgressFlags, o: { addHosts?: Array<{ name: string; ip: string }>; issuer?: LeafIssuerOptions; sniffTimeoutMs?: number; audit?: { write: Records["write"] } } = {}): Promise<World> {
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

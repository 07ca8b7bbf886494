/**
 * Egress mediation cost, in-process (the real NetworkStack and mediator, the guest played by the
 * test helper with Node's TLS client over its TCP endpoint; servers on 127.0.0.1):
 *  - time to first response byte of a *new* HTTPS connection: direct TLS from the host to the
 *    server, through the stack with passthrough, and through the stack with MITM (the goal: MITM at
 *    most 2.5x direct);
 *  - bulk download (MiB/s) of one HTTPS response through the stack without a mediator (as
 *    `--egress off`), through passthrough and through MITM.
 * Prints a table and a JSON line; records, it does not assert.
 *
 *   node bench/egress-mitm.ts [--conns 30] [--mib 64]
 */
import { createServer } from "node:https";
import type { Server } from "node:https";
import { connect as tlsConnect } from "node:tls";
import type { TLSSocket } from "node:tls";
import type { AddressInfo } from "node:net";
import { parseArgs } from "node:util";
import type { Duplex } from "node:stream";
import { caFromPem, generateCa, LeafIssuer } from "../src/egress/ca.ts";
import { EgressMediator } from "../src/egress/mediator.ts";
import { resolveEgressFlags } from "../src/egress/flags.ts";
import { upstreamTrust } from "../src/egress/trust.ts";
import { GuestNet, LoopbackRoutes } from "../test/helpers/egress-guest.ts";

const { values } = parseArgs({ options: { conns: { type: "string", default: "30" }, mib: { type: "string", default: "64" } } });
const N = Number(values.conns);
const MIB = Number(values.mib);
const IP = "93.184.216.34";
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const up = generateCa({ workspace: "bench-upstream" });
const upCa = caFromPem(up.keyPem, up.certPem);
const leaf = new LeafIssuer(upCa).issue("bench.test")!;
const ws = generateCa({ workspace: "bench-ws" });
const wsCa = caFromPem(ws.keyPem, ws.certPem);
const big = Buffer.alloc(MIB << 20, 0x61);
const server: Server = createServer({ cert: leaf.chainPem, key: leaf.keyPem }, (req, res) => {
  if (req.url === "/big") {
    res.setHeader("content-length", big.length);
    res.end(big);
  } else res.end("ok");
});
await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
const port = (server.address() as AddressInfo).port;

function world(passthrough: boolean) {
  const routes = new LoopbackRoutes().map(`${IP}:443`, port);
  const med = new EgressMediator({
    egress: resolveEgressFlags(passthrough ? { egressPassthrough: ["bench.test"] } : {}),
    gateway: "10.200.0.1",
    addHosts: [{ name: "bench.test", ip: IP }],
    audit: { write() {} },
    upstream: routes,
    issuer: new LeafIssuer(wsCa),
    upstreamCa: upstreamTrust([upCa.certPem]),
  });
  const net = new GuestNet({ stack: { dns: { hosts: { "bench.test": IP } } }, policy: med.policy, connector: med.connector, dnsObserver: med.dnsObserver });
  return { net, med };
}

function request(t: TLSSocket, path: string): Promise<{ ttfbMs: number; bytes: number; totalMs: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let first = 0;
    let bytes = 0;
    t.on("data", (d: Buffer) => {
      if (!first) first = performance.now();
      bytes += d.length;
    });
    t.once("end", () => resolve({ ttfbMs: first - t0, bytes, totalMs: performance.now() - t0 }));
    t.once("error", reject);
    t.write(`GET ${path} HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n`);
  });
}

function tls(socket: Duplex | undefined, ca: string): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const t = socket
      ? tlsConnect({ socket: socket as never, servername: "bench.test", ca: [ca], ALPNProtocols: ["http/1.1"] })
      : tlsConnect({ host: "127.0.0.1", port, servername: "bench.test", ca: [ca], ALPNProtocols: ["http/1.1"] });
    t.once("secureConnect", () => resolve(t));
    t.once("error", reject);
  });
}

/** A new connection: TCP (through the stack or not), TLS, GET, first byte. */
async function newConn(kind: "direct" | "passthrough" | "mitm", w?: ReturnType<typeof world>): Promise<number> {
  const t0 = performance.now();
  const sock = kind === "direct" ? undefined : await w!.net.tcp(IP, 443);
  const t = await tls(sock as never, kind === "mitm" ? wsCa.certPem : upCa.certPem);
  const r = await request(t, "/");
  if (r.bytes === 0) throw new Error(`${kind}: empty response`);
  return r.ttfbMs + (performance.now() - t0 - r.totalMs);
}

const pass = world(true);
const mitm = world(false);
const ttfb: Record<string, number[]> = { direct: [], passthrough: [], mitm: [] };
for (let i = 0; i < N + 3; i++) {
  for (const k of ["direct", "passthrough", "mitm"] as const) {
    const ms = await newConn(k, k === "mitm" ? mitm : pass);
    if (i >= 3) ttfb[k]!.push(ms); // warm-up: JIT, the first leaf
  }
}
async function bulk(w: ReturnType<typeof world>, ca: string): Promise<number> {
  const t = await tls((await w.net.tcp(IP, 443)) as never, ca);
  const r = await request(t, "/big");
  if (r.bytes < big.length) throw new Error(`short download: ${r.bytes}`);
  return r.bytes / (1 << 20) / (r.totalMs / 1000);
}
// The same stack with no mediator (what `--egress off` runs): the splice's own share of the cost.
const plainRoutes = new LoopbackRoutes().map(`${IP}:443`, port);
const plain = { net: new GuestNet({ stack: { dns: { hosts: { "bench.test": IP } } }, policy: { decide: () => ({ verdict: "allow" as const }) }, connector: plainRoutes }), med: null };
const bulkPlain = await bulk(plain as unknown as ReturnType<typeof world>, upCa.certPem);
const bulkPass = await bulk(pass, upCa.certPem);
const bulkMitm = await bulk(mitm, wsCa.certPem);
const p50 = { direct: median(ttfb.direct!), passthrough: median(ttfb.passthrough!), mitm: median(ttfb.mitm!) };
console.log(`new HTTPS connection, time to first byte (p50 of ${N}):`);
console.log(`  direct TLS (host -> server)   ${p50.direct.toFixed(2)} ms`);
console.log(`  through the stack, passthrough ${p50.passthrough.toFixed(2)} ms`);
console.log(`  through the stack, MITM        ${p50.mitm.toFixed(2)} ms   ratio MITM/direct ${(p50.mitm / p50.direct).toFixed(2)}x (goal <= 2.5x), MITM/passthrough ${(p50.mitm / p50.passthrough).toFixed(2)}x`);
console.log(`bulk download of ${MIB} MiB over one connection: no mediator ${bulkPlain.toFixed(0)} MiB/s, passthrough ${bulkPass.toFixed(0)} MiB/s, MITM ${bulkMitm.toFixed(0)} MiB/s (ratio ${(bulkMitm / bulkPass).toFixed(2)})`);
console.log(JSON.stringify({ bench: "egress-mitm", conns: N, ttfbP50Ms: p50, ratioMitmDirect: p50.mitm / p50.direct, ratioMitmPassthrough: p50.mitm / p50.passthrough, bulkMiBps: { noMediator: bulkPlain, passthrough: bulkPass, mitm: bulkMitm } }));
plain.net.close();
pass.net.close();
mitm.net.close();
server.closeAllConnections();
server.close();

/**
 * An in-process egress "world" for hostile-guest unit tests: the real NetworkStack (GuestNet plays
 * the guest), the real EgressMediator in front of it, and local HTTPS/HTTP upstreams on 127.0.0.1
 * with their own CA passed as the upstream CA. Guest addresses are public-looking; LoopbackRoutes
 * maps each onto a loopback port, so nothing but loopback is ever dialled. Records are collected raw
 * (no coalescing) so a test sees every decision.
 */
import { createHash } from "node:crypto";
import { createServer as createHttpsServer } from "node:https";
import { createServer as createHttpServer } from "node:http";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { connect as tlsConnect } from "node:tls";
import type { TLSSocket } from "node:tls";
import type { AddressInfo } from "node:net";
import { caFromPem, generateCa, LeafIssuer } from "../../src/egress/ca.ts";
import type { LeafIssuerOptions, WorkspaceCa } from "../../src/egress/ca.ts";
import { EgressMediator } from "../../src/egress/mediator.ts";
import { resolveEgressFlags } from "../../src/egress/flags.ts";
import type { EgressFlags } from "../../src/egress/flags.ts";
import type { EgressRecord } from "../../src/egress/audit.ts";
import { upstreamTrust } from "../../src/egress/trust.ts";
import { stackDnsHosts } from "../../src/egress/dns-mediator.ts";
import type { NetworkStackOptions } from "../../src/net/config.ts";
import { GuestNet, LoopbackRoutes, TableResolver } from "./egress-guest.ts";
import type { GuestSocket } from "./egress-guest.ts";

export const GW = "10.200.0.1";
export const A_IP = "93.184.216.34"; // allowed.test
export const B_IP = "93.184.216.35"; // b.test
export const EVIL_IP = "93.184.216.66"; // an attacker's address: its server has a cert for evil.test only

export const upstreamCa: WorkspaceCa = (() => {
  const p = generateCa({ workspace: "upstream-test-root" });
  return caFromPem(p.keyPem, p.certPem);
})();
const upstreamIssuer = new LeafIssuer(upstreamCa, { newNamesPerSecond: Infinity });
export const workspaceCa: WorkspaceCa = (() => {
  const p = generateCa({ workspace: "ws" });
  return caFromPem(p.keyPem, p.certPem);
})();

export class Records {
  readonly all: EgressRecord[] = [];
  write(r: Omit<EgressRecord, "time" | "workspace">): void {
    this.all.push({ ...r, time: new Date().toISOString(), workspace: "ws" } as EgressRecord);
  }
  of(type: EgressRecord["type"]): EgressRecord[] {
    return this.all.filter((r) => r.type === type);
  }
}

export async function listen(server: Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return (server.address() as AddressInfo).port;
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

export interface World {
  net: GuestNet;
  med: EgressMediator;
  rec: Records;
  routes: LoopbackRoutes;
  resolver: TableResolver;
  servers: Server[];
  /** `host url` of every request an upstream saw, per server (a, b, evil, plain). */
  seen: Record<"a" | "b" | "evil" | "plain", string[]>;
  close(): Promise<void>;
}

export interface WorldOptions {
  addHosts?: Array<{ name: string; ip: string }>;
  issuer?: LeafIssuerOptions;
  stack?: NetworkStackOptions;
  /** Replaces the collecting sink (a failing audit, say). */
  audit?: { write(r: Omit<EgressRecord, "time" | "workspace">): void };
  /** Replaces server A's handler (after its request is noted in `seen.a`). */
  handlerA?: Handler;
}

export async function world(flags: EgressFlags, o: WorldOptions = {}): Promise<World> {
  const rec = new Records();
  const routes = new LoopbackRoutes();
  const resolver = new TableResolver();
  const seen: World["seen"] = { a: [], b: [], evil: [], plain: [] };
  const echo =
    (which: keyof World["seen"], name: string): Handler =>
    (req, res) => {
      seen[which].push(`${req.headers.host} ${req.url}`);
      let n = 0;
      const h = createHash("sha256");
      req.on("data", (d: Buffer) => {
        n += d.length;
        h.update(d);
      });
      req.on("end", () => res.end(`hello from ${name} host=${req.headers.host} path=${req.url} got=${n} sha=${h.digest("hex")}`));
    };
  const https = (name: string, handler: Handler) => {
    const leaf = upstreamIssuer.issue(name)!;
    return createHttpsServer({ cert: leaf.chainPem, key: leaf.keyPem }, handler);
  };
  const A = https(
    "allowed.test",
    o.handlerA
      ? (req, res) => {
          seen.a.push(`${req.headers.host} ${req.url}`);
          o.handlerA!(req, res);
        }
      : echo("a", "allowed.test"),
  );
  const B = https("b.test", echo("b", "b.test"));
  const EVIL = https("evil.test", echo("evil", "evil.test"));
  const PLAIN = createHttpServer(echo("plain", "plain"));
  const servers = [A, B, EVIL, PLAIN];
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
  });
  const hosts: Record<string, string> = { ...stackDnsHosts(GW) };
  for (const h of addHosts) hosts[h.name] = h.ip;
  const net = new GuestNet({ stack: { ...o.stack, dns: { ...o.stack?.dns, hosts } }, policy: med.policy, connector: med.connector, dnsObserver: med.dnsObserver, resolver });
  return {
    net,
    med,
    rec,
    routes,
    resolver,
    servers,
    seen,
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
export function guestTls(sock: GuestSocket, servername: string, ca: string[] = [workspaceCa.certPem], alpn = ["http/1.1"]): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const t = tlsConnect({ socket: sock, servername, ca, ALPNProtocols: alpn });
    t.once("secureConnect", () => resolve(t));
    t.once("error", reject);
  });
}

/** Sends a raw request and reads until the server closes (requests carry Connection: close). */
export function exchange(s: TLSSocket | GuestSocket, raw: string | Buffer, timeoutMs = 10_000): Promise<string> {
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

export const get = (host: string, path = "/") => `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;

export async function settle(ms = 50): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/**
 * A guest on the real NetworkStack, in real time, for the egress mediator's tests: `GuestSocket` is a
 * Node Duplex over the guest-side TCP endpoint of net-guest.ts (so a real `tls.connect({socket})` or
 * HTTP client runs over it, with TCP windows as backpressure), `dnsQuery` sends UDP DNS, `udpSend`
 * a datagram, and ICMP errors are collected. Upstreams are local servers: `LoopbackRoutes` maps the
 * public-looking address a flow is dialled to onto a 127.0.0.1 port (nothing else is ever dialled).
 */
import { Duplex } from "node:stream";
import dnsPacket from "dns-packet";
import type { Packet } from "dns-packet";
import { NetworkStack } from "../../src/net/stack.ts";
import type { NetworkStackOptions } from "../../src/net/config.ts";
import type { ByteStream, ByteStreamHandlers, DestinationPolicy, DnsObserver, HostConnector, HostDatagramFactory, Resolver, TcpTarget } from "../../src/net/types.ts";
import { netConnector } from "../../src/egress/streams.ts";
import { FakeDatagrams, GuestTcp, TCP_ACK, ip, parseOut, udpFrame } from "./net-guest.ts";
import type { Harness } from "./net-guest.ts";

/** Dials 127.0.0.1 only: `ip:port` -> a loopback port; anything unmapped is refused. */
export class LoopbackRoutes implements HostConnector {
  readonly routes = new Map<string, number>();
  readonly dials: string[] = [];
  readonly #net = netConnector({ connectTimeoutMs: 5000 });
  map(ipPort: string, loopbackPort: number): this {
    this.routes.set(ipPort, loopbackPort);
    return this;
  }
  connect(target: TcpTarget, h: ByteStreamHandlers): ByteStream {
    const key = `${target.ip}:${target.port}`;
    this.dials.push(key);
    const port = target.ip === "127.0.0.1" ? target.port : this.routes.get(key);
    if (port === undefined) {
      setImmediate(() => h.onClose(Object.assign(new Error(`connect ECONNREFUSED ${key} (not routed in the test)`), { code: "ECONNREFUSED" })));
      return { write: () => false, end() {}, destroy() {}, pause() {}, resume() {} };
    }
    return this.#net.connect({ ...target, ip: "127.0.0.1", port }, h);
  }
}

/** Answers A queries from a table (other types: NOERROR, no answers). */
export class TableResolver implements Resolver {
  readonly table = new Map<string, string[]>();
  readonly asked: string[] = [];
  set(name: string, ...ips: string[]): this {
    this.table.set(name, ips);
    return this;
  }
  async query(raw: Buffer): Promise<Buffer> {
    const q = dnsPacket.decode(raw);
    const question = q.questions![0]!;
    this.asked.push(`${question.name}/${question.type}`);
    const ips = question.type === "A" ? (this.table.get(question.name.toLowerCase()) ?? []) : [];
    return dnsPacket.encode({
      id: q.id,
      type: "response",
      flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE,
      questions: [question],
      answers: ips.map((a) => ({ name: question.name, type: "A", class: "IN", ttl: 60, data: a })),
    });
  }
}

export interface GuestNetOptions {
  stack?: NetworkStackOptions;
  policy: DestinationPolicy;
  connector: HostConnector;
  dnsObserver?: DnsObserver;
  resolver?: Resolver;
  datagrams?: HostDatagramFactory;
}

/** A decoded answer, with the fields the tests read. */
export type DnsReply = Omit<Packet, "answers"> & { rcode?: string; answers?: Array<{ type: string; data?: unknown }> };

let nextPort = 41000;

export class GuestNet {
  readonly stack: NetworkStack;
  readonly datagrams: HostDatagramFactory;
  readonly icmp: Array<{ type: number; code: number }> = [];
  readonly #queue: Buffer[] = [];
  readonly #sockets = new Map<number, GuestSocket>();
  readonly #udpWaiters = new Map<number, (data: Buffer) => void>();
  #scheduled = false;
  readonly h: Harness;

  constructor(o: GuestNetOptions) {
    this.datagrams = o.datagrams ?? new FakeDatagrams();
    this.stack = new NetworkStack(o.stack ?? {}, {
      output: (f) => {
        this.#queue.push(f);
        this.#schedule();
        return true;
      },
      connector: o.connector,
      datagrams: this.datagrams,
      policy: o.policy,
      resolver: o.resolver ?? new TableResolver(),
      ...(o.dnsObserver ? { dnsObserver: o.dnsObserver } : {}),
    });
    this.h = { stack: this.stack } as Harness;
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.pump();
    });
  }

  pump(): void {
    let rounds = 0;
    while (this.#queue.length > 0 && rounds++ < 100_000) {
      const f = this.#queue.shift()!;
      const p = parseOut(f);
      if (p.tcp) {
        const s = this.#sockets.get(p.tcp.dstPort);
        if (s) {
          s.g.onSegment(p.tcp);
          s.afterSegment();
        }
      } else if (p.udp) {
        const w = this.#udpWaiters.get(p.udp.dstPort);
        if (w) {
          this.#udpWaiters.delete(p.udp.dstPort);
          w(Buffer.from(p.udp.data));
        }
      } else if (p.icmp) this.icmp.push({ type: p.icmp.type, code: p.icmp.code });
    }
    for (const s of this.#sockets.values()) s.flush();
    if (this.#queue.length > 0) this.#schedule();
  }

  /** A TCP connection from the guest to `remote:port` (resolves on SYN-ACK, rejects on RST). */
  async tcp(remote: string, port: number): Promise<GuestSocket> {
    const s = new GuestSocket(this, nextPort++, remote, port);
    this.#sockets.set(s.localPort, s);
    s.once("close", () => this.#sockets.delete(s.localPort));
    await s.open();
    return s;
  }

  /** One DNS query over UDP to `target` (default: the gateway). */
  async dnsQuery(name: string, type: string = "A", target = "10.200.0.1", timeoutMs = 3000): Promise<DnsReply> {
    const port = nextPort++;
    const id = port & 0xffff;
    const raw = dnsPacket.encode({ id, type: "query", flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: type as never, class: "IN" }] });
    const answer = new Promise<Buffer>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no DNS answer for ${name} within ${timeoutMs} ms`)), timeoutMs);
      this.#udpWaiters.set(port, (d) => {
        clearTimeout(t);
        resolve(d);
      });
    });
    this.stack.receiveFrame(udpFrame(port, ip(target), 53, raw));
    this.#schedule();
    return dnsPacket.decode(await answer) as DnsReply;
  }

  /** A datagram from the guest; returns the ICMP errors seen within `waitMs`. */
  async udpSend(remote: string, port: number, data: Buffer, waitMs = 50): Promise<Array<{ type: number; code: number }>> {
    const before = this.icmp.length;
    this.stack.receiveFrame(udpFrame(nextPort++, ip(remote), port, data));
    this.#schedule();
    await new Promise((r) => setTimeout(r, waitMs));
    return this.icmp.slice(before);
  }

  close(): void {
    for (const s of this.#sockets.values()) s.destroy();
    this.stack.close();
  }
}

/** The guest application's socket: a Duplex over the guest-side TCP endpoint. */
export class GuestSocket extends Duplex {
  readonly g: GuestTcp;
  readonly localPort: number;
  readonly net: GuestNet;
  #pending: Array<{ chunk: Buffer; cb: (e?: Error | null) => void }> = [];
  #finWanted: (() => void) | null = null;
  #finSent = false;
  #ended = false;
  #opened: { resolve: () => void; reject: (e: Error) => void } | null = null;

  constructor(net: GuestNet, localPort: number, remote: string, remotePort: number) {
    super({ allowHalfOpen: true });
    this.net = net;
    this.localPort = localPort;
    this.g = new GuestTcp(net.h, { localPort, remote: ip(remote), remotePort, mss: 65480, rcvWindow: 1 << 20 });
    this.g.keep = [];
  }

  open(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#opened = { resolve, reject };
      this.g.connect();
      this.net.pump();
    });
  }

  /** Moves what the endpoint received into the readable side; reports FIN and RST. */
  afterSegment(): void {
    const g = this.g;
    if (this.#opened) {
      if (g.state === "ESTABLISHED") {
        const o = this.#opened;
        this.#opened = null;
        o.resolve();
      } else if (g.state === "RESET") {
        const o = this.#opened;
        this.#opened = null;
        o.reject(Object.assign(new Error("ECONNREFUSED: the stack answered the SYN with an RST"), { code: "ECONNREFUSED" }));
        this.destroy();
        return;
      }
    }
    const kept = g.keep!.splice(0, g.keep!.length);
    for (const b of kept) if (!this.push(b)) g.appPaused = true;
    if (g.finReceived && !this.#ended) {
      this.#ended = true;
      this.push(null);
    }
    if (g.rstReceived && !this.destroyed) this.destroy(Object.assign(new Error("ECONNRESET: the stack reset the connection"), { code: "ECONNRESET" }));
  }

  get reset(): boolean {
    return this.g.rstReceived;
  }

  flush(): void {
    const g = this.g;
    if (g.state !== "ESTABLISHED" && g.state !== "FIN_SENT") return;
    while (this.#pending.length > 0) {
      const head = this.#pending[0]!;
      const sent = g.pushData((n) => {
        const b = head.chunk.subarray(0, n);
        head.chunk = head.chunk.subarray(b.length);
        return b;
      }, head.chunk.length);
      if (head.chunk.length === 0) {
        this.#pending.shift();
        head.cb();
      }
      if (sent === 0) break;
    }
    if (this.#pending.length === 0 && this.#finWanted && !this.#finSent) {
      this.#finSent = true;
      g.fin();
      const cb = this.#finWanted;
      this.#finWanted = null;
      cb();
    }
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    if (this.g.rstReceived) return cb(new Error("ECONNRESET"));
    this.#pending.push({ chunk: Buffer.from(chunk), cb });
    this.flush();
    this.net.pump();
  }

  override _final(cb: () => void): void {
    this.#finWanted = cb;
    this.flush();
    this.net.pump();
  }

  override _read(): void {
    if (this.g.appPaused) {
      this.g.read();
      this.net.pump();
    }
  }

  override _destroy(err: Error | null, cb: (e: Error | null) => void): void {
    if (!this.g.rstReceived && this.g.state === "ESTABLISHED") {
      this.g.rst();
    }
    cb(err);
  }
}

export { TCP_ACK };

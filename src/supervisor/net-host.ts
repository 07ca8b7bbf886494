/**
 * The host side of the userspace network stack (src/net is pure): the guest's TCP flows become
 * `net.Socket`s, its UDP flows connected `dgram` sockets, its DNS queries raw datagrams to the
 * upstream resolver. Every destination is decided by the destination policy first; the policy also
 * says what to dial (the gateway, host.microagent.internal, becomes the host's 127.0.0.1 on allowed
 * ports), so the connector dials `decide()`'s answer, never the guest's address as such.
 */
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { readFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import type { DestinationPolicy as EgressDestinationPolicy } from "../egress/policy.ts";
import type {
  ByteStream,
  ByteStreamHandlers,
  DestinationPolicy,
  HostConnector,
  HostDatagram,
  HostDatagramFactory,
  HostDatagramHandlers,
  Resolver,
  TcpTarget,
  UdpTarget,
} from "../net/index.ts";

/** Counts of what the host side refused or failed (shown next to the stack's own counters). */
export interface HostCounters {
  denied: Record<string, number>;
  connectErrors: number;
  dnsForwarded: number;
  dnsFailed: number;
}

/** The egress policy (which also names the dial target) as the stack's synchronous allow/deny seam. */
export function stackPolicy(policy: EgressDestinationPolicy, counters: HostCounters): DestinationPolicy {
  return {
    decide(req) {
      const d = policy.decide(req);
      if (d.verdict === "allow") return { verdict: "allow" };
      counters.denied[d.signal] = (counters.denied[d.signal] ?? 0) + 1;
      return { verdict: "deny", reason: d.reason };
    },
  };
}

function dialFor(policy: EgressDestinationPolicy, proto: "tcp" | "udp", ip: string, port: number): { ip: string; port: number } | Error {
  const d = policy.decide({ proto, dstIp: ip, dstPort: port });
  return d.verdict === "allow" ? d.dial : new Error(`denied: ${d.reason}`);
}

/** Guest TCP flows as host sockets (half-close kept: `allowHalfOpen`). */
export class SocketConnector implements HostConnector {
  readonly #policy: EgressDestinationPolicy;
  readonly #counters: HostCounters;
  readonly #open = new Set<Socket>();
  constructor(policy: EgressDestinationPolicy, counters: HostCounters) {
    this.#policy = policy;
    this.#counters = counters;
  }

  connect(target: TcpTarget, h: ByteStreamHandlers): ByteStream {
    const dial = dialFor(this.#policy, "tcp", target.ip, target.port);
    if (dial instanceof Error) {
      // The stack decided first, so this is a race with nothing; still never dial a denied address.
      setImmediate(() => h.onClose(dial));
      return { write: () => true, end: () => {}, destroy: () => {}, pause: () => {}, resume: () => {} };
    }
    const sock = connect({ host: dial.ip, port: dial.port, allowHalfOpen: true, noDelay: true });
    this.#open.add(sock);
    let error: Error | undefined;
    sock.on("connect", () => h.onConnect());
    sock.on("data", (d: Buffer) => h.onData(d));
    sock.on("drain", () => h.onDrain());
    sock.on("end", () => h.onEnd());
    sock.on("error", (e) => {
      if (!sock.connecting) error = e;
      else {
        error = e;
        this.#counters.connectErrors++;
      }
    });
    sock.on("close", () => {
      this.#open.delete(sock);
      h.onClose(error);
    });
    return {
      write: (b) => sock.write(b),
      end: () => sock.end(),
      destroy: (e) => sock.destroy(e),
      pause: () => sock.pause(),
      resume: () => sock.resume(),
    };
  }

  /** Quarantine/halt: every host socket at once. */
  destroyAll(): void {
    for (const s of this.#open) s.destroy();
    this.#open.clear();
  }
}

/** Guest UDP flows as connected dgram sockets, one per 5-tuple. */
export class DgramFactory implements HostDatagramFactory {
  readonly #policy: EgressDestinationPolicy;
  readonly #open = new Set<UdpSocket>();
  constructor(policy: EgressDestinationPolicy) {
    this.#policy = policy;
  }

  open(target: UdpTarget, h: HostDatagramHandlers): HostDatagram {
    const dial = dialFor(this.#policy, "udp", target.ip, target.port);
    if (dial instanceof Error) {
      setImmediate(() => h.onError(dial));
      return { send: () => {}, close: () => {} };
    }
    const sock = createSocket("udp4");
    this.#open.add(sock);
    let connected = false;
    const pending: Buffer[] = [];
    let closed = false;
    sock.on("message", (data, rinfo) => h.onMessage(data, { ip: target.ip === dial.ip ? rinfo.address : target.ip, port: target.port === dial.port ? rinfo.port : target.port }));
    sock.on("error", (e) => h.onError(e));
    sock.connect(dial.port, dial.ip, () => {
      connected = true;
      for (const p of pending.splice(0)) sock.send(p);
    });
    return {
      send: (data) => {
        if (closed) return;
        if (connected) sock.send(data);
        else if (pending.length < 64) pending.push(Buffer.from(data));
      },
      close: () => {
        if (closed) return;
        closed = true;
        this.#open.delete(sock);
        try {
          sock.close();
        } catch {
          // already closed
        }
      },
    };
  }

  closeAll(): void {
    for (const s of this.#open) {
      try {
        s.close();
      } catch {
        // already closed
      }
    }
    this.#open.clear();
  }
}

/** The host's IPv4 resolvers from /etc/resolv.conf (what the host itself uses). */
export function hostResolvers(path = "/etc/resolv.conf"): { ip: string; port: number }[] {
  let text = "";
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return [];
  }
  const out: { ip: string; port: number }[] = [];
  for (const line of text.split("\n")) {
    const m = /^\s*nameserver\s+(\d+\.\d+\.\d+\.\d+)\s*$/.exec(line);
    if (m) out.push({ ip: m[1]!, port: 53 });
  }
  return out.slice(0, 3);
}

/**
 * Raw forwarding over UDP: one socket per query (a fresh random source port each, so answers cannot
 * be confused), the first upstream then the next on timeout. The stack bounds queries in flight and
 * answers SERVFAIL when this rejects.
 */
export class ForwardingResolver implements Resolver {
  readonly #upstreams: { ip: string; port: number }[];
  readonly #timeoutMs: number;
  readonly #counters: HostCounters;
  readonly #open = new Set<UdpSocket>();
  #closed = false;
  constructor(upstreams: { ip: string; port: number }[], timeoutMs: number, counters: HostCounters) {
    this.#upstreams = upstreams;
    this.#timeoutMs = timeoutMs;
    this.#counters = counters;
  }

  get upstreams(): readonly { ip: string; port: number }[] {
    return this.#upstreams;
  }

  async query(raw: Buffer): Promise<Buffer> {
    if (this.#upstreams.length === 0) throw new Error("no upstream resolver (the host's /etc/resolv.conf names none; pass --dns IP)");
    const per = Math.max(250, Math.floor(this.#timeoutMs / this.#upstreams.length));
    let last: Error | undefined;
    for (const u of this.#upstreams) {
      if (this.#closed) break;
      try {
        const answer = await this.#once(raw, u, per);
        this.#counters.dnsForwarded++;
        return answer;
      } catch (e) {
        last = e as Error;
      }
    }
    this.#counters.dnsFailed++;
    throw last ?? new Error("resolver closed");
  }

  #once(raw: Buffer, u: { ip: string; port: number }, ms: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const sock = createSocket("udp4");
      this.#open.add(sock);
      const id = raw.readUInt16BE(0);
      const done = (e?: Error, b?: Buffer) => {
        clearTimeout(timer);
        this.#open.delete(sock);
        try {
          sock.close();
        } catch {
          // already closed
        }
        if (e) reject(e);
        else resolve(b!);
      };
      const timer = setTimeout(() => done(new Error(`DNS upstream ${u.ip}:${u.port} did not answer within ${ms} ms`)), ms);
      sock.on("error", (e) => done(e));
      sock.on("message", (msg) => {
        if (msg.length >= 12 && msg.readUInt16BE(0) === id) done(undefined, msg);
      });
      sock.connect(u.port, u.ip, () => sock.send(raw));
    });
  }

  close(): void {
    this.#closed = true;
    for (const s of this.#open) {
      try {
        s.close();
      } catch {
        // already closed
      }
    }
    this.#open.clear();
  }
}

/**
 * The egress mediator: what the network stack plugs in when a workspace's egress is `guarded` or
 * `strict`. It provides the stack's three seams, all sharing one pin set, one audit sink and one
 * set of caps:
 *
 *  - `policy` (DestinationPolicy, synchronous at SYN / first datagram): `decideConnect`, so a flow
 *    already known to be denied (inside address, DoT, unpinned under strict, QUIC) is an RST or an
 *    ICMP unreachable in the same turn, audited; UDP is decided here entirely.
 *  - `connector` (HostConnector, per TCP flow): answers the guest's handshake, sniffs the first
 *    bytes (ClientHello or HTTP head; at most `sniffMaxBytes` and `sniffTimeoutMs`; server-first
 *    ports are decided from the pins at once), asks `decideEgress`, then denies (RST), splices
 *    (passthrough and opaque flows: dial the verdict's address, which is the address the guest
 *    asked for, never one a name was looked up to: "dial what you resolved") or intercepts (mitm.ts).
 *  - `dnsObserver` (dns-mediator.ts): pins, filters and audits every answer.
 *
 * Plus the mediation channel (seed 001): a guest connection to a `--mediation` port on the gateway
 * is relayed to its host listener; required targets are probed (`mediationReadiness`).
 */
import { connect as netConnect } from "node:net";
import type { SecureContext } from "node:tls";
import type { ByteStream, ByteStreamHandlers, DestinationPolicy, DestinationRequest, DestinationVerdict, DnsObserver, HostConnector, TcpTarget } from "../net/types.ts";
import { ClientHelloSniffer } from "./clienthello.ts";
import { HttpHeadSniffer } from "./http-head.ts";
import { formatDst, verdictRecord } from "./audit.ts";
import type { EgressRecord } from "./audit.ts";
import { createDnsMediator } from "./dns-mediator.ts";
import { EgressErrors } from "./errors.ts";
import type { MediationTarget, ResolvedEgressOptions } from "./flags.ts";
import type { LeafIssuer } from "./ca.ts";
import type { AuditSink } from "./mediator-types.ts";
import { startMitm } from "./mitm.ts";
import { DnsPins } from "./pins.ts";
import { SERVER_FIRST_PORTS, decideConnect, decideEgress, resolvePolicyConfig } from "./policy.ts";
import type { ConnectFacts, FlowFacts, PolicyConfig, Verdict } from "./policy.ts";
import { effectiveAddress, parseAddress } from "./address.ts";
import type { SwapSecret } from "../secrets/placeholder.ts";

export const MEDIATION_NAME = "mediation.microagent.internal";

/** What each of the stack's cap reasons counts, for the audit's reason text. */
const STACK_CAPS: Readonly<Record<string, string>> = {
  "tcp-flow-cap": "open TCP flows",
  "tcp-half-open-cap": "half-open TCP connections",
  "tcp-buffer-cap": "buffered bytes",
  "udp-flow-cap": "UDP flows",
};

export interface EgressMediatorOptions {
  egress: ResolvedEgressOptions;
  /** The gateway address the guest sees (the stack's `config.gatewayIp`). */
  gateway: string;
  /** `--add-host` mappings (the same ones the stack answers). */
  addHosts?: ReadonlyArray<{ name: string; ip: string }>;
  audit: AuditSink;
  /** Dials exactly the target it is given (default: `netConnector()`). Tests map it to loopback. */
  upstream: HostConnector;
  /** Signs the leaves the guest sees (required unless mode is off). */
  issuer: LeafIssuer | null;
  /** Upstream TLS trust: the host's roots plus every `--egress-upstream-ca` (see `upstreamTrust`). */
  upstreamCa: readonly string[] | (() => readonly string[]);
  pins?: DnsPins;
  sniffMaxBytes?: number;
  sniffTimeoutMs?: number;
  upstreamTimeoutMs?: number;
  mediationProbeTimeoutMs?: number;
  /** Swap secrets: placeholders replaced in intercepted HTTP/1 requests to their bound hosts. */
  swap?: readonly SwapSecret[];
  /** The mediator failed (the audit cannot be written): it severed itself; the owner should fail the workspace. */
  onFailure?: (e: Error) => void;
}

export interface MediatorStats {
  active: number;
  accepted: number;
  denied: number;
  mitm: number;
  passthrough: number;
  handshakeErrors: number;
  upstreamErrors: number;
  capExceeded: number;
  bytesUp: number;
  bytesDown: number;
}

function flowError(code: "EGRESS_FLOW_DENIED" | "EGRESS_CAP_EXCEEDED" | "MEDIATION_UNREACHABLE", message: string): Error {
  return EgressErrors[code]({ message });
}

export class EgressMediator {
  readonly config: PolicyConfig;
  readonly egress: ResolvedEgressOptions;
  readonly pins: DnsPins;
  readonly audit: AuditSink;
  readonly upstream: HostConnector;
  readonly issuer: LeafIssuer | null;
  readonly #upstreamCa: readonly string[] | (() => readonly string[]);
  #upstreamCaResolved: readonly string[] | null = null;
  readonly sniffMaxBytes: number;
  readonly sniffTimeoutMs: number;
  readonly upstreamTimeoutMs: number;
  readonly swap: readonly SwapSecret[];
  readonly policy: DestinationPolicy;
  readonly connector: HostConnector;
  readonly dnsObserver: DnsObserver;
  readonly stats: MediatorStats = { active: 0, accepted: 0, denied: 0, mitm: 0, passthrough: 0, handshakeErrors: 0, upstreamErrors: 0, capExceeded: 0, bytesUp: 0, bytesDown: 0 };
  /** One SecureContext per leaf (the issuer's LRU decides a leaf's life; the context follows it). */
  readonly contexts = new WeakMap<object, SecureContext>();
  readonly #mediation = new Map<number, MediationTarget & { reachable: boolean | null; detail: string }>();
  readonly #probeTimeoutMs: number;
  readonly #flows = new Set<MediatedFlow>();
  #seq = 0;
  #severed = false;
  #failed: Error | null = null;
  readonly #onFailure: ((e: Error) => void) | undefined;
  #volumeTripped = false;

  constructor(o: EgressMediatorOptions) {
    this.egress = o.egress;
    this.config = resolvePolicyConfig({ mode: o.egress.mode, allow: o.egress.allow, passthrough: o.egress.passthrough, addHosts: o.addHosts ?? [], gateway: o.gateway });
    this.pins = o.pins ?? new DnsPins();
    this.audit = o.audit;
    this.upstream = o.upstream;
    this.issuer = o.issuer;
    if (!this.issuer && o.egress.mode !== "off") throw new Error("internal: a mediated workspace needs a leaf issuer");
    this.#upstreamCa = o.upstreamCa;
    this.sniffMaxBytes = o.sniffMaxBytes ?? 16 * 1024;
    this.sniffTimeoutMs = o.sniffTimeoutMs ?? 5000;
    this.upstreamTimeoutMs = o.upstreamTimeoutMs ?? 15_000;
    this.swap = o.swap ?? [];
    this.#probeTimeoutMs = o.mediationProbeTimeoutMs ?? 1000;
    this.#onFailure = o.onFailure;
    for (const t of o.egress.mediation) this.#mediation.set(t.guestPort, { ...t, reachable: null, detail: "not probed yet" });
    this.policy = { decide: (req) => this.#decide(req), capRefused: (req, cap) => this.#stackCap(req, cap) };
    this.connector = { connect: (target, h) => this.#connect(target, h) };
    // DNS decisions go through `record` like flows, so an audit that cannot be written severs the
    // mediator here too; the throw makes the stack answer SERVFAIL instead of an unaudited answer.
    const dnsAudit: AuditSink = {
      write: (r) => {
        this.record(r);
        if (this.#failed) throw this.#failed;
      },
    };
    this.dnsObserver = createDnsMediator({ config: this.config, pins: this.pins, audit: dnsAudit });
  }

  /** Upstream TLS trust, computed on first use (loading the host's roots costs tens of ms: not at start). */
  get upstreamCa(): readonly string[] {
    this.#upstreamCaResolved ??= typeof this.#upstreamCa === "function" ? this.#upstreamCa() : this.#upstreamCa;
    return this.#upstreamCaResolved;
  }

  get gateway(): string {
    return this.config.gateway;
  }

  nextFlowId(): string {
    return `f${(++this.#seq).toString(36)}`;
  }

  /**
   * Records an event, never throwing into the datapath: a mediated workspace does not run unaudited,
   * so a write failure severs every flow (fail closed) and is reported through `onFailure`.
   */
  record(r: Omit<EgressRecord, "time" | "workspace">): void {
    if (this.#failed) return;
    try {
      this.audit.write(r);
    } catch (e) {
      this.#failed = e instanceof Error ? e : new Error(String(e));
      this.sever();
      this.#onFailure?.(this.#failed);
    }
  }

  /** The audit failure that severed the mediator, if any. */
  get failure(): Error | null {
    return this.#failed;
  }

  /** Counts bytes against `--egress-max-total-bytes`; false once the cap is passed. */
  account(up: number, down: number): boolean {
    this.stats.bytesUp += up;
    this.stats.bytesDown += down;
    const max = this.egress.maxTotalBytes;
    return max === null || this.stats.bytesUp + this.stats.bytesDown <= max;
  }

  /** The volume cap tripped on a flow: refuse it and every later one, audited once. */
  volumeExceeded(dst: string, flowId: string): void {
    if (!this.#volumeTripped) {
      this.#volumeTripped = true;
      this.capRecord("tcp", dst, `--egress-max-total-bytes ${this.egress.maxTotalBytes} reached; further flows are refused`, this.egress.maxTotalBytes ?? 0, flowId);
    }
  }

  capRecord(proto: "tcp" | "udp", dst: string, reason: string, limit: number, flowId?: string): void {
    this.stats.capExceeded++;
    this.record({ type: "egress_cap_exceeded", proto, dst, name: null, decision: "deny", reason, signal: "cap-exceeded", limit, ...(flowId ? { flowId } : {}) });
  }

  connectFacts(proto: "tcp" | "udp", ip: string, port: number): ConnectFacts {
    return { proto, dstIp: ip, dstPort: port, dnsPinnedNames: this.pins.namesFor(ip) };
  }

  #isGateway(ip: string): boolean {
    const a = parseAddress(ip);
    return a !== null && effectiveAddress(a).text === this.config.gateway;
  }

  #capReason(): { reason: string; limit: number } | null {
    if (this.#volumeTripped) return { reason: `--egress-max-total-bytes ${this.egress.maxTotalBytes} reached`, limit: this.egress.maxTotalBytes ?? 0 };
    if (this.stats.active >= this.egress.maxConns) return { reason: `--egress-max-conns ${this.egress.maxConns} flows are open`, limit: this.egress.maxConns };
    return null;
  }

  #decide(req: DestinationRequest): DestinationVerdict {
    if (this.#severed) return { verdict: "deny", reason: "severed" };
    if (req.proto === "tcp" && this.#isGateway(req.dstIp) && this.#mediation.has(req.dstPort)) return { verdict: "allow" };
    const facts = this.connectFacts(req.proto, req.dstIp, req.dstPort);
    const v = decideConnect(this.config, facts);
    if (v.verdict === "deny") {
      this.stats.denied++;
      this.record(verdictRecord(v, { ...facts, l7: "opaque" }));
      return { verdict: "deny", reason: v.reason };
    }
    if (req.proto === "udp") {
      // decideConnect decided UDP in full (no bytes to sniff); an allow is recorded per flow.
      this.record(verdictRecord(v as Verdict, { ...facts, l7: "opaque" }));
      return { verdict: "allow" };
    }
    const cap = this.#capReason();
    if (cap) {
      this.capRecord("tcp", formatDst(req.dstIp, req.dstPort), cap.reason, cap.limit);
      return { verdict: "deny", reason: cap.reason };
    }
    return { verdict: "allow" };
  }

  /** The stack's own caps refused a flow (research (e) cases 20, 21, 31): audited like ours. */
  #stackCap(req: DestinationRequest, cap: { reason: string; limit: number }): void {
    if (this.#severed) return;
    const what = STACK_CAPS[cap.reason] ?? cap.reason;
    this.capRecord(req.proto, formatDst(req.dstIp, req.dstPort), `the network stack's cap of ${cap.limit} ${what} was reached; the flow was refused`, cap.limit);
  }

  #connect(target: TcpTarget, h: ByteStreamHandlers): ByteStream {
    const flow = new MediatedFlow(this, target, h);
    this.#flows.add(flow);
    this.stats.active++;
    this.stats.accepted++;
    flow.onGone = () => {
      if (this.#flows.delete(flow)) this.stats.active--;
    };
    const m = this.#isGateway(target.ip) ? this.#mediation.get(target.port) : undefined;
    if (m) flow.relay(m);
    else if (this.#severed) flow.refuse(flowError("EGRESS_FLOW_DENIED", "the workspace's network was severed"));
    else flow.start();
    return flow;
  }

  /** A mediation flow's dial failed or succeeded: readiness follows what flows see. */
  mediationSeen(port: number, ok: boolean, detail: string): void {
    const m = this.#mediation.get(port);
    if (m) {
      m.reachable = ok;
      m.detail = detail;
    }
  }

  /**
   * The `mediationReady` readiness item: a bounded TCP connect to each target (listeners must
   * tolerate connect-then-close). Shaped like the supervisor's ServiceReadiness.
   */
  async mediationReadiness(): Promise<Array<{ name: string; ready: boolean; detail: string; code?: string }>> {
    if (this.#mediation.size === 0) return [];
    const results = await Promise.all([...this.#mediation.values()].map(async (t) => ({ t, err: await probe(t.host, t.port, this.#probeTimeoutMs) })));
    const bad: string[] = [];
    for (const { t, err } of results) {
      t.reachable = err === null;
      t.detail = err === null ? `${t.host}:${t.port} answers` : `${t.host}:${t.port}: ${err}`;
      if (err !== null) bad.push(`${t.guestPort}=${t.host}:${t.port} (${err})`);
    }
    if (bad.length === 0) return [{ name: "mediationReady", ready: true, detail: `mediation channel reachable: ${results.map(({ t }) => `${t.guestPort}=${t.host}:${t.port}`).join(", ")}` }];
    if (!this.egress.mediationRequired) return [{ name: "mediationReady", ready: true, detail: `mediation channel optional and unreachable: ${bad.join(", ")}` }];
    return [{ name: "mediationReady", ready: false, detail: `error: mediation channel required but unreachable: ${bad.join(", ")}`, code: "MEDIATION_UNREACHABLE" }];
  }

  /** Quarantine: cut every flow at once; later flows are refused. */
  sever(): void {
    this.#severed = true;
    const err = flowError("EGRESS_FLOW_DENIED", "the workspace's network was severed");
    for (const f of [...this.#flows]) f.abort(err);
  }

  describe(): Record<string, unknown> {
    return {
      mode: this.egress.mode,
      allow: this.egress.allow,
      passthrough: this.egress.passthrough,
      maxConns: this.egress.maxConns,
      maxTotalBytes: this.egress.maxTotalBytes,
      mediation: [...this.#mediation.values()].map((m) => ({ guestPort: m.guestPort, target: `${m.host}:${m.port}`, required: this.egress.mediationRequired, reachable: m.reachable, detail: m.detail })),
      pins: this.pins.size,
      leaves: this.issuer ? { cached: this.issuer.size, ...this.issuer.stats } : null,
      flows: { ...this.stats },
    };
  }
}

function probe(host: string, port: number, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    const s = netConnect({ host, port });
    const t = setTimeout(() => {
      s.destroy();
      resolve(`no answer within ${timeoutMs} ms`);
    }, timeoutMs);
    s.once("connect", () => {
      clearTimeout(t);
      s.end();
      s.destroy();
      resolve(null);
    });
    s.once("error", (e: NodeJS.ErrnoException) => {
      clearTimeout(t);
      resolve(e.code ?? e.message);
    });
  });
}

type Phase = "sniff" | "dialing" | "splice" | "mitm" | "closed";

/**
 * One guest TCP flow through the mediator: the ByteStream the stack holds. It starts by sniffing,
 * then hands its stream role to a splice or to the MITM session (`inner`).
 */
export class MediatedFlow implements ByteStream {
  readonly m: EgressMediator;
  readonly target: TcpTarget;
  readonly id: string;
  readonly dst: string;
  readonly startedAt = Date.now();
  phase: Phase = "sniff";
  verdict: Verdict | null = null;
  facts: FlowFacts | null = null;
  onGone: () => void = () => {};
  /** The stack's handlers, wrapped: counts bytes, closes once, writes `egress_close`. */
  readonly gh: ByteStreamHandlers;
  /** After the sniff: the stream the stack's calls go to (splice or MITM guest side). */
  inner: ByteStream | null = null;
  bytesUp = 0;
  bytesDown = 0;
  #h: ByteStreamHandlers;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #tls: ClientHelloSniffer | null = null;
  #http: HttpHeadSniffer | null = null;
  #sniffTimer: NodeJS.Timeout | null = null;
  #guestEnded = false;
  #paused = false;
  #wantDrain = false;
  #closed = false;
  #connected = false;
  #recordClose = false;

  constructor(m: EgressMediator, target: TcpTarget, h: ByteStreamHandlers) {
    this.m = m;
    this.target = target;
    this.#h = h;
    this.id = m.nextFlowId();
    this.dst = formatDst(target.ip, target.port);
    this.gh = {
      onConnect: () => {
        if (this.#closed || this.#connected) return;
        this.#connected = true;
        h.onConnect();
      },
      onData: (chunk) => {
        if (this.#closed) return;
        this.bytesDown += chunk.length;
        if (!this.m.account(0, chunk.length)) return this.#volume();
        h.onData(chunk);
      },
      onDrain: () => {
        if (!this.#closed) h.onDrain();
      },
      onEnd: () => {
        if (!this.#closed) h.onEnd();
      },
      onClose: (error) => this.#finish(error),
    };
  }

  // ------------------------------------------------------------------- ByteStream (from the stack)

  write(chunk: Buffer): boolean {
    if (this.#closed) return false;
    this.bytesUp += chunk.length;
    if (!this.m.account(chunk.length, 0)) {
      this.#volume();
      return false;
    }
    if (this.inner) return this.inner.write(chunk);
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    if (this.phase === "sniff") this.#sniff(chunk);
    // Bytes that arrive while the upstream is being set up are held, bounded: past the sniff limit
    // the guest's window closes until the hand-over drains them.
    if (this.#buffered > this.m.sniffMaxBytes * 4) {
      this.#wantDrain = true;
      return false;
    }
    return true;
  }

  end(): void {
    if (this.#closed) return;
    this.#guestEnded = true;
    if (this.inner) return this.inner.end();
    if (this.phase === "sniff") this.#sniffDone(true);
  }

  destroy(error?: Error): void {
    if (this.#closed) return;
    const inner = this.inner;
    this.#finish(error ?? new Error("reset by the guest"), true);
    inner?.destroy(error);
    this.#abortHooks.forEach((f) => f(error));
  }

  pause(): void {
    this.#paused = true;
    this.inner?.pause();
  }

  resume(): void {
    this.#paused = false;
    this.inner?.resume();
  }

  // ----------------------------------------------------------------------------- phases

  #abortHooks: Array<(e?: Error) => void> = [];

  /** Run `f` if the flow is destroyed from the stack's side (for sockets the inner stream does not own). */
  onAbort(f: (e?: Error) => void): void {
    this.#abortHooks.push(f);
  }

  get closed(): boolean {
    return this.#closed;
  }

  start(): void {
    const facts = this.m.connectFacts("tcp", this.target.ip, this.target.port);
    const v = decideConnect(this.m.config, facts);
    if (v.verdict === "deny") {
      // The policy hook denies these at SYN already; a connector used without it still refuses.
      this.m.stats.denied++;
      this.m.record(verdictRecord(v, { ...facts, l7: "opaque" }, { flowId: this.id }));
      return this.refuse(flowError("EGRESS_FLOW_DENIED", v.reason));
    }
    if (v.verdict === "allow" || SERVER_FIRST_PORTS.has(this.target.port)) {
      // Nothing to sniff (host services, server-first ports): the pins decide; dial before the
      // guest's handshake completes, so a refused dial is an RST to its SYN.
      const fv = v.verdict === "allow" ? v : decideEgress(this.m.config, { ...facts, l7: "opaque" });
      return this.#decided(fv, { ...facts, l7: "opaque" }, true);
    }
    setImmediate(() => this.gh.onConnect());
    this.#sniffTimer = setTimeout(() => this.#sniffDone(false), this.m.sniffTimeoutMs);
    this.#sniffTimer.unref();
  }

  /** A flow refused before its handshake completed: an RST to the guest's SYN. */
  refuse(error: Error): void {
    setImmediate(() => this.gh.onClose(error));
  }

  #sniff(chunk: Buffer): void {
    if (!this.#tls && !this.#http) {
      if (chunk[0] === 0x16) this.#tls = new ClientHelloSniffer({ maxHandshakeBytes: this.m.sniffMaxBytes });
      else this.#http = new HttpHeadSniffer({ maxHeadBytes: this.m.sniffMaxBytes });
    }
    const facts = this.m.connectFacts("tcp", this.target.ip, this.target.port);
    if (this.#tls) {
      const r = this.#tls.push(chunk);
      if (r.kind === "need-more") return;
      if (r.kind === "hello") return this.#decided(decideEgress(this.m.config, { ...facts, l7: "tls", sni: r.sni }), { ...facts, l7: "tls", sni: r.sni }, false, r.alpn);
      if (r.kind === "not-tls") return this.#decided(decideEgress(this.m.config, { ...facts, l7: "opaque" }), { ...facts, l7: "opaque" }, false);
      return this.#malformed(facts, r.reason);
    }
    const r = this.#http!.push(chunk);
    if (r.kind === "need-more") return;
    if (r.kind === "head") return this.#decided(decideEgress(this.m.config, { ...facts, l7: "http", host: r.host }), { ...facts, l7: "http", host: r.host }, false);
    if (r.kind === "not-http") return this.#decided(decideEgress(this.m.config, { ...facts, l7: "opaque" }), { ...facts, l7: "opaque" }, false);
    return this.#malformed(facts, r.reason);
  }

  #malformed(facts: ConnectFacts, why: string): void {
    const f: FlowFacts = { ...facts, l7: "malformed" };
    const v = decideEgress(this.m.config, f);
    this.#decided({ ...v, reason: `${v.reason}: ${why}` }, f, false);
  }

  /** The sniff ended without a verdict: a timeout (slowloris, research (e) case 23) or the guest's FIN. */
  #sniffDone(byEnd: boolean): void {
    if (this.phase !== "sniff" || this.#closed) return;
    const facts = this.m.connectFacts("tcp", this.target.ip, this.target.port);
    if (this.#buffered === 0) {
      // Nothing sent: a server-first protocol on a port we do not know; the pins decide.
      const f: FlowFacts = { ...facts, l7: "opaque" };
      return this.#decided(decideEgress(this.m.config, f), f, false);
    }
    this.#malformed(facts, byEnd ? "the guest closed before its first message was complete" : `no complete ClientHello or request head within ${this.m.sniffTimeoutMs} ms`);
  }

  #decided(v: Verdict, f: FlowFacts, beforeConnect: boolean, alpn: string[] = []): void {
    if (this.#sniffTimer) clearTimeout(this.#sniffTimer);
    this.#sniffTimer = null;
    if (this.#closed) return;
    this.verdict = v;
    this.facts = f;
    this.m.record(verdictRecord(v, f, { flowId: this.id }));
    if (v.verdict === "deny" || !v.dial) {
      this.m.stats.denied++;
      const err = flowError("EGRESS_FLOW_DENIED", v.reason);
      return beforeConnect ? this.refuse(err) : this.#abort(err);
    }
    this.#recordClose = true;
    this.phase = "dialing";
    if (v.mitm) {
      this.m.stats.mitm++;
      startMitm(this, v, f, alpn);
      return;
    }
    if (v.passthrough) this.m.stats.passthrough++;
    this.#splice(v.dial, beforeConnect);
  }

  /** Buffered guest bytes (the sniffed first flight and anything after it), taken once. */
  takeBuffered(): Buffer[] {
    const c = this.#chunks;
    this.#chunks = [];
    this.#buffered = 0;
    return c;
  }

  /** Hands the stack's calls to `inner`, replaying what was buffered and the guest's end/pause. */
  handOver(inner: ByteStream): void {
    this.inner = inner;
    this.phase = this.verdict?.mitm ? "mitm" : "splice";
    for (const c of this.takeBuffered()) inner.write(c);
    if (this.#paused) inner.pause();
    if (this.#guestEnded) inner.end();
    if (this.#wantDrain) {
      this.#wantDrain = false;
      this.gh.onDrain();
    }
  }

  /** An error after the guest's handshake: RST the guest. */
  #abort(error: Error): void {
    const inner = this.inner;
    this.gh.onClose(error);
    inner?.destroy(error);
    this.#abortHooks.forEach((f) => f(error));
  }

  abort(error: Error): void {
    this.#abort(error);
  }

  #volume(): void {
    this.m.volumeExceeded(this.dst, this.id);
    this.#abort(flowError("EGRESS_CAP_EXCEEDED", `--egress-max-total-bytes ${this.m.egress.maxTotalBytes} reached`));
  }

  /** Plain L4: dial the decided address, replay the buffered bytes, then pass both ways with backpressure. */
  #splice(dial: { ip: string; port: number }, beforeConnect: boolean, onDial?: (ok: boolean, detail: string) => void): void {
    let up: ByteStream | null = null;
    let upConnected = false;
    let blocked = false;
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the handlers below are plain objects, not methods
    const self = this;
    const relay: ByteStream = {
      write(chunk) {
        if (!up || !upConnected) return false;
        const ok = up.write(chunk);
        if (!ok) blocked = true;
        return ok;
      },
      end: () => up?.end(),
      destroy: (e) => up?.destroy(e),
      pause: () => up?.pause(),
      resume: () => up?.resume(),
    };
    try {
      up = this.m.upstream.connect(
        { ip: dial.ip, port: dial.port, guestPort: this.target.guestPort },
        {
          onConnect: () => {
            upConnected = true;
            onDial?.(true, `${dial.ip}:${dial.port} answers`);
            if (beforeConnect) self.gh.onConnect();
            self.handOver(relay);
          },
          onData: (chunk) => self.gh.onData(chunk),
          onDrain: () => {
            if (blocked) {
              blocked = false;
              self.gh.onDrain();
            }
          },
          onEnd: () => self.gh.onEnd(),
          onClose: (error) => {
            if (!upConnected) onDial?.(false, error?.message ?? "closed");
            self.gh.onClose(error ?? (upConnected ? undefined : new Error(`${dial.ip}:${dial.port} closed before connecting`)));
          },
        },
      );
    } catch (e) {
      onDial?.(false, (e as Error).message);
      const err = e instanceof Error ? e : new Error(String(e));
      return beforeConnect ? this.refuse(err) : this.#abort(err);
    }
  }

  /** The mediation channel: relay to the host listener, audited as mediation.microagent.internal. */
  relay(t: MediationTarget): void {
    const f: FlowFacts = { proto: "tcp", dstIp: this.target.ip, dstPort: this.target.port, l7: "opaque", dnsPinnedNames: [] };
    const v: Verdict = {
      verdict: "allow",
      name: MEDIATION_NAME,
      nameSource: "host-service",
      asserted: null,
      reason: `mediation channel ${t.guestPort} -> ${t.host}:${t.port}`,
      signal: null,
      mitm: false,
      passthrough: false,
      unlisted: false,
      dial: { ip: t.host, port: t.port },
      addressClass: null,
    };
    this.verdict = v;
    this.facts = f;
    this.#recordClose = true;
    this.phase = "dialing";
    this.#splice(v.dial!, true, (ok, detail) => {
      this.m.mediationSeen(t.guestPort, ok, detail);
      if (ok) this.m.record(verdictRecord(v, f, { flowId: this.id }));
      else {
        this.#recordClose = false;
        this.m.record({
          ...verdictRecord({ ...v, verdict: "deny", reason: `error: mediation channel ${this.m.egress.mediationRequired ? "required but " : ""}unreachable: ${t.host}:${t.port}: ${detail}`, signal: "denied" }, f, { flowId: this.id }),
        });
      }
    });
  }

  #finish(error?: Error, fromStack = false): void {
    if (this.#closed) return;
    this.#closed = true;
    this.phase = "closed";
    if (this.#sniffTimer) clearTimeout(this.#sniffTimer);
    this.#sniffTimer = null;
    this.#chunks = [];
    if (this.#recordClose && this.verdict) {
      this.m.record({
        type: "egress_close",
        proto: "tcp",
        dst: this.dst,
        name: this.verdict.name,
        sni: this.facts?.sni ?? null,
        host: this.facts?.host ?? null,
        decision: "allow",
        reason: error ? `closed: ${error.message.slice(0, 200)}` : "closed",
        signal: null,
        mitm: this.verdict.mitm,
        passthrough: this.verdict.passthrough,
        flowId: this.id,
        bytesUp: this.bytesUp,
        bytesDown: this.bytesDown,
        durationMs: Date.now() - this.startedAt,
      });
    }
    this.onGone();
    if (!fromStack) this.#h.onClose(error);
  }
}

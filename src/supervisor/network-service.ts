/**
 * `user` networking as a supervisor service: the VM's virtio-net NIC is a `-netdev stream` client of a
 * Unix socket this service listens on, and every frame goes through the pure userspace stack
 * (src/net) whose flows end in host sockets opened here, each decided by the destination policy
 * first. Nothing else carries the guest's packets: if this service (or the supervisor) dies, the
 * NIC is dead (QEMU 7.2's stream netdev does not reconnect), and a start whose NIC never connects
 * fails closed with NETWORK_LINK_FAILED.
 *
 *   beforeLaunch  listen on <runtime>/net.sock, bind the published ports (a taken port fails the
 *                 start before QEMU runs), set spec.network
 *   afterLaunch   wait for QEMU's connection within the boot deadline (QEMU connects while it
 *                 creates the netdev, before the guest runs, so the accepted connection is the
 *                 proof NETDEV_STREAM_CONNECTED would give)
 *   bootConfig    `network`: eth0's address, prefix, gateway, MTU, and the per-boot resolv.conf
 *                 and hosts the guest bind-mounts over /etc's
 *   sever         quarantine: every flow and listener cut at once, later frames dropped
 *   stop          everything closed, the socket file removed
 *
 * Egress (`settings.egress`, src/egress): with `guarded` or `strict` the stack's policy, connector
 * and DNS observer are the egress mediator's (created in beforeLaunch by `createEgressMediation`;
 * a failure there refuses the start: fail closed), the boot config carries the workspace CA and
 * its bind mounts, readiness carries `mediationReady`, and `describe()` an `egress` summary. With
 * `off` (and for manifests from before mediation, which have no `egress`) the plain default policy
 * and the SocketConnector carry the flows, as before.
 *
 * Backpressure: `output()` returns the link socket's write() result (false = the stack holds data
 * until 'drain' calls `outputDrained()`; ACKs keep flowing); guest reads arrive one batch per socket
 * read (`receiveFrames`), so ACKs and host writes coalesce per batch.
 */
import { createServer, type Server, type Socket } from "node:net";
import { rm } from "node:fs/promises";
import type { VmLaunchSpec } from "../backend/types.ts";
import { createDestinationPolicy, type DestinationPolicy as EgressPolicy } from "../egress/policy.ts";
import { createEgressMediation, type EgressMediation } from "../egress/egress-service.ts";
import { stackDnsHosts } from "../egress/dns-mediator.ts";
import { EgressErrors } from "../egress/errors.ts";
import type { ResolvedEgressOptions } from "../egress/flags.ts";
import type { SwapSecret } from "../secrets/placeholder.ts";
import { NetworkStack, StreamFrameDecoder, streamFrameHeader } from "../net/index.ts";
import type { ByteStream, DestinationPolicy as StackPolicy, DnsObserver, HostConnector, NetworkStats } from "../net/index.ts";
import { egressOptionsOf, type NetworkSettings, type PortForward } from "../workspace/network.ts";
import { isMicroagentError } from "../contract/errors.ts";
import { SupervisorErrors } from "./errors.ts";
import { DgramFactory, ForwardingResolver, SocketConnector, hostResolvers, stackPolicy, type HostCounters } from "./net-host.ts";
import type { ServiceContext, SupervisorService } from "./service.ts";

export const NETWORK_DATAPATH = "userspace-stack";

export interface NetworkServiceOptions {
  workspace: string;
  /** The stream socket QEMU connects to (under 108 bytes). */
  socketPath: string;
  /** The guest NIC's MAC (the backend's stable per-workspace one). */
  mac: string;
  settings: NetworkSettings;
  /** The guest hostname (mapped to the guest's address in its /etc/hosts). */
  hostname?: string;
  log(message: string): void;
  /** Where the host's resolvers are read from (tests). */
  resolvConf?: string;
  /** The workspace's state directory (the egress CA and egress.jsonl live there); required unless egress is off. */
  workspaceDir?: string;
  /** Swap secrets the mediator substitutes into intercepted HTTP/1 requests to their bound hosts. */
  swap?: readonly SwapSecret[];
  /** How the mediator dials upstream (default: exactly the decided address). Tests route to loopback. */
  upstream?: HostConnector;
}

interface Forward {
  spec: PortForward;
  server: Server;
  clients: Set<Socket>;
  accepted: number;
  refused: number;
}

type LinkState = "waiting" | "connected" | "closed" | "failed" | "severed";

export class NetworkService implements SupervisorService {
  readonly name = "network";
  readonly #o: NetworkServiceOptions;
  readonly #policy: EgressPolicy;
  readonly #counters: HostCounters = { denied: {}, connectErrors: 0, dnsForwarded: 0, dnsFailed: 0 };
  readonly #connector: SocketConnector;
  readonly #datagrams: DgramFactory;
  readonly #resolver: ForwardingResolver;
  readonly stack: NetworkStack;
  #server: Server | undefined;
  #link: Socket | undefined;
  #linkState: LinkState = "waiting";
  #linkError: string | undefined;
  #connected: Promise<Socket>;
  #onConnected!: (s: Socket) => void;
  #forwards: Forward[] = [];
  #severed = false;
  #stopped = false;
  /** The egress options (mode off: no mediation). */
  readonly egress: ResolvedEgressOptions;
  /** Set by beforeLaunch when egress is guarded or strict. */
  #eg: EgressMediation | undefined;

  constructor(o: NetworkServiceOptions) {
    this.#o = o;
    const addHosts = o.settings.addHosts ?? [];
    this.#connected = new Promise((r) => (this.#onConnected = r));
    // Built first: a bad setting fails here (at service creation, before anything listens).
    const gateway = "10.200.0.1";
    this.egress = egressOptionsOf(o.settings);
    const mediated = this.egress.mode !== "off";
    if (mediated && !o.workspaceDir) throw new Error("internal: a mediated workspace's network service needs its workspace directory");
    // The default policy still decides what a UDP socket dials (host services map to loopback);
    // under mediation the stack asks the mediator first, so this is a second, consistent check.
    this.#policy = createDestinationPolicy({ allow: o.settings.egressAllow ?? [], addHosts, gateway });
    this.#connector = new SocketConnector(this.#policy, this.#counters);
    this.#datagrams = new DgramFactory(this.#policy);
    const upstreams = o.settings.dns ? [o.settings.dns] : hostResolvers(o.resolvConf);
    this.#resolver = new ForwardingResolver(upstreams, 4000, this.#counters);
    // Mediated: the stack talks to the mediator's seams, which exist from beforeLaunch on (no frame
    // can arrive earlier: the VMM is not started before then). Until then they refuse everything.
    const mediatedPolicy: StackPolicy = {
      decide: (req) => {
        const d = this.#eg ? this.#eg.policy.decide(req) : { verdict: "deny" as const, reason: "egress mediation is not set up" };
        if (d.verdict === "deny") this.#counters.denied.egress = (this.#counters.denied.egress ?? 0) + 1;
        return d;
      },
    };
    const mediatedConnector: HostConnector = {
      connect: (target, h) => {
        if (this.#eg) return this.#eg.connector.connect(target, h);
        setImmediate(() => h.onClose(new Error("egress mediation is not set up")));
        return { write: () => true, end: () => {}, destroy: () => {}, pause: () => {}, resume: () => {} };
      },
    };
    const mediatedDns: DnsObserver = {
      onQuery: (q) => this.#eg?.dnsObserver.onQuery?.(q) ?? { action: "refuse" },
      onAnswer: (q, a) => (this.#eg?.dnsObserver.onAnswer ? this.#eg.dnsObserver.onAnswer(q, a) : undefined),
    };
    this.stack = new NetworkStack(
      {
        guestMac: o.mac,
        gatewayIp: gateway,
        dns: { hosts: { ...Object.fromEntries(addHosts.map((h) => [h.name, h.ip])), ...(mediated ? stackDnsHosts(gateway) : {}) }, timeoutMs: 5000 },
      },
      {
        output: (f) => this.#output(f),
        connector: mediated ? mediatedConnector : this.#connector,
        datagrams: this.#datagrams,
        policy: mediated ? mediatedPolicy : stackPolicy(this.#policy, this.#counters),
        resolver: this.#resolver,
        ...(mediated ? { dnsObserver: mediatedDns } : {}),
      },
    );
    if (this.stack.config.gatewayIp !== gateway) throw new Error("internal: the stack's gateway moved");
  }

  /** The mediator, once beforeLaunch set it up (guarded/strict only). */
  get mediation(): EgressMediation | undefined {
    return this.#eg;
  }

  /** Sets up the mediator; any failure refuses the start with the seed's shape of message (fail closed). */
  async #startMediation(): Promise<void> {
    const ws = this.#o.workspace;
    try {
      this.#eg = await createEgressMediation({
        workspaceDir: this.#o.workspaceDir as string,
        workspace: ws,
        egress: this.egress,
        gateway: this.stack.config.gatewayIp,
        addHosts: this.#o.settings.addHosts ?? [],
        ...(this.#o.swap?.length ? { swap: this.#o.swap } : {}),
        ...(this.#o.upstream ? { upstream: this.#o.upstream } : {}),
        onAuditError: (e) => {
          // A mediated workspace never runs unaudited: the mediator severed itself; the NIC goes too.
          this.#o.log(`network: egress audit failed (${e.message}); severing the workspace's network (fail closed)`);
          this.sever("egress audit failed");
        },
      });
    } catch (e) {
      const cause = isMicroagentError(e) ? e.message : (e as Error).message;
      const code = isMicroagentError(e) ? e.code : undefined;
      throw EgressErrors.EGRESS_SETUP_FAILED({
        message: `egress: ${this.egress.mode} mediation unavailable for workspace ${ws} — ${cause}; fix it or use --egress off`,
        ...(isMicroagentError(e) && e.remediation ? { remediation: `${e.remediation} Or drop mediation if you genuinely don't want it: --egress off.` } : {}),
        cause: e,
        details: { workspace: ws, mode: this.egress.mode, ...(code ? { cause: code } : {}) },
      });
    }
  }

  async beforeLaunch(spec: VmLaunchSpec): Promise<VmLaunchSpec> {
    if (this.egress.mode !== "off") await this.#startMediation();
    await rm(this.#o.socketPath, { force: true });
    const server = createServer({ allowHalfOpen: false, pauseOnConnect: false }, (s) => this.#accept(s));
    this.#server = server;
    await listen(server, () => server.listen(this.#o.socketPath)).catch((e: unknown) => {
      throw SupervisorErrors.NETWORK_SETUP_FAILED({ message: `cannot listen on the network socket ${this.#o.socketPath}: ${(e as Error).message}`, cause: e });
    });
    for (const f of this.#o.settings.forwards ?? []) await this.#publish(f);
    return { ...spec, network: { kind: "stream", socketPath: this.#o.socketPath, mac: this.#o.mac } };
  }

  async afterLaunch(ctx: ServiceContext): Promise<void> {
    const ms = Math.max(1, ctx.remainingMs());
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), ms)));
    const exited = ctx.vm.exited.then(() => "exited" as const);
    const got = await Promise.race([this.#connected, timeout, exited]).finally(() => clearTimeout(timer));
    if (got === "timeout" || got === "exited") {
      this.#linkState = "failed";
      this.#linkError = got === "timeout" ? `QEMU did not connect its NIC to ${this.#o.socketPath} within ${ms} ms` : "the VM exited before its NIC connected";
      throw SupervisorErrors.NETWORK_LINK_FAILED({
        message: `workspace ${this.#o.workspace}: the network link failed: ${this.#linkError}; the workspace is not started without its network (fail closed)`,
        details: { socketPath: this.#o.socketPath },
      });
    }
    ctx.log(`network: NIC ${this.#o.mac} connected (${NETWORK_DATAPATH}, guest ${this.stack.config.guestIp}/${this.stack.config.prefixLength})`);
  }

  bootConfig(config: Record<string, unknown>): Record<string, unknown> {
    const c = this.stack.config;
    const hosts = [
      "127.0.0.1\tlocalhost",
      "::1\tlocalhost ip6-localhost ip6-loopback",
      `${c.guestIp}\t${this.#o.hostname ?? this.#o.workspace}`,
      `${c.gatewayIp}\thost.microagent.internal`,
      ...(this.#o.settings.addHosts ?? []).map((h) => `${h.ip}\t${h.name}`),
    ];
    const withNet = {
      ...config,
      network: {
        iface: "eth0",
        mac: this.#o.mac,
        address: c.guestIp,
        prefix: c.prefixLength,
        gateway: c.gatewayIp,
        mtu: c.mtu,
        resolvConf: `# per-boot, written by microagent-init (the image's file is untouched)\nnameserver ${c.gatewayIp}\noptions ndots:0\n`,
        hosts: `# per-boot, written by microagent-init (the image's file is untouched)\n${hosts.join("\n")}\n`,
      },
    };
    // Mediated: the workspace CA (bundle files, env, bind mounts over the image's bundles).
    return this.#eg ? this.#eg.bootConfig(withNet) : withNet;
  }

  async readiness(): Promise<Array<{ name: string; ready: boolean; detail: string; code?: string }>> {
    return this.#eg ? this.#eg.readiness() : [];
  }

  onRunning(ctx: { log(message: string): void }): Promise<void> | void {
    if (!this.#eg || this.egress.mediation.length === 0) return;
    // Say it where the operator looks at start (supervisor log); status carries the readiness item.
    return this.#eg.readiness().then((r) => {
      for (const item of r) if (!item.ready) ctx.log(`network: ${item.detail}`);
    });
  }

  sever(reason: string): void {
    if (this.#severed) return;
    this.#severed = true;
    this.#linkState = "severed";
    this.stack.sever();
    this.#eg?.sever();
    this.#connector.destroyAll();
    this.#datagrams.closeAll();
    this.#resolver.close();
    this.#closeForwards();
    this.#o.log(`network: severed (${reason}): every flow and published port cut; later frames from the guest are dropped`);
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.stack.close();
    this.#eg?.stop();
    this.#connector.destroyAll();
    this.#datagrams.closeAll();
    this.#resolver.close();
    this.#closeForwards();
    this.#link?.destroy();
    if (this.#linkState === "connected") this.#linkState = "closed";
    this.#server?.close();
    await rm(this.#o.socketPath, { force: true }).catch(() => {});
  }

  describe(): Record<string, unknown> {
    const c = this.stack.config;
    const stats: NetworkStats = this.stack.stats();
    return {
      mode: "user",
      datapath: NETWORK_DATAPATH,
      link: this.#linkState,
      ...(this.#linkError ? { linkError: this.#linkError } : {}),
      mac: this.#o.mac,
      address: c.guestIp,
      prefix: c.prefixLength,
      gateway: c.gatewayIp,
      dns: [c.gatewayIp],
      dnsUpstreams: this.#resolver.upstreams.map((u) => `${u.ip}:${u.port}`),
      routes: [
        { destination: "default", via: c.gatewayIp },
        { destination: `${networkOf(c.guestIp, c.prefixLength)}/${c.prefixLength}`, via: "link" },
      ],
      mtu: c.mtu,
      addHosts: this.#o.settings.addHosts ?? [],
      egressAllow: this.#o.settings.egressAllow ?? [],
      egress: this.#eg ? { ...this.#eg.describe() } : { mode: this.egress.mode },
      forwards: this.#forwards.map((f) => ({ ...f.spec, listening: f.server.listening, connections: f.clients.size, accepted: f.accepted, refused: f.refused })),
      counters: {
        framesIn: stats.framesIn,
        framesOut: stats.framesOut,
        bytesIn: stats.bytesIn,
        bytesOut: stats.bytesOut,
        drops: stats.drops,
        tcp: stats.tcp,
        udp: stats.udp,
        dns: { ...stats.dns, forwarded: this.#counters.dnsForwarded, failed: this.#counters.dnsFailed },
        denied: this.#counters.denied,
        connectErrors: this.#counters.connectErrors,
        bufferedBytes: stats.bufferedBytes,
        severed: stats.severed,
      },
    };
  }

  // --------------------------------------------------------------------------------- the link

  #accept(s: Socket): void {
    if (this.#link || this.#severed || this.#stopped) {
      // One NIC, one connection: a second one (or one after quarantine) is not QEMU's.
      s.destroy();
      return;
    }
    this.#link = s;
    this.#linkState = "connected";
    this.#server?.close(); // nobody else may connect; the socket file goes at stop()
    const decoder = new StreamFrameDecoder();
    s.on("data", (chunk: Buffer) => {
      if (this.#severed) return;
      let frames;
      try {
        frames = decoder.push(chunk);
      } catch (e) {
        this.#linkState = "failed";
        this.#linkError = (e as Error).message;
        this.#o.log(`network: link failed: ${this.#linkError}; the NIC is dead until the workspace restarts`);
        this.stack.sever();
        s.destroy();
        return;
      }
      if (frames.length) this.stack.receiveFrames(frames);
    });
    s.on("drain", () => this.stack.outputDrained());
    s.on("error", (e) => (this.#linkError = e.message));
    s.on("close", () => {
      if (this.#linkState === "connected") {
        this.#linkState = "closed";
        this.#o.log("network: the VMM closed the NIC's socket");
      }
      this.stack.sever();
    });
    this.#onConnected(s);
  }

  #output(frame: Buffer): boolean {
    const s = this.#link;
    if (!s || s.destroyed || this.#severed) return true; // no NIC yet / any more: the frame is lost, as on a wire
    s.cork();
    s.write(streamFrameHeader(frame.length));
    const ok = s.write(frame);
    s.uncork();
    return ok;
  }

  // --------------------------------------------------------------------------- published ports

  async #publish(spec: PortForward): Promise<void> {
    const f: Forward = { spec, server: createServer({ allowHalfOpen: true, pauseOnConnect: true }, (c) => this.#forwardConnection(f, c)), clients: new Set(), accepted: 0, refused: 0 };
    try {
      await listen(f.server, () => f.server.listen({ host: spec.hostIp, port: spec.hostPort, exclusive: true }));
    } catch (e) {
      this.#closeForwards();
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "EADDRINUSE") {
        throw SupervisorErrors.NETWORK_PORT_IN_USE({
          message: `cannot publish guest port ${spec.guestPort}: host port ${spec.hostIp}:${spec.hostPort} is already in use`,
          details: { hostIp: spec.hostIp, hostPort: spec.hostPort, guestPort: spec.guestPort },
        });
      }
      throw SupervisorErrors.NETWORK_SETUP_FAILED({ message: `cannot publish guest port ${spec.guestPort} on ${spec.hostIp}:${spec.hostPort}: ${(e as Error).message}`, cause: e });
    }
    this.#forwards.push(f);
  }

  #forwardConnection(f: Forward, client: Socket): void {
    if (this.#linkState !== "connected" || this.#severed) {
      f.refused++;
      client.destroy();
      return;
    }
    let stream: ByteStream | undefined;
    let clean = false;
    try {
      stream = this.stack.connectToGuest(f.spec.guestPort, {
        onConnect: () => client.resume(),
        onData: (d) => {
          if (!client.write(d)) stream?.pause();
        },
        onDrain: () => client.resume(),
        onEnd: () => {
          clean = true;
          client.end();
        },
        onClose: (error) => {
          if (error || !clean) client.destroy();
          else if (!client.writableEnded) client.end();
        },
      });
    } catch (e) {
      f.refused++;
      this.#o.log(`network: published port ${f.spec.hostPort} -> ${f.spec.guestPort}: ${(e as Error).message}`);
      client.destroy();
      return;
    }
    const s = stream;
    f.accepted++;
    f.clients.add(client);
    client.on("data", (d: Buffer) => {
      if (!s.write(d)) client.pause();
    });
    client.on("drain", () => s.resume());
    client.on("end", () => s.end());
    client.on("error", () => {});
    client.on("close", (hadError) => {
      f.clients.delete(client);
      if (hadError) s.destroy();
    });
  }

  #closeForwards(): void {
    for (const f of this.#forwards) {
      f.server.close();
      for (const c of f.clients) c.destroy();
      f.clients.clear();
    }
  }
}

function listen(server: Server, start: () => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error) => reject(e);
    server.once("error", onError);
    server.once("listening", () => {
      server.off("error", onError);
      resolve();
    });
    start();
  });
}

function networkOf(ip: string, prefix: number): string {
  const n = ip.split(".").map(Number).reduce((a, b) => (a << 8) | b, 0) >>> 0;
  const m = prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0;
  const v = (n & m) >>> 0;
  return [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join(".");
}

/**
 * Everything a mediated workspace needs, set up in one call, for the supervisor's network service
 * to plug in (src/egress must not import the supervisor, so this returns plain functions shaped
 * like the SupervisorService hooks):
 *
 *   const eg = await createEgressMediation({ workspaceDir, workspace, egress, gateway, addHosts });
 *   new NetworkStack({ ..., dns: { hosts: { ...addHosts, ...eg.stackDnsHosts } } },
 *                    { ..., policy: eg.policy, connector: eg.connector, dnsObserver: eg.dnsObserver });
 *   bootConfig: (c) => eg.bootConfig(c); readiness: () => eg.readiness(); describe: () => eg.describe();
 *   sever: () => eg.sever(); stop: () => eg.stop();
 *
 * Fail closed: a CA that cannot be written, an unreadable `--egress-upstream-ca` or an audit log
 * that cannot be opened throws here, and the workspace must not start.
 */
import { loadOrCreateCa, LeafIssuer } from "./ca.ts";
import { EgressAuditLog } from "./audit.ts";
import { stackDnsHosts } from "./dns-mediator.ts";
import { EgressMediator } from "./mediator.ts";
import type { ResolvedEgressOptions } from "./flags.ts";
import { guestTrust, hostRootCertificates, loadUpstreamCas, upstreamTrust, withGuestTrust } from "./trust.ts";
import type { GuestTrust } from "./trust.ts";
import { netConnector } from "./streams.ts";
import type { DestinationPolicy, DnsObserver, HostConnector } from "../net/types.ts";
import type { SwapSecret } from "../secrets/placeholder.ts";

export interface EgressMediationOptions {
  /** The workspace's state directory: the CA files and egress.jsonl live here (host-only). */
  workspaceDir: string;
  workspace: string;
  egress: ResolvedEgressOptions;
  /** The stack's gateway address (`stack.config.gatewayIp`). */
  gateway: string;
  addHosts?: ReadonlyArray<{ name: string; ip: string }>;
  /** How flows are dialled (default `netConnector()`: exactly the decided address). */
  upstream?: HostConnector;
  /**
   * Swap secrets (secret delivery): in intercepted HTTP/1 requests to a secret's bound hosts its
   * placeholder is replaced by the value (audited `secret_swap`, name and host only).
   */
  swap?: readonly SwapSecret[];
  /** Called when the audit log fails (in the background or on a write): the mediator severed itself; fail the workspace closed. */
  onAuditError?: (e: Error) => void;
}

export interface EgressMediation {
  mediator: EgressMediator;
  policy: DestinationPolicy;
  connector: HostConnector;
  dnsObserver: DnsObserver;
  /** Extra `dns.hosts` for the stack (mediation.microagent.internal and gateway.microagent.internal). */
  stackDnsHosts: Record<string, string>;
  trust: GuestTrust;
  audit: EgressAuditLog;
  bootConfig(config: Record<string, unknown>): Record<string, unknown>;
  readiness(): Promise<Array<{ name: string; ready: boolean; detail: string; code?: string }>>;
  describe(): Record<string, unknown>;
  sever(): void;
  stop(): void;
}

export async function createEgressMediation(o: EgressMediationOptions): Promise<EgressMediation> {
  if (o.egress.mode === "off") throw new Error("internal: --egress off uses the plain connector and the default destination policy");
  // The files are read now (an unreadable one fails the start closed); the host's roots on first use.
  const extraCas = await loadUpstreamCas(o.egress.upstreamCaFiles);
  const upstreamCa = () => upstreamTrust(extraCas);
  const ca = await loadOrCreateCa(o.workspaceDir, { workspace: o.workspace });
  const issuer = new LeafIssuer(ca);
  const audit = new EgressAuditLog(o.workspaceDir, { workspace: o.workspace, ...(o.onAuditError ? { onError: o.onAuditError } : {}) });
  const mediator = new EgressMediator({
    egress: o.egress,
    gateway: o.gateway,
    addHosts: o.addHosts ?? [],
    audit,
    upstream: o.upstream ?? netConnector(),
    issuer,
    upstreamCa,
    ...(o.swap?.length ? { swap: o.swap } : {}),
    ...(o.onAuditError ? { onFailure: o.onAuditError } : {}),
  });
  // Every TLS flow but a passthrough one is intercepted, so the guest verifies only leaves of the
  // workspace CA, except on passthrough hosts, where it verifies the upstream's own chain: the host's
  // roots go into the guest's bundle only when there are passthrough entries (the bundle is ~0.6 MB
  // of boot config otherwise sent and written at every boot).
  const trust = guestTrust(ca, o.egress.passthrough.length > 0 ? hostRootCertificates() : []);
  return {
    mediator,
    policy: mediator.policy,
    connector: mediator.connector,
    dnsObserver: mediator.dnsObserver,
    stackDnsHosts: stackDnsHosts(o.gateway),
    trust,
    audit,
    bootConfig: (c) => withGuestTrust(c, trust),
    readiness: () => mediator.mediationReadiness(),
    describe: () => ({ ...mediator.describe(), caFingerprint256: ca.fingerprint256, audit: { path: audit.path, ...audit.stats } }),
    sever: () => mediator.sever(),
    stop: () => {
      mediator.sever();
      audit.close();
    },
  };
}

/**
 * The services a workspace's supervisor runs next to its VM, chosen from the manifest: the
 * userspace network stack for `user` networking (isolated workspaces get none, so no NIC) and secret
 * delivery when the manifest names secrets.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import type { VmLaunchSpec } from "../backend/types.ts";
import { macFor } from "../backend/linux-qemu.ts";
import type { Manifest } from "../workspace/manifest.ts";
import type { WorkspacePaths } from "../workspace/paths.ts";
import { NetworkService } from "./network-service.ts";
import type { SupervisorService } from "./service.ts";
import { SecretsService } from "./secrets-service.ts";
import { planSecretDelivery } from "../secrets/delivery.ts";
import type { ResolvedSecret } from "../secrets/resolve.ts";
import { netConnector } from "../egress/streams.ts";
import type { ByteStream, ByteStreamHandlers, HostConnector, TcpTarget } from "../net/types.ts";

/** The stream socket QEMU's NIC connects to: next to the channel socket (short: under 108 bytes). */
export function networkSocketPath(paths: Pick<WorkspacePaths, "runtimeDir">): string {
  return join(paths.runtimeDir, "net.sock");
}

/**
 * The one registration point for supervisor services (service.ts): which per-VM services a workspace
 * gets, in the order their hooks run, decided from the manifest. `main.ts` passes the list to the
 * Supervisor as is.
 */
export async function servicesFor(
  manifest: Manifest,
  paths: WorkspacePaths,
  env: NodeJS.ProcessEnv = process.env,
  /** The values of manifest.secrets, handed over in memory (secrets/handoff.ts). */
  secrets: readonly ResolvedSecret[] = [],
): Promise<SupervisorService[]> {
  const services: SupervisorService[] = [];
  // One plan per boot (a supervisor boots once): fresh placeholders for the swap secrets.
  const plan = secrets.length > 0 ? planSecretDelivery(secrets) : undefined;
  if (manifest.network.mode === "user") {
    const net = new NetworkService({
        workspace: manifest.name,
        socketPath: networkSocketPath(paths),
        mac: macFor(manifest.name),
        settings: manifest.network,
        hostname: manifest.boot.hostname,
        workspaceDir: paths.dir,
        ...(env.MICROAGENT_TEST_EGRESS_ROUTES ? { upstream: testRoutes(env.MICROAGENT_TEST_EGRESS_ROUTES) } : {}),
        log: (m) => process.stderr.write(`${new Date().toISOString()} supervisor[${process.pid}]: ${m}\n`),
        ...(env.MICROAGENT_HOST_RESOLV_CONF ? { resolvConf: env.MICROAGENT_HOST_RESOLV_CONF } : {}),
        // Swap secrets for the egress mediator (placeholder -> value on intercepted requests to the bound hosts).
        ...(plan && plan.swap.length > 0 ? { swap: plan.swap } : {}),
      });
    services.push(env.MICROAGENT_NET_DATAPATH === "passt" ? new PasstBenchService(net, join(paths.runtimeDir, "passt.sock")) : net);
  }
  if (plan) services.push(new SecretsService(plan));
  return services;
}

/**
 * Test seam (`MICROAGENT_TEST_EGRESS_ROUTES=93.184.216.34=127.0.0.1,93.184.216.66=127.0.0.2`): the
 * mediator's upstream dials of the listed (public-looking) addresses go to the given loopback
 * address instead, port kept; a loopback target is dialled as is; everything else is refused. So a
 * VM test exercises the public-destination paths (interception, pins, passthrough) while nothing but
 * 127.0.0.0/8 is ever dialled. The guest, the policy and the audit still see the listed address.
 */
export function testRoutes(spec: string): HostConnector {
  const routes = new Map<string, string>();
  for (const pair of spec.split(",").map((p) => p.trim()).filter(Boolean)) {
    const [from, to] = pair.split("=");
    if (!from || !to || !to.startsWith("127.")) throw new Error(`MICROAGENT_TEST_EGRESS_ROUTES: '${pair}' is not ADDR=127.x.y.z`);
    routes.set(from, to);
  }
  const net = netConnector({ connectTimeoutMs: 5000 });
  return {
    connect(target: TcpTarget, h: ByteStreamHandlers): ByteStream {
      const to = target.ip.startsWith("127.") ? target.ip : routes.get(target.ip);
      if (!to) {
        setImmediate(() => h.onClose(Object.assign(new Error(`connect ECONNREFUSED ${target.ip}:${target.port} (not routed: MICROAGENT_TEST_EGRESS_ROUTES)`), { code: "ECONNREFUSED" })));
        return { write: () => false, end() {}, destroy() {}, pause() {}, resume() {} };
      }
      return net.connect({ ...target, ip: to }, h);
    },
  };
}

/**
 * Bench seam (`MICROAGENT_NET_DATAPATH=passt`): the same NIC and guest config, but frames go to a
 * passt process instead of our stack, so bench/net-user.ts can compare the two on one host. passt's
 * default maps the gateway address to the host's loopback, which is all the bench dials; it applies no
 * destination policy, so this is not a user-facing datapath.
 */
export class PasstBenchService implements SupervisorService {
  readonly name = "network";
  readonly #inner: NetworkService;
  readonly #socketPath: string;
  #child: ChildProcess | undefined;
  constructor(inner: NetworkService, socketPath: string) {
    this.#inner = inner;
    this.#socketPath = socketPath;
  }
  async beforeLaunch(spec: VmLaunchSpec): Promise<VmLaunchSpec> {
    await rm(this.#socketPath, { force: true });
    // As root passt drops to nobody before binding, which cannot write the 0700 runtime dir: stay root.
    const runas = process.getuid?.() === 0 ? ["--runas", "0:0"] : [];
    const child = spawn("passt", ["-f", "-q", "-4", ...runas, "-t", "none", "-u", "none", "--no-dhcp", "-a", "10.200.0.2", "-n", "24", "-g", "10.200.0.1", "-s", this.#socketPath], { stdio: ["ignore", "inherit", "inherit"] });
    this.#child = child;
    for (let i = 0; i < 200 && !existsSync(this.#socketPath); i++) await new Promise((r) => setTimeout(r, 10));
    if (!existsSync(this.#socketPath)) throw new Error("passt did not create its socket within 2 s");
    return { ...spec, network: { kind: "stream", socketPath: this.#socketPath, mac: macFor(spec.workspace) } };
  }
  bootConfig(config: Record<string, unknown>): Record<string, unknown> {
    return this.#inner.bootConfig(config);
  }
  stop(): void {
    this.#child?.kill("SIGKILL");
  }
  describe(): Record<string, unknown> {
    return { mode: "user", datapath: "passt (bench)" };
  }
}

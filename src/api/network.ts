/**
 * `microagent network NAME`: a workspace's network as the guest sees it. Live from the supervisor's
 * network service when the workspace runs (link state, counters from the stack's stats()); the static
 * facts from the manifest otherwise (every `user` workspace gets the stack's fixed LAN).
 */
import { macFor } from "../backend/linux-qemu.ts";
import { DEFAULT_CAPS, MAX_MTU } from "../net/index.ts";
import { readManifest } from "../workspace/manifest.ts";
import { openWorkspace, type WorkspaceAccessOptions } from "../workspace/access.ts";
import { SupervisorErrors } from "../supervisor/errors.ts";
import { supervisorFor } from "./lifecycle.ts";
import { egressOptionsOf } from "../workspace/network.ts";

export interface WorkspaceNetwork {
  workspace: string;
  mode: "user" | "isolated";
  /** `userspace-stack` (the supervisor's stack behind a -netdev stream socket) or `none`. */
  datapath: string;
  /** True when the facts come from the running supervisor (counters included). */
  live: boolean;
  [key: string]: unknown;
}

export async function workspaceNetwork(name: string, opts: WorkspaceAccessOptions = {}): Promise<WorkspaceNetwork> {
  const paths = await openWorkspace(name, opts);
  const m = await readManifest(paths);
  if (m.network.mode === "isolated") return { workspace: m.name, mode: "isolated", datapath: "none", live: false, interfaces: ["lo"] };
  const forwards = (m.network.forwards ?? []).map((f) => ({ ...f, listening: false }));
  const base: WorkspaceNetwork = {
    workspace: m.name,
    mode: "user",
    datapath: "userspace-stack",
    live: false,
    link: "down",
    mac: macFor(m.name),
    address: "10.200.0.2",
    prefix: 24,
    gateway: "10.200.0.1",
    dns: ["10.200.0.1"],
    dnsUpstreams: m.network.dns ? [`${m.network.dns.ip}:${m.network.dns.port}`] : ["(the host's resolvers)"],
    routes: [
      { destination: "default", via: "10.200.0.1" },
      { destination: "10.200.0.0/24", via: "link" },
    ],
    mtu: MAX_MTU,
    addHosts: m.network.addHosts ?? [],
    egressAllow: m.network.egressAllow ?? [],
    egress: { mode: egressOptionsOf(m.network).mode },
    forwards,
    caps: { maxTcpFlows: DEFAULT_CAPS.maxTcpFlows, maxHalfOpen: DEFAULT_CAPS.maxHalfOpen },
  };
  try {
    const { client } = await supervisorFor(name, opts);
    const live = (await client.services()).network;
    if (live) return { ...base, ...live, workspace: m.name, mode: "user", live: true } as WorkspaceNetwork;
  } catch (e) {
    if (!SupervisorErrors.NOT_RUNNING.is(e)) throw e;
  }
  return base;
}

/**
 * The services a workspace's supervisor runs next to its VM, chosen from the manifest: today the
 * userspace network stack for `user` networking (isolated workspaces get none, so no NIC).
 */
import { join } from "node:path";
import { macFor } from "../backend/linux-qemu.ts";
import type { Manifest } from "../workspace/manifest.ts";
import type { WorkspacePaths } from "../workspace/paths.ts";
import { NetworkService } from "./network-service.ts";
import type { SupervisorService } from "./service.ts";

/** The stream socket QEMU's NIC connects to: next to the channel socket (short: under 108 bytes). */
export function networkSocketPath(paths: Pick<WorkspacePaths, "runtimeDir">): string {
  return join(paths.runtimeDir, "net.sock");
}

export function servicesFor(manifest: Manifest, paths: WorkspacePaths, env: NodeJS.ProcessEnv = process.env): SupervisorService[] {
  const services: SupervisorService[] = [];
  if (manifest.network.mode === "user") {
    services.push(
      new NetworkService({
        workspace: manifest.name,
        socketPath: networkSocketPath(paths),
        mac: macFor(manifest.name),
        settings: manifest.network,
        hostname: manifest.boot.hostname,
        log: (m) => process.stderr.write(`${new Date().toISOString()} supervisor[${process.pid}]: ${m}\n`),
        ...(env.MICROAGENT_HOST_RESOLV_CONF ? { resolvConf: env.MICROAGENT_HOST_RESOLV_CONF } : {}),
      }),
    );
  }
  return services;
}

/**
 * The one registration point for supervisor services: which per-VM services (service.ts) a
 * workspace gets, in the order their hooks run. `main.ts` passes the list to the Supervisor as is.
 * Empty today; the network stack (for `network: user`), the egress mediator, port forwards, secret
 * delivery and snapshots are added here, each decided from the manifest.
 */
import type { Manifest } from "../workspace/manifest.ts";
import type { WorkspacePaths } from "../workspace/paths.ts";
import type { SupervisorService } from "./service.ts";

export async function servicesFor(_manifest: Manifest, _paths: WorkspacePaths, _env: NodeJS.ProcessEnv): Promise<SupervisorService[]> {
  const services: SupervisorService[] = [];
  return services;
}

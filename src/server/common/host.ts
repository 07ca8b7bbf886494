/**
 * What the operator decides for every adapter (never a remote caller): the state dir and the
 * supervisor. Plus the few reads the facade has no method for yet (events, logs, egress records),
 * each a direct call of the library function the CLI uses, so no adapter grows its own version.
 */
import { z } from "zod";
import { readEgress, EgressRecordSchema, type EgressRecord } from "../../egress/audit.ts";
import { openWorkspace } from "../../workspace/access.ts";
import type { HostOptions } from "../../api/requests.ts";

/** The host options an adapter passes to the facade. */
export type ServerHost = Pick<HostOptions, "stateDir" | "supervisorPath">;

export function access(host: ServerHost): { stateDir?: string } {
  return host.stateDir ? { stateDir: host.stateDir } : {};
}

export const EgressListSchema = z.object({ records: z.array(EgressRecordSchema) });

/** A workspace's egress audit records, oldest first; an empty list when it has no log. */
export async function egressRecords(name: string, host: ServerHost): Promise<EgressRecord[]> {
  const paths = await openWorkspace(name, access(host));
  return readEgress(paths.dir);
}

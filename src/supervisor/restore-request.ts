/**
 * What a start hands the supervisor to restore instead of booting (`MICROAGENT_RESTORE_JSON`): the
 * snapshot's state file, and the identity the restored guest is told about in `resume`. One schema
 * for both sides: the starting process builds it (api/snapshot-files.ts, api/warm.ts), the supervisor
 * parses it (main.ts) and acts on it (session.ts).
 */
import { z } from "zod";

export const RestoreRequestSchema = z.object({
  stateFile: z.string(),
  tag: z.string(),
  /** The snapshot's hostname and MAC: a fork's differ, and the guest is given its own. */
  sourceHostname: z.string(),
  sourceMac: z.string().optional(),
  hostname: z.string(),
  fork: z.boolean(),
  /** A warm entry's hashes, checked while QEMU starts and before any state is loaded; a mismatch removes `entryDir`. */
  verify: z.object({ stateSha256: z.string(), disk: z.object({ path: z.string(), sha256: z.string() }), entryDir: z.string().optional() }).optional(),
});
export type RestoreRequest = z.infer<typeof RestoreRequestSchema>;

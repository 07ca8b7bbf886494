/**
 * `result.json`: how the guest workload ended, written by the supervisor when the workload exits.
 * Read by `status` (the `result` field) and by reconcile (a dead supervisor after a clean exit is
 * `stopped`, not `failed`).
 */
import { z } from "zod";
import { WorkspaceErrors } from "./errors.ts";
import { writeJsonAtomic } from "../util/fs.ts";
import { readJsonFile } from "../util/json-file.ts";
import type { WorkspacePaths } from "./paths.ts";

/** The result.json record (a workload result with its status and boot; the supervisor makes it from the wire WorkloadResult in protocol.ts). */
export const WorkloadRecordSchema = z
  .object({
    /** The boot this result belongs to (runtime.json runtimeId). */
    runtimeId: z.string().optional(),
    /** exited: normal exit; signaled: killed by a signal; failed_to_start: exec of the entrypoint failed. */
    status: z.enum(["exited", "signaled", "failed_to_start", "timed_out"]),
    exitCode: z.number().int().nullable(),
    signal: z.string().optional(),
    error: z.string().optional(),
    startedAt: z.string().optional(),
    completedAt: z.string(),
  })
  .loose();
export type WorkloadRecord = z.infer<typeof WorkloadRecordSchema>;

export async function readResult(paths: Pick<WorkspacePaths, "result">): Promise<WorkloadRecord | undefined> {
  return readJsonFile(paths.result, WorkloadRecordSchema, (p) =>
    WorkspaceErrors.WORKSPACE_CORRUPT({ message: `${paths.result} is not a workload result: ${p.problem}`, cause: p.cause, details: { path: paths.result } }),
  );
}

export async function writeResult(paths: Pick<WorkspacePaths, "result">, result: WorkloadRecord): Promise<void> {
  await writeJsonAtomic(paths.result, WorkloadRecordSchema.parse(result));
}

/** A clean end: the workload exited with code 0. */
export function isCleanResult(result: WorkloadRecord | undefined): boolean {
  return result !== undefined && result.status === "exited" && result.exitCode === 0;
}

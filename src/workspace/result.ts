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

export const WorkloadResultSchema = z
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
export type WorkloadResult = z.infer<typeof WorkloadResultSchema>;

export async function readResult(paths: Pick<WorkspacePaths, "result">): Promise<WorkloadResult | undefined> {
  return readJsonFile(paths.result, WorkloadResultSchema, (p) =>
    WorkspaceErrors.WORKSPACE_CORRUPT({ message: `${paths.result} is not a workload result: ${p.problem}`, cause: p.cause, details: { path: paths.result } }),
  );
}

export async function writeResult(paths: Pick<WorkspacePaths, "result">, result: WorkloadResult): Promise<void> {
  await writeJsonAtomic(paths.result, WorkloadResultSchema.parse(result));
}

/** A clean end: the workload exited with code 0. */
export function isCleanResult(result: WorkloadResult | undefined): boolean {
  return result !== undefined && result.status === "exited" && result.exitCode === 0;
}

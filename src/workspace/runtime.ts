/**
 * `runtime.json`: what exists while a VM runs, written by the supervisor (WS-RUN) and read by every
 * other command to reach it and by reconcile to tell whether it is still alive. Pids come with
 * their start times so a reused pid is never mistaken for our process.
 */
import { rm } from "node:fs/promises";
import { dirname } from "node:path";
import { z } from "zod";
import { WorkspaceErrors } from "./errors.ts";
import { writeJsonAtomic } from "../util/fs.ts";
import { readJsonFile } from "../util/json-file.ts";
import { isRecordedProcess } from "../util/process.ts";
import type { WorkspacePaths } from "./paths.ts";

export const RuntimeRecordSchema = z.object({
  /** One id per boot of the workspace; also in the identity of every event of that boot. */
  runtimeId: z.string(),
  supervisorPid: z.number().int().positive(),
  /** /proc start time of the supervisor (clock ticks since boot), when known. */
  supervisorStartTime: z.number().optional(),
  /** Set once the VMM is launched. */
  vmmPid: z.number().int().positive().optional(),
  vmmStartTime: z.number().optional(),
  backend: z.string(),
  accel: z.enum(["kvm", "tcg", "hvf", "whpx"]),
  /** Why this accelerator (e.g. "KVM probe failed: ... ; using TCG"). */
  accelReason: z.string().optional(),
  sockets: z.object({
    control: z.string(),
    channel: z.string().optional(),
    qmp: z.string().optional(),
    console: z.string().optional(),
  }),
  startedAt: z.string(),
  /** The guest's boot id once the channel handshake reported it. */
  bootId: z.string().optional(),
});
export type RuntimeRecord = z.infer<typeof RuntimeRecordSchema>;

/**
 * The workspace directory each record was read from. A recorded pid without a start time is
 * trusted only when its command line names that directory (see `isRecordedProcess`); keeping it
 * beside the record, not in it, means a hand-edited runtime.json cannot claim another directory.
 */
const recordDirs = new WeakMap<RuntimeRecord, string>();

/** The marker a recorded process's command line must contain when its start time is missing. */
export function runtimeMarker(record: RuntimeRecord): string | undefined {
  return recordDirs.get(record);
}

export async function readRuntime(paths: Pick<WorkspacePaths, "runtime">): Promise<RuntimeRecord | undefined> {
  const record = await readJsonFile(paths.runtime, RuntimeRecordSchema, (p) =>
    WorkspaceErrors.WORKSPACE_CORRUPT({
      message: p.kind === "json" ? `${paths.runtime} is not JSON` : `${paths.runtime} is not a runtime record: ${p.problem}`,
      cause: p.cause,
      details: { path: paths.runtime, ...(p.field ? { field: p.field } : {}) },
    }),
  );
  if (record === undefined) return undefined;
  recordDirs.set(record, dirname(paths.runtime));
  return record;
}

export async function writeRuntime(paths: Pick<WorkspacePaths, "runtime">, record: RuntimeRecord): Promise<void> {
  await writeJsonAtomic(paths.runtime, RuntimeRecordSchema.parse(record));
}

export async function clearRuntime(paths: Pick<WorkspacePaths, "runtime">): Promise<void> {
  await rm(paths.runtime, { force: true });
}

export interface Liveness {
  supervisorAlive: boolean;
  /** undefined when no VMM was recorded yet. */
  vmmAlive: boolean | undefined;
}

/**
 * Which recorded processes are alive and verifiably ours: a pid without a start time counts only when
 * its command line names the workspace directory (so a stranger that reused it is never signalled).
 */
export function runtimeLiveness(record: RuntimeRecord): Liveness {
  const marker = runtimeMarker(record);
  return {
    supervisorAlive: isRecordedProcess(record.supervisorPid, record.supervisorStartTime, marker),
    vmmAlive: record.vmmPid === undefined ? undefined : isRecordedProcess(record.vmmPid, record.vmmStartTime, marker),
  };
}

/** True while any recorded process of this runtime (supervisor or VMM) is alive. */
export function vmProcessAlive(record: RuntimeRecord): boolean {
  const l = runtimeLiveness(record);
  return l.supervisorAlive || l.vmmAlive === true;
}

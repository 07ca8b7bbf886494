/**
 * The library side of the output model: each function turns a library result into the value the
 * CLI prints with `--json` (and the HTTP API and MCP will return), typed by its schema in
 * src/contract/results.ts. Commands call these instead of assembling objects inline, so one result
 * has one shape wherever it is shown. Fields left undefined are dropped by JSON.stringify.
 */
import { describeSource } from "../secrets/ref.ts";
import type { ForkResult } from "../workspace/fork.ts";
import type { CreateResult } from "../workspace/create.ts";
import type { LocalImage } from "../image/types.ts";
import type { ImageSummary } from "../image/images.ts";
import type { InstallKernelResult } from "../kernel/install.ts";
import type { KernelStatus, VerifyKernelResult } from "../kernel/status.ts";
import type { DeleteResult } from "../workspace/delete.ts";
import type { WorkspaceEvent } from "../workspace/events.ts";
import type { WorkspaceSummary } from "../workspace/list.ts";
import type { WorkspaceStatus } from "../workspace/status.ts";
import type {
  ConnectJson,
  CreateJson,
  DeleteJson,
  EventsJson,
  ExecJson,
  ImageJson,
  ImageListJson,
  ImageSummaryJson,
  KernelInstallJson,
  KernelListJson,
  KernelVerifyJson,
  ListJson,
  QuarantineJson,
  RunJson,
  StartJson,
  StatusJson,
  StopJson,
  VersionJson,
  WaitJson,
} from "../contract/results.ts";
import { packageVersion } from "../version.ts";
import type { ExecOutcome } from "./exec.ts";
import type { RunResult } from "./run.ts";
import type { StartResult, StopResult, WaitResult } from "./lifecycle.ts";

/** `run --json`: the run, the workload's result with the output it printed, the accelerator, timings. */
export function runJson(r: RunResult, output: { stdout: Buffer; stderr: Buffer }, stateDir: string): RunJson {
  return {
    workspace: r.workspace,
    stateDir,
    kept: r.kept,
    finalState: r.finalState,
    exitCode: r.exitCode,
    timedOut: r.timedOut,
    interrupted: r.interrupted,
    result: {
      startedAt: r.result?.startedAt,
      exitedAt: r.result?.exitedAt,
      exitCode: r.result?.exitCode,
      signal: r.result?.signal,
      startError: r.result?.startError,
      stdout: output.stdout.toString("base64"),
      stderr: output.stderr.toString("base64"),
    },
    host: { accel: r.accel, accelReason: r.accelReason },
    ...(r.warm ? { warm: r.warm } : {}),
    timingsMs: {
      create: Math.round(r.timings.createMs),
      boot: r.timings.bootMs === undefined ? undefined : Math.round(r.timings.bootMs),
      total: Math.round(r.timings.totalMs),
    },
    ...(r.egress ? { egress: r.egress } : {}),
  };
}

/** `exec --json`: the exec.v1 result with output as base64. */
export function execJson(r: ExecOutcome): ExecJson {
  return {
    protocolVersion: "exec.v1",
    status: r.status,
    exitCode: r.exitCode,
    signal: r.signal || undefined,
    stdout: r.stdout.toString("base64"),
    stderr: r.stderr.toString("base64"),
    stdoutTruncated: r.stdoutTruncated,
    stderrTruncated: r.stderrTruncated,
    startedAt: r.startedAt,
    completedAt: r.completedAt,
    error: r.error ? { code: r.status, message: r.error } : undefined,
  };
}

/** `start --json` (with `wait` when the caller also waited for the end). */
export function startJson(r: StartResult, wait?: WaitJson): StartJson {
  return {
    workspace: r.workspace,
    state: r.state,
    runtimeId: r.runtimeId,
    supervisorPid: r.supervisorPid,
    vmmPid: r.status?.vmmPid || undefined,
    bootMs: r.bootMs,
    host: { accel: r.accel, accelReason: r.accelReason },
    ...(r.restoredFrom ? { restoredFrom: r.restoredFrom } : {}),
    wait,
  };
}

/** What `create --json` reports of a manifest (a created workspace and a fork alike). */
function manifestHighlights(m: CreateResult["manifest"]) {
  return {
    backend: m.backend,
    arch: m.arch,
    image: m.image,
    resources: m.resources,
    network: m.network,
    secrets: (m.secrets ?? []).map((s) => ({ name: s.name, source: describeSource(s.source), delivery: s.delivery, hosts: s.hosts })),
    boot: { argv: m.boot.argv, setup: m.boot.setup, hostname: m.boot.hostname, files: m.boot.files.map((f) => f.target) },
    artifacts: m.artifacts,
  };
}

/** `create --json`: what was recorded (manifest highlights), the first event, cache hit, timings. */
export function createJson(r: CreateResult): CreateJson {
  return {
    workspace: r.name,
    state: r.state.state,
    event: r.state,
    ...manifestHighlights(r.manifest),
    rootfsCacheHit: r.rootfsCacheHit,
    timings: Object.fromEntries(Object.entries(r.timings).map(([k, v]) => [k, Math.round(v * 10) / 10])),
  };
}

/** `create --from-snapshot --json`: the fork as `create` reports a workspace, its source, and the restore. */
export function forkJson(f: ForkResult, started?: StartResult): CreateJson {
  return {
    workspace: f.name,
    state: started ? started.state : f.state.state,
    event: f.state,
    ...manifestHighlights(f.manifest),
    rootfsCacheHit: true,
    timings: {},
    fromSnapshot: { workspace: f.snapshot.manifest.workspace, tag: f.snapshot.tag },
    ...(started ? { start: startJson(started) } : {}),
  };
}

/** `image pull --json` and `image load --json`. */
export function imageJson(img: LocalImage): ImageJson {
  return {
    ref: img.ref,
    resolvedRef: img.resolvedRef,
    digest: img.manifestDigest,
    platform: img.platform,
    configDigest: img.configDigest,
    sizeBytes: img.sizeBytes,
    layers: img.layers.map((l) => ({ digest: l.digest, mediaType: l.mediaType, size: l.size, compression: l.compression })),
  };
}

/** One row of `image list --json`. */
export function imageSummaryJson(s: ImageSummary): ImageSummaryJson {
  return {
    ref: s.ref,
    resolvedRef: s.resolvedRef,
    digest: s.manifestDigest,
    platform: s.platform,
    sizeBytes: s.sizeBytes,
    source: s.source,
    createdAt: s.createdAt,
    lastUsedAt: s.lastUsedAt,
    complete: s.complete,
  };
}

/** `kernel install --json`. */
export function kernelInstallJson(r: InstallKernelResult): KernelInstallJson {
  return {
    action: r.action,
    backend: r.manifest.backend,
    arch: r.manifest.arch,
    version: r.manifest.version,
    path: r.kernelPath,
    sha256: r.manifest.kernel.sha256,
    initramfsPath: r.initramfsPath,
    initramfsSha256: r.manifest.initramfs.sha256,
    initSha256: r.manifest.init.sha256,
    modules: r.manifest.modules.map((m) => m.path),
    source: r.manifest.source,
    installedAt: r.manifest.installedAt,
  };
}

// Results the library already returns in their printed shape: these identity functions make the
// compiler check that each stays assignable to its schema's type, and give the CLI one call per result.

/** `halt`, `stop`, `kill --json`. */
export function stopJson(r: StopResult): StopJson {
  return { workspace: r.workspace, state: r.state, previousState: r.previousState, changed: r.changed };
}

/** `wait --json`. */
export function waitJson(r: WaitResult): WaitJson {
  return r;
}

/** `quarantine --json`. */
export function quarantineJson(r: QuarantineJson): QuarantineJson {
  return r;
}

/** `delete --json`. */
export function deleteJson(r: DeleteResult): DeleteJson {
  return r;
}

/** `list` and `ps --json`. */
export function listJson(workspaces: WorkspaceSummary[]): ListJson {
  return { workspaces };
}

/** `status --json`. */
export function statusJson(s: WorkspaceStatus): StatusJson {
  return s;
}

/** `events --json`. */
export function eventsJson(events: WorkspaceEvent[]): EventsJson {
  return { events };
}

/** `kernel list --json`. */
export function kernelListJson(kernels: KernelStatus[]): KernelListJson {
  return { kernels };
}

/** `kernel verify --json`. */
export function kernelVerifyJson(r: VerifyKernelResult): KernelVerifyJson {
  return r;
}

/** `image list --json`. */
export function imageListJson(images: readonly ImageSummary[]): ImageListJson {
  return { images: images.map(imageSummaryJson) };
}

/** `connect --send --json`. */
export function connectJson(workspace: string, sent: string, output: string): ConnectJson {
  return { workspace, sent, output };
}

/** `version --json`: this package's version and the Node running it. */
export function versionJson(): VersionJson {
  return { version: packageVersion(), node: process.versions.node };
}

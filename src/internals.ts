/**
 * `microagent/internals`: the building blocks under the public API (src/index.ts), for tools and
 * tests that need them. Explicit, grouped exports. Nothing here is a stable interface: names and
 * shapes change between releases without notice; `test/unit/internals-surface.txt` records them.
 */

// First: refuse an unsupported Node with a sentence (module evaluation follows import order).
import "./node-version.ts";

// Contract: errors, response shape, backend names.
export { MicroagentError, CommonErrors, ERROR_KINDS, isMicroagentError, toMicroagentError, definedErrorCodes } from "./contract/errors.ts";
export type { ErrorKind, ErrorObject, ErrorSpec } from "./contract/errors.ts";
export type { Response, Verdict } from "./contract/response.ts";
export { BACKENDS, ARCHES, normalizeArch, hostArch } from "./contract/backend.ts";
export type { BackendName, Arch } from "./contract/backend.ts";
export { packageVersion } from "./version.ts";

// Host: doctor and host capability report.
export { doctor, hostReport, resolveDoctorOptions, doctorFailure } from "./host/doctor.ts";
export type { DoctorOptions, ResolvedDoctorOptions, HostResponse, HostSupport, HostCapabilities, CapabilityReport } from "./host/doctor.ts";
export type { HostCheck } from "./host/checks.ts";
export { probeKvm, selectAccel, accelFromKvm, decideKvm, gatherKvmFacts, MIN_GUEST_IPS } from "./host/kvm.ts";
export type { KvmProbeResult, KvmFacts, KvmProbeStage, KvmVerdictCode, AccelChoice, ProbeKvmOptions } from "./host/kvm.ts";
export { formatDoctorText, formatHostText } from "./host/format.ts";
export { HostErrors } from "./host/errors.ts";

// Kernels.
export {
  installKernel,
  ensureKernel,
  verifyKernel,
  listKernels,
  kernelStatus,
  kernelMismatchError,
  KernelManifestSchema,
  KernelSourceSchema,
  KernelErrors,
  kernelDir,
  resolveGuestInit,
  defaultKernelCacheDir,
  DEFAULT_KERNEL_BACKEND,
  GUEST_MODULES,
} from "./kernel/index.ts";
export type {
  InstallKernelOptions,
  ResolvedInstallKernelOptions,
  InstallKernelResult,
  InstallAction,
  EnsureKernelOptions,
  KernelStatus,
  KernelStatusName,
  KernelStatusOptions,
  VerifyKernelOptions,
  VerifyKernelResult,
  KernelManifest,
  KernelSource,
} from "./kernel/index.ts";
// VMM: the QEMU primitives (command line, launcher, QMP).
export { buildQemuArgs, kernelCmdline, launchQemu, QmpClient, findQemu, tscKhz, waitForSerial, assertSocketPath, UNIX_SOCKET_PATH_MAX_BYTES } from "./vmm/qemu/index.ts";
export type { QemuSpec, QemuDisk, QemuSerial, QemuNetwork, QemuHandle, QemuExit, LaunchQemuOptions, QmpEvent, QmpStatus, Accel } from "./vmm/qemu/index.ts";
export { VmmErrors } from "./vmm/errors.ts";

// Guest channel.
export { GuestChannel, GuestExecHandle, ConsoleHandle, resolveGuestChannelOptions } from "./channel/guest-channel.ts";
export type { GuestChannelOptions, ResolvedGuestChannelOptions, ExecRequest, ExecResult, ExecOutputChunk, ConsoleOptions, GuestWorkloadResult, BootReport } from "./channel/guest-channel.ts";
export { bootConfigSchema, bootFileSchema, parseBootConfig } from "./channel/boot-config.ts";
export type { BootConfig, BootConfigInput, BootFile } from "./channel/boot-config.ts";
export { ChannelErrors } from "./channel/errors.ts";
export { UnixSocketTransport } from "./channel/transport.ts";
export type { ChannelTransport, UnixSocketTransportOptions } from "./channel/transport.ts";
export { PROTOCOL_VERSION, FrameDecoder, encodeFrame } from "./channel/frame.ts";
export type { ExecStatus, Hello } from "./channel/messages.ts";

// Images and registries.
export { ImageErrors } from "./image/errors.ts";
export { openLayerStream, compressionOf } from "./image/layer.ts";
export { ImageConfigSchema } from "./image/types.ts";
export type { LocalImage, LocalLayer, ImageConfig, Platform, LayerCompression } from "./image/types.ts";
export { parseImageRef, formatImageRef, isDigestRef } from "./image/ref.ts";
export type { ImageRef } from "./image/ref.ts";
export { pullImage, resolveImage, resolvePullOptions } from "./image/pull.ts";
export type { PullOptions, ResolvedPullOptions, ResolveImageOptions, PullProgress } from "./image/pull.ts";
export { listImages, removeImage, pruneImages, tagImage } from "./image/images.ts";
export type { ImageStoreOptions, ImageSummary, RemoveImageOptions, TagImageOptions, PruneImagesOptions, PruneResult } from "./image/images.ts";
export { loadImage } from "./image/load.ts";
export type { LoadImageOptions } from "./image/load.ts";
export { registryLogin, registryLogout, registryList } from "./image/registry-auth.ts";
export type { RegistryLoginOptions, RegistryEntry } from "./image/registry-auth.ts";

// Root filesystems.
export { RootfsErrors } from "./rootfs/errors.ts";
export { ensureBaseRootfs, buildRootfs, buildExt4FromLayers, resolveRootfsBuildOptions, baseCachePaths, ROOTFS_FORMAT } from "./rootfs/build.ts";
export type {
  BaseRootfs,
  RootfsBuildOptions,
  ResolvedRootfsBuildOptions,
  BuildRootfsOptions,
  BuildRootfsResult,
  LayerSource,
  BuildExt4Options,
  BuildExt4Result,
} from "./rootfs/build.ts";
export { resolveE2fsTools } from "./rootfs/tools.ts";
export type { E2fsTools } from "./rootfs/tools.ts";

// Workspaces.
export { WorkspaceErrors } from "./workspace/errors.ts";
export { workspacePaths, pathsForDir, workspacesRoot, runtimeDirFor, validateWorkspaceName, WORKSPACE_NAME_PATTERN } from "./workspace/paths.ts";
export type { WorkspacePaths } from "./workspace/paths.ts";
export { WORKSPACE_STATES, SETTLED_STATES, WorkspaceEventSchema, readEventsFile, followEventsFile, appendEvent } from "./workspace/events.ts";
export type { WorkspaceState, WorkspaceEvent, Identity, FollowOptions } from "./workspace/events.ts";
export { TRANSITIONS, LIVE_STATES, STARTABLE_STATES, canTransition, transition, readState, assertCanStart } from "./workspace/state.ts";
export type { StateRecord, TransitionOptions } from "./workspace/state.ts";
export { acquireLock, withLock } from "./workspace/lock.ts";
export type { LockHandle, LockOptions, LockRecord } from "./workspace/lock.ts";
export { RuntimeRecordSchema, readRuntime, writeRuntime, clearRuntime, runtimeLiveness } from "./workspace/runtime.ts";
export type { RuntimeRecord } from "./workspace/runtime.ts";
export { ManifestSchema as WorkspaceManifestSchema, readManifest as readWorkspaceManifest, writeManifest as writeWorkspaceManifest } from "./workspace/manifest.ts";
export type { Manifest as WorkspaceManifest, BootSpec, BootFile as WorkspaceBootFile, NetworkMode } from "./workspace/manifest.ts";
export { PROFILES, PROFILE_NAMES, DEFAULT_PROFILE, resolveResources } from "./workspace/profiles.ts";
export type { ProfileName, ResourceOptions, ResolvedResources } from "./workspace/profiles.ts";
export { processAlive, processStartTime } from "./util/process.ts";
export { reconcile } from "./workspace/reconcile.ts";
export type { ReconcileOptions, ReconcileOutcome } from "./workspace/reconcile.ts";
export { verifyManifest, assertBootArtifactsVerified } from "./workspace/verify.ts";
export type { Verification, Divergence, VerifiedArtifact } from "./workspace/verify.ts";
export { WorkloadRecordSchema as WorkspaceResultSchema, readResult as readWorkspaceResult, writeResult as writeWorkspaceResult } from "./workspace/result.ts";
export type { WorkloadRecord as WorkspaceResult } from "./workspace/result.ts";
export { SpecSchema, loadSpec } from "./workspace/spec.ts";
export type { LoadedSpec, SpecFile } from "./workspace/spec.ts";
export { createWorkspace, resolveCreateInputs } from "./workspace/create.ts";
export type { CreateWorkspaceOptions, ResolvedCreateWorkspaceOptions, CreateResult, CreateTimings, CreateProviders, ProviderContext, ResolvedImageInfo, KernelArtifacts, BaseRootfsInfo } from "./workspace/create.ts";
export { deleteWorkspace } from "./workspace/delete.ts";
export type { DeleteWorkspaceOptions, DeleteResult } from "./workspace/delete.ts";
export { listWorkspaces, psWorkspaces } from "./workspace/list.ts";
export type { WorkspaceSummary } from "./workspace/list.ts";
export { workspaceStatus } from "./workspace/status.ts";
export type { WorkspaceStatus, WorkspaceStatusOptions, ReadinessProbe, Readiness } from "./workspace/status.ts";
export { readEvents, followEvents, readLogs, followLogs } from "./workspace/history.ts";
export type { FollowWorkspaceOptions } from "./workspace/history.ts";
export { openWorkspace } from "./workspace/access.ts";
export type { WorkspaceAccessOptions } from "./workspace/access.ts";
export { defaultStateDir } from "./workspace/paths.ts";
export { mergeBootSpec, buildGuestBootConfig } from "./workspace/boot-spec.ts";
export type { GuestBootConfig, BootOverrides, ImageRuntimeConfig } from "./workspace/boot-spec.ts";
export { qemuImgInfo as overlayInfo } from "./backend/qemu-img.ts";
// Workspaces: the live lifecycle (backend, supervisor, Workspace facade, run).
export { Workspace, WorkspaceFiles } from "./api/workspace.ts";
export { ExecHandle as WorkspaceExecHandle } from "./api/exec.ts";
export { exitCodeFor as execExitCode, workloadExitCode } from "./api/exit-code.ts";
export type { ExecOptions, ExecOutput, ExecOutcome } from "./api/exec.ts";
export { startWorkspace, stopWorkspace, quarantineWorkspace, waitWorkspace, probeReadiness, readinessForRuntime, supervisorFor } from "./api/lifecycle.ts";
export type { LifecycleOptions, StartOptions, StartResult, StopResult, WaitResult } from "./api/lifecycle.ts";
export { runWorkspace, generateRunName } from "./api/run.ts";
export type { RunOptions, RunResult } from "./api/run.ts";
export { workspaceStatus as probedWorkspaceStatus } from "./api/status.ts";
export { runJson, execJson, startJson, createJson, imageJson, imageSummaryJson, kernelInstallJson } from "./api/results.ts";
export { ApiErrors } from "./api/errors.ts";
export { chooseAccel } from "./supervisor/accel.ts";
export type { AccelChoice as SupervisorAccelChoice } from "./supervisor/accel.ts";
export { runtimeRoot } from "./supervisor/spawn.ts";
export { BackendErrors } from "./backend/errors.ts";
export { getBackend, lookupBackend, listBackends, registerBackend, capabilitiesOf, capabilityTable } from "./backend/index.ts";
export { linuxQemuBackend, qemuSpecFor } from "./backend/linux-qemu.ts";
export { stopProcessGroup } from "./backend/process-group.ts";
export type { Backend, RunningVm, VmLaunchSpec, VmExit, DiskCapability, DiskRequest, CreatedDisk, NetworkCapability, NetworkAttachment, PauseCapability, SnapshotCapability } from "./backend/types.ts";
export type { BackendCapabilities, BackendCapabilityRow } from "./backend/capabilities.ts";
export { SupervisorErrors } from "./supervisor/errors.ts";
export { SupervisorClient } from "./supervisor/client.ts";
export type { ConsoleConnection } from "./supervisor/client.ts";
export { spawnSupervisor, waitForSupervisorReady } from "./supervisor/spawn.ts";
export { CONTROL_PROTOCOL_VERSION } from "./supervisor/protocol.ts";
export { OPS as CONTROL_OPS, RequestSchema as ControlRequestSchema, ReplySchema as ControlReplySchema } from "./supervisor/ops.ts";
export type { Op as ControlOp, OpResult as ControlOpResult, OpRequestInput as ControlOpRequest } from "./supervisor/ops.ts";
export type { ExecRequest as ControlExecRequest, ExecResult as ControlExecResult, Readiness as ReadinessReport, ReadinessProbe as ReadinessProbeResult, SupervisorStatus, WorkloadResult as LiveWorkloadResult } from "./supervisor/protocol.ts";

/**
 * The microagent library. Explicit, grouped exports: everything the CLI does is reachable here.
 */

// Contract: errors, response shape, backend names.
export { MicroagentError, CommonErrors, ERROR_KINDS, isMicroagentError, toMicroagentError, definedErrorCodes } from "./contract/errors.ts";
export type { ErrorKind, ErrorObject, ErrorSpec } from "./contract/errors.ts";
export type { Response, Verdict } from "./contract/response.ts";
export { BACKENDS, ARCHES, normalizeArch, hostArch } from "./contract/backend.ts";
export type { BackendName, Arch } from "./contract/backend.ts";
export { packageVersion } from "./version.ts";

// Host: doctor and host capability report.

// Kernels.

// Guest channel.

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

// Root filesystems.

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
export { ManifestSchema, readManifest, writeManifest } from "./workspace/manifest.ts";
export type { Manifest, BootSpec, BootFile, NetworkMode } from "./workspace/manifest.ts";
export { PROFILES, PROFILE_NAMES, DEFAULT_PROFILE, resolveResources } from "./workspace/profiles.ts";
export type { ProfileName, ResourceOptions, ResolvedResources } from "./workspace/profiles.ts";
export { processAlive, processStartTime } from "./workspace/process.ts";

/**
 * The microagent library: the small, stable public API. A `Workspace` (create/get/list, then
 * start, exec, files, console, status, halt/stop/kill/quarantine, wait, delete), `run` for one
 * command in a scratch workspace, `doctor`, images and kernels, the request types a remote caller
 * may send, the result types (the same values the CLI prints with `--json`) and the errors.
 *
 * Everything else is under `microagent/internals` and may change without notice. A change to this
 * list is a decision: `test/unit/public-surface.txt` records it.
 */

// First: refuse an unsupported Node with a sentence (module evaluation follows import order).
import "./node-version.ts";

// Workspaces.
export { Workspace, WorkspaceFiles, FILE_READ_MAX_BYTES, FILE_WRITE_MAX_BYTES } from "./api/workspace.ts";
export type { WorkspaceExecOptions } from "./api/workspace.ts";
export { cp, copyIn, copyOut, type CpOptions, type CpResult } from "./api/cp.ts";
export { ExecHandle } from "./api/exec.ts";
export type { ExecOutput, ExecOutcome } from "./api/exec.ts";
export type { StartResult, StopResult, WaitResult } from "./api/lifecycle.ts";
export type { WorkspaceStatus } from "./api/status.ts";
export type { ConsoleConnection } from "./supervisor/client.ts";

// One-shot runs, the host, images and kernels.
export { run, doctor, hostReport, pullImage, loadImage, listImages, removeImage, installKernel, listKernels } from "./api/facade.ts";
export type { RunCallbacks, DoctorRequest } from "./api/facade.ts";
export type { HostResponse, HostSupport, HostCapabilities, CapabilityReport } from "./host/doctor.ts";
export type { HostCheck } from "./host/checks.ts";

// What a caller may send, and what only the host decides.
export { WorkspaceRequestSchema, RunRequestSchema, ExecRequestSchema, ResourcesRequestSchema } from "./api/requests.ts";
export type { WorkspaceRequest, RunRequest, ExecRequest, HostOptions } from "./api/requests.ts";

// The output model: one schema per result (the CLI's --json, later the HTTP API and MCP).
export {
  RESULT_SCHEMAS,
  RunJsonSchema,
  ExecJsonSchema,
  CreateJsonSchema,
  StartJsonSchema,
  StatusJsonSchema,
  StopJsonSchema,
  QuarantineJsonSchema,
  WaitJsonSchema,
  DeleteJsonSchema,
  CpJsonSchema,
  ListJsonSchema,
  EventsJsonSchema,
  LogsJsonSchema,
  ConnectJsonSchema,
  VerificationSchema,
  ImageJsonSchema,
  ImageListJsonSchema,
  KernelListJsonSchema,
  KernelInstallJsonSchema,
  KernelVerifyJsonSchema,
  DoctorJsonSchema,
  VersionJsonSchema,
  ErrorObjectSchema,
  ErrorResultSchema,
} from "./contract/results.ts";
export type {
  ResultCommand,
  RunJson,
  ExecJson,
  CreateJson,
  StartJson,
  StatusJson,
  StopJson,
  QuarantineJson,
  WaitJson,
  DeleteJson,
  CpJson,
  ListJson,
  EventsJson,
  LogsJson,
  ConnectJson,
  ImageJson,
  ImageSummaryJson,
  ImageListJson,
  KernelListJson,
  KernelInstallJson,
  KernelVerifyJson,
  DoctorJson,
  VersionJson,
} from "./contract/results.ts";

// Errors: one class, a stable code and kind on every failure.
export { MicroagentError, ERROR_KINDS, isMicroagentError } from "./contract/errors.ts";
export type { ErrorKind, ErrorObject } from "./contract/errors.ts";
export { BACKENDS, ARCHES } from "./contract/backend.ts";
export type { BackendName, Arch } from "./contract/backend.ts";
export { packageVersion } from "./version.ts";

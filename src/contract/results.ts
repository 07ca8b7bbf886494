/**
 * The output model: one zod schema per result a command prints with `--json`. The CLI builds each
 * value through a library function typed by these schemas (src/api/results.ts), and the HTTP API
 * and MCP server will publish the same schemas (`z.toJSONSchema`), so the three never drift apart.
 *
 * One key casing everywhere: camelCase. The single exception is the error object's
 * `correlation_id`, kept because it is part of the published error contract (docs/output.md).
 *
 * Top-level objects are strict (an unlisted key is a contract change, and the schema test catches
 * it); blocks owned by another area (a doctor check, a verification report) are loose, since their
 * own types define them and the test checks their casing separately.
 */
import { z } from "zod";
import { ERROR_KINDS } from "./errors.ts";
import { ARCHES, BACKENDS } from "./backend.ts";

const iso = z.string();
const backend = z.enum(BACKENDS);
const arch = z.enum(ARCHES);
/** Base64 of raw bytes (guest output is not necessarily UTF-8). */
const base64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/);

export const WORKSPACE_STATE_NAMES = ["prepared", "starting", "running", "paused", "stopping", "halted", "stopped", "quarantined", "failed"] as const;
const workspaceState = z.enum(WORKSPACE_STATE_NAMES);

export const ErrorObjectSchema = z.strictObject({
  kind: z.enum(ERROR_KINDS),
  code: z.string(),
  message: z.string(),
  remediation: z.string(),
  retryable: z.boolean(),
  correlation_id: z.string(),
  details: z.record(z.string(), z.unknown()).optional(),
});

/** What a failed command prints instead of its result. */
export const ErrorResultSchema = z.strictObject({ ok: z.literal(false), error: ErrorObjectSchema });

export const EventSchema = z.strictObject({
  state: workspaceState,
  observedAt: iso,
  detail: z.string(),
  identity: z.strictObject({ workspace: z.string(), runtimeId: z.string().optional(), requestId: z.string().optional() }),
});

const accelBlock = z.strictObject({ accel: z.enum(["kvm", "tcg", "hvf", "whpx"]).optional(), accelReason: z.string().optional() });

// ---- run / exec ----

/** `status`'s egress summary and `run --json`'s egress receipt (src/egress/summary.ts). */
export const EgressSummarySchema = z.strictObject({
  mode: z.enum(["guarded", "strict", "off"]),
  allow: z.array(z.string()),
  passthrough: z.array(z.string()),
  mediation: z.array(z.string()),
  mediationRequired: z.boolean(),
  counts: z.strictObject({ allow: z.number().int(), deny: z.number().int() }),
  byType: z.record(z.string(), z.number().int()),
  /** The audit file; null with egress off, and in a run receipt when the workspace was deleted with it. */
  audit: z.string().nullable(),
});

export const RunJsonSchema = z.strictObject({
  workspace: z.string(),
  stateDir: z.string(),
  kept: z.boolean(),
  finalState: workspaceState.optional(),
  /** The guest command's code: 124 timeout, 130 interrupted, 128+n signal, 127 never started. */
  exitCode: z.number().int(),
  timedOut: z.boolean(),
  interrupted: z.boolean(),
  result: z.strictObject({
    startedAt: iso.optional(),
    exitedAt: iso.optional(),
    exitCode: z.number().int().optional(),
    signal: z.string().optional(),
    startError: z.string().optional(),
    stdout: base64,
    stderr: base64,
  }),
  host: accelBlock,
  /** The warm snapshot of this machine: restored instead of a cold boot, or captured during it. Absent with --cold. */
  warm: z.strictObject({ key: z.string(), restored: z.boolean() }).optional(),
  timingsMs: z.strictObject({ create: z.number(), boot: z.number().optional(), total: z.number() }),
  /** User networking: the egress receipt (mode, counts, audit path when kept). */
  egress: EgressSummarySchema.optional(),
});
export type RunJson = z.infer<typeof RunJsonSchema>;

export const EXEC_STATUSES = ["exited", "signaled", "timed_out", "failed_to_start"] as const;

export const ExecJsonSchema = z.strictObject({
  protocolVersion: z.literal("exec.v1"),
  status: z.enum(EXEC_STATUSES),
  exitCode: z.number().int().optional(),
  signal: z.string().optional(),
  stdout: base64,
  stderr: base64,
  stdoutTruncated: z.boolean(),
  stderrTruncated: z.boolean(),
  startedAt: iso,
  completedAt: iso,
  error: z.strictObject({ code: z.enum(EXEC_STATUSES), message: z.string() }).optional(),
});
export type ExecJson = z.infer<typeof ExecJsonSchema>;

// ---- lifecycle ----

export const WaitJsonSchema = z.strictObject({ workspace: z.string(), state: workspaceState, ok: z.boolean(), detail: z.string() });
export type WaitJson = z.infer<typeof WaitJsonSchema>;

export const StartJsonSchema = z.strictObject({
  workspace: z.string(),
  state: workspaceState,
  runtimeId: z.string(),
  supervisorPid: z.number().int(),
  vmmPid: z.number().int().optional(),
  bootMs: z.number().optional(),
  host: accelBlock,
  /** Set when the VM was restored from a snapshot (`--from-snapshot`, or a fork's first start) instead of booted. */
  restoredFrom: z.strictObject({ workspace: z.string(), tag: z.string() }).optional(),
  /** Only with --wait / --wait-timeout. */
  wait: WaitJsonSchema.optional(),
});
export type StartJson = z.infer<typeof StartJsonSchema>;

/** halt, stop and kill. */
export const StopJsonSchema = z.strictObject({ workspace: z.string(), state: workspaceState, previousState: workspaceState, changed: z.boolean() });
export type StopJson = z.infer<typeof StopJsonSchema>;

export const QuarantineJsonSchema = z.strictObject({ workspace: z.string(), state: workspaceState, frozen: z.boolean() });
export type QuarantineJson = z.infer<typeof QuarantineJsonSchema>;
/** `pause`/`resume`: the state after the request and how long the VMM took to stop or start the vCPUs. */
export const PauseJsonSchema = z.strictObject({ workspace: z.string(), state: workspaceState, changed: z.boolean(), ms: z.number() });
export type PauseJson = z.infer<typeof PauseJsonSchema>;

// ---- snapshots ----

/** One snapshot as `snapshot list` and `status` show it; sizes in bytes (the disk layer's allocated bytes). */
export const SnapshotSummarySchema = z.strictObject({
  tag: z.string(),
  createdAt: iso,
  stateBytes: z.number().int().nonnegative(),
  diskBytes: z.number().int().nonnegative(),
  sizeBytes: z.number().int().nonnegative(),
  memoryMib: z.number().int().positive(),
  imageDigest: z.string(),
});
export type SnapshotSummary = z.infer<typeof SnapshotSummarySchema>;

/** `snapshot create`: the snapshot, the state the workspace is left in, and where the time went (ms). */
export const SnapshotCreateJsonSchema = z.strictObject({
  workspace: z.string(),
  snapshot: SnapshotSummarySchema,
  state: workspaceState,
  /** The workspace was paused before (it stays paused either way then). */
  wasPaused: z.boolean(),
  timingsMs: z.strictObject({ pause: z.number(), freezeDisk: z.number(), saveState: z.number(), resume: z.number(), total: z.number() }),
});
export type SnapshotCreateJson = z.infer<typeof SnapshotCreateJsonSchema>;

export const SnapshotListJsonSchema = z.strictObject({ workspace: z.string(), snapshots: z.array(SnapshotSummarySchema), totalBytes: z.number().int().nonnegative() });
export type SnapshotListJson = z.infer<typeof SnapshotListJsonSchema>;

export const SnapshotDeleteJsonSchema = z.strictObject({ workspace: z.string(), tag: z.string(), deleted: z.literal(true), freedBytes: z.number().int().nonnegative() });
export type SnapshotDeleteJson = z.infer<typeof SnapshotDeleteJsonSchema>;

/** `cp`: `destination` is where the copy landed (the copied path, or the directory receiving `SRC/.`); `bytes` counts file content. */
export const CpJsonSchema = z.strictObject({
  direction: z.enum(["in", "out"]),
  workspace: z.string(),
  source: z.string(),
  destination: z.string(),
  entries: z.number().int().nonnegative(),
  bytes: z.number().int().nonnegative(),
});
export type CpJson = z.infer<typeof CpJsonSchema>;

export const DeleteJsonSchema = z.strictObject({ name: z.string(), deleted: z.boolean(), killed: z.boolean(), previousState: workspaceState.optional() });
export type DeleteJson = z.infer<typeof DeleteJsonSchema>;

const imageInfo = z.looseObject({ ref: z.string(), resolvedRef: z.string() });
const resources = z.looseObject({ profile: z.string(), memoryMib: z.number(), cpus: z.number(), sizeMib: z.number() });
const network = z.looseObject({ mode: z.string() });

export const CreateJsonSchema = z.strictObject({
  workspace: z.string(),
  state: workspaceState,
  event: EventSchema,
  backend,
  arch,
  image: imageInfo,
  resources,
  network,
  /** The secret references recorded (never a value): name, where it is read from, how it is delivered. */
  secrets: z.array(z.strictObject({ name: z.string(), source: z.string(), delivery: z.enum(["file", "swap"]), hosts: z.array(z.string()) })),
  boot: z.strictObject({ argv: z.array(z.string()), setup: z.array(z.string()), hostname: z.string(), files: z.array(z.string()) }),
  artifacts: z.record(z.string(), z.unknown()),
  rootfsCacheHit: z.boolean(),
  /** Milliseconds per step, one decimal. */
  timings: z.record(z.string(), z.number()),
  /** A fork (`--from-snapshot`): the snapshot it was made from. */
  fromSnapshot: z.strictObject({ workspace: z.string(), tag: z.string() }).optional(),
  /** A fork restored at once: the start's result (with `restoredFrom`). */
  start: StartJsonSchema.optional(),
});
export type CreateJson = z.infer<typeof CreateJsonSchema>;

const artifactCheck = z.strictObject({ path: z.string(), recordedSha256: z.string(), sha256: z.string().optional(), checked: z.boolean() });
export const VerificationSchema = z.strictObject({
  ok: z.boolean(),
  imageRef: z.string(),
  resolvedRef: z.string(),
  imageDigest: z.string(),
  kernel: artifactCheck,
  init: artifactCheck,
  rootfs: artifactCheck,
  config: artifactCheck,
  divergence: z.array(
    z.strictObject({ artifact: z.string(), field: z.enum(["sha256", "exists"]), expected: z.string(), actual: z.string(), path: z.string(), error: z.string().optional() }),
  ),
});

export const StatusJsonSchema = z.strictObject({
  ok: z.boolean(),
  backend,
  event: EventSchema,
  verification: VerificationSchema.optional(),
  readiness: z.looseObject({ ready: z.boolean(), reason: z.string().optional() }),
  /** User networking: egress mode, lists and the audit counted. */
  egress: EgressSummarySchema.optional(),
  result: z
    .object({
      runtimeId: z.string().optional(),
      status: z.enum(EXEC_STATUSES),
      exitCode: z.number().int().nullable(),
      signal: z.string().optional(),
      error: z.string().optional(),
      startedAt: iso.optional(),
      completedAt: iso,
    })
    .optional(),
  workspace: z.strictObject({
    name: z.string(),
    dir: z.string(),
    state: workspaceState,
    createdAt: iso,
    image: imageInfo,
    resources,
    network,
    arch,
    boot: z.strictObject({ argv: z.array(z.string()), hostname: z.string(), setup: z.array(z.string()), files: z.number().int() }),
    runtime: z
      .strictObject({ runtimeId: z.string(), supervisorPid: z.number().int(), vmmPid: z.number().int().optional(), accel: z.string(), startedAt: iso })
      .optional(),
  }),
  /** The workspace's snapshots, oldest first, with their sizes. */
  snapshots: z.array(SnapshotSummarySchema).optional(),
});
export type StatusJson = z.infer<typeof StatusJsonSchema>;

export const WorkspaceSummarySchema = z.strictObject({
  name: z.string(),
  state: z.union([workspaceState, z.literal("unknown")]),
  observedAt: iso.optional(),
  detail: z.string().optional(),
  backend: z.string().optional(),
  profile: z.string().optional(),
  network: z.string().optional(),
  image: z.string().optional(),
  imageDigest: z.string().optional(),
  createdAt: iso.optional(),
  error: z.string().optional(),
});
/** list and ps. */
export const ListJsonSchema = z.strictObject({ workspaces: z.array(WorkspaceSummarySchema) });
export type ListJson = z.infer<typeof ListJsonSchema>;

export const EventsJsonSchema = z.strictObject({ events: z.array(EventSchema) });
export type EventsJson = z.infer<typeof EventsJsonSchema>;
/** `logs` (and each line of `logs -f --json`). */
export const LogsJsonSchema = z.strictObject({ logs: z.string() });
export type LogsJson = z.infer<typeof LogsJsonSchema>;

/** `connect --send LINE --json`: what the line printed, without its echo and the next prompt. */
export const ConnectJsonSchema = z.strictObject({ workspace: z.string(), sent: z.string(), output: z.string() });
export type ConnectJson = z.infer<typeof ConnectJsonSchema>;

// ---- images ----

const platform = z.strictObject({ os: z.string(), architecture: z.string(), variant: z.string().optional() });

export const ImageJsonSchema = z.strictObject({
  ref: z.string(),
  resolvedRef: z.string(),
  digest: z.string(),
  platform,
  configDigest: z.string(),
  sizeBytes: z.number(),
  layers: z.array(z.strictObject({ digest: z.string(), mediaType: z.string(), size: z.number(), compression: z.string() })),
});
/** image pull and image load. */
export type ImageJson = z.infer<typeof ImageJsonSchema>;

export const ImageSummaryJsonSchema = z.strictObject({
  ref: z.string(),
  resolvedRef: z.string(),
  digest: z.string(),
  platform,
  sizeBytes: z.number(),
  source: z.string(),
  createdAt: iso,
  lastUsedAt: iso.optional(),
  complete: z.boolean(),
});
export type ImageSummaryJson = z.infer<typeof ImageSummaryJsonSchema>;
export const ImageListJsonSchema = z.strictObject({ images: z.array(ImageSummaryJsonSchema) });
export type ImageListJson = z.infer<typeof ImageListJsonSchema>;

// ---- kernels ----

export const KernelStatusJsonSchema = z.strictObject({
  status: z.string(),
  backend,
  arch,
  path: z.string(),
  sha256: z.string().optional(),
  initramfsPath: z.string().optional(),
  initramfsSha256: z.string().optional(),
  version: z.string().optional(),
  initSha256: z.string().optional(),
  source: z.looseObject({}).optional(),
  installedAt: iso.optional(),
  error: z.string().optional(),
});
export const KernelListJsonSchema = z.strictObject({ kernels: z.array(KernelStatusJsonSchema) });
export type KernelListJson = z.infer<typeof KernelListJsonSchema>;

export const KernelInstallJsonSchema = z.strictObject({
  action: z.string(),
  backend,
  arch,
  version: z.string(),
  path: z.string(),
  sha256: z.string(),
  initramfsPath: z.string(),
  initramfsSha256: z.string(),
  initSha256: z.string(),
  modules: z.array(z.string()),
  source: z.looseObject({}),
  installedAt: iso,
});
export type KernelInstallJson = z.infer<typeof KernelInstallJsonSchema>;

export const KernelVerifyJsonSchema = z.strictObject({
  path: z.string(),
  sha256: z.string(),
  expectedSha256: z.string().optional(),
  expectedFrom: z.enum(["flag", "manifest"]).optional(),
  ok: z.boolean(),
});
export type KernelVerifyJson = z.infer<typeof KernelVerifyJsonSchema>;

// ---- host ----

export const HostCheckSchema = z.strictObject({ name: z.string(), label: z.string(), ok: z.boolean(), required: z.boolean(), detail: z.string(), remediation: z.string() });

/** One row of the backend capability table: what an implemented backend can do, or that it is not implemented. */
export const BackendCapabilityRowSchema = z.union([
  z.strictObject({
    backend,
    implemented: z.literal(true),
    lifecycle: z.literal(true),
    channel: z.enum(["virtio-serial", "vsock"]).nullable(),
    exec: z.boolean(),
    console: z.boolean(),
    diskFormats: z.array(z.enum(["qcow2", "raw"])),
    networkAttachments: z.array(z.literal("stream")),
    isolated: z.literal(true),
    pause: z.boolean(),
    snapshot: z.boolean(),
  }),
  z.looseObject({ backend, implemented: z.literal(false) }),
]);

/** doctor and host: the response shape with the host block (its probe fields are loose: src/host owns them). */
export const DoctorJsonSchema = z.strictObject({
  ok: z.boolean(),
  verdict: z.enum(["ok", "degraded", "failed"]),
  backend,
  host: z.looseObject({ backend, architecture: arch, checks: z.array(HostCheckSchema) }),
  kernel: KernelStatusJsonSchema,
  /** Every backend this build knows, from the backends themselves (the registry). */
  backends: z.array(BackendCapabilityRowSchema),
});
export type DoctorJson = z.infer<typeof DoctorJsonSchema>;

export const VersionJsonSchema = z.strictObject({ version: z.string(), node: z.string() });
export type VersionJson = z.infer<typeof VersionJsonSchema>;

/** `microagent network NAME`: the fixed fields; the rest (addressing, forwards, counters) is described in docs/cli/network.md. */
export const NetworkJsonSchema = z.looseObject({
  workspace: z.string(),
  mode: z.enum(["user", "isolated"]),
  datapath: z.string(),
  live: z.boolean(),
});
export type NetworkJson = z.infer<typeof NetworkJsonSchema>;

/** Every result schema by the command that prints it (the docs and the schema test iterate this). */
export const RESULT_SCHEMAS = {
  run: RunJsonSchema,
  exec: ExecJsonSchema,
  create: CreateJsonSchema,
  start: StartJsonSchema,
  status: StatusJsonSchema,
  list: ListJsonSchema,
  ps: ListJsonSchema,
  halt: StopJsonSchema,
  stop: StopJsonSchema,
  kill: StopJsonSchema,
  quarantine: QuarantineJsonSchema,
  network: NetworkJsonSchema,
  pause: PauseJsonSchema,
  resume: PauseJsonSchema,
  "snapshot create": SnapshotCreateJsonSchema,
  "snapshot list": SnapshotListJsonSchema,
  "snapshot delete": SnapshotDeleteJsonSchema,
  wait: WaitJsonSchema,
  delete: DeleteJsonSchema,
  cp: CpJsonSchema,
  events: EventsJsonSchema,
  logs: LogsJsonSchema,
  connect: ConnectJsonSchema,
  "image pull": ImageJsonSchema,
  "image load": ImageJsonSchema,
  "image list": ImageListJsonSchema,
  "kernel list": KernelListJsonSchema,
  "kernel install": KernelInstallJsonSchema,
  "kernel verify": KernelVerifyJsonSchema,
  doctor: DoctorJsonSchema,
  host: DoctorJsonSchema,
  version: VersionJsonSchema,
  error: ErrorResultSchema,
} as const;
export type ResultCommand = keyof typeof RESULT_SCHEMAS;

/** Keys that break the camelCase rule on purpose (see the file header). */
export const CASING_EXCEPTIONS: ReadonlySet<string> = new Set(["correlation_id"]);
const CAMEL = /^[a-z][a-zA-Z0-9]*$/;

/**
 * Every object key in `value` that is not camelCase, as dotted paths. Record-valued fields whose
 * keys are data, not names (`details`, a verification's per-file map), are skipped by the caller
 * listing them in `dataKeys`.
 */
export function nonCamelKeys(value: unknown, dataKeys: ReadonlySet<string> = new Set(["details"]), path = ""): string[] {
  if (Array.isArray(value)) return value.flatMap((v, i) => nonCamelKeys(v, dataKeys, `${path}[${i}]`));
  if (value === null || typeof value !== "object") return [];
  const out: string[] = [];
  for (const [k, v] of Object.entries(value)) {
    const p = path ? `${path}.${k}` : k;
    if (!CAMEL.test(k) && !CASING_EXCEPTIONS.has(k)) out.push(p);
    if (!dataKeys.has(k)) out.push(...nonCamelKeys(v, dataKeys, p));
  }
  return out;
}

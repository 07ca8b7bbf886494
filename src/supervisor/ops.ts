/**
 * The control protocol's op table: for every operation the host CLI/library can ask of a
 * supervisor, the zod schema of its request (the fields after `v`, `id`, `op`) and of its result
 * (the `value` of the final `result` line), plus the lines the client may send after the request
 * and the streams the server may answer with. Everything else is derived from this one table: the
 * request-line schema, the server's dispatch (`server.ts`, typed per op), the client's methods
 * (`client.ts`, which validates each result against its op's schema when it decodes it), the
 * TypeScript types, and the published JSON Schema (`docs/control-protocol.schema.json`).
 *
 * Wire names stay as they were (snake_case ops), so a CLI and a supervisor built from different
 * checkouts keep understanding each other for every op both know.
 */
import { z } from "zod";
import { WorkspaceStateSchema } from "../workspace/events.ts";
import {
  Base64,
  ConsoleExitSchema,
  ConsoleInputSchema,
  ExecInputSchema,
  ExecRequestSchema,
  ExecResultSchema,
  ReadinessSchema,
  StatusSchema,
  WorkloadResultSchema,
} from "./protocol.ts";

const TimeoutMs = z.number().int().positive();
const Size = z.number().int().positive().max(1000);

/** `{state}` of a VM that has ended (halt, stop, kill). */
const EndedSchema = z.object({ state: WorkspaceStateSchema });

/** `pause`/`resume`: the state after the request, whether it changed, and how long the VMM took (ms). */
const PauseResultSchema = z.object({ state: z.enum(["paused", "running"]), changed: z.boolean(), ms: z.number().nonnegative() });

/** `snapshot`: what the capture produced (the caller writes the snapshot's manifest from it). */
const SnapshotResultSchema = z.object({
  /** The run state after the capture (`paused` with `leavePaused`, or when it was paused before). */
  state: z.enum(["paused", "running"]),
  wasPaused: z.boolean(),
  /** The frozen disk layer (the VM now writes to `overlayPath`). */
  disk: z.object({ path: z.string(), format: z.enum(["qcow2", "raw"]), virtualSizeBytes: z.number().int().positive() }),
  stateBytes: z.number().int().nonnegative(),
  /** The guest NIC's MAC, when the machine has one. */
  mac: z.string().optional(),
  pauseMs: z.number().nonnegative(),
  freezeMs: z.number().nonnegative(),
  saveMs: z.number().nonnegative(),
  resumeMs: z.number().nonnegative(),
});

interface OpSpec {
  /** One sentence for the docs and the JSON Schema's description. */
  summary: string;
  request: z.ZodObject;
  result: z.ZodType;
  /** Lines the client may send after its request (absent: none). */
  input?: z.ZodType;
  /** Output streams the server may send before the result (absent: none). */
  streams?: readonly ("stdout" | "stderr" | "console")[];
  /** The server sends one `opened` line once the op is set up (console). */
  opened?: boolean;
}

export const OPS = {
  status: {
    summary: "The supervisor's phase, pids, boot id and the workload's result once it has one. Answered without the guest.",
    request: z.strictObject({}),
    result: StatusSchema,
  },
  ping: {
    summary: "Round trip through the guest's event loop (no process started); `guestMs` is the supervisor<->guest part.",
    request: z.strictObject({}),
    result: z.object({ guestMs: z.number() }),
  },
  wait_ready: {
    summary: "Resolve with the status once the guest has accepted its boot config (or fail with why it never will).",
    request: z.strictObject({ timeoutMs: TimeoutMs.optional() }),
    result: StatusSchema,
  },
  readiness: {
    summary: "Real probes: guest handshake, a no-op exec round trip, the shell, the workload result (plus probes services add).",
    request: z.strictObject({ timeoutMs: TimeoutMs.optional() }),
    result: ReadinessSchema,
  },
  exec: {
    summary:
      "Run a command in the guest. With `stream` its output arrives as `output` lines; with `stdinStream` the client sends `stdin` lines then `stdin_eof`; `signal` lines signal the command.",
    request: z.strictObject({ exec: ExecRequestSchema }),
    result: ExecResultSchema,
    input: ExecInputSchema,
    streams: ["stdout", "stderr"],
  },
  attach: {
    summary: "Replay the workload's output so far, follow it, and resolve with its result.",
    request: z.strictObject({}),
    result: WorkloadResultSchema,
    streams: ["stdout", "stderr"],
  },
  wait_result: {
    summary: "Resolve with the workload's result once it has one.",
    request: z.strictObject({}),
    result: WorkloadResultSchema,
  },
  console: {
    summary:
      "Open a PTY in the guest (the workspace shell, or `argv` with env/cwd/user like exec): `opened`, then `console` output lines; the client sends `input`/`resize`/`close` lines. Resolves with how the process ended, when the guest reported it.",
    request: z.strictObject({
      cols: Size.default(80),
      rows: Size.default(24),
      /** A command on the PTY instead of the workspace shell (`exec -t`, `run -t`); its exit is the result. */
      argv: z.array(z.string()).min(1).optional(),
      env: z.record(z.string(), z.string()).optional(),
      cwd: z.string().optional(),
      user: z.string().optional(),
    }),
    result: z.object({ closed: z.literal(true), exit: ConsoleExitSchema.optional() }),
    input: ConsoleInputSchema,
    streams: ["console"],
    opened: true,
  },
  shutdown: {
    summary: "halt: clean guest power-off (fails unless it was clean); stop: ask, then terminate after the timeout. Resolves with the state the VM ended in.",
    request: z.strictObject({ mode: z.enum(["halt", "stop"]), timeoutMs: TimeoutMs.optional() }),
    result: EndedSchema,
  },
  kill: {
    summary: "End the VMM at once; resolves with the state the VM ended in.",
    request: z.strictObject({}),
    result: EndedSchema,
  },
  quarantine: {
    summary: "Sever every host path into the guest (channel, console input, services); the VM is frozen when the VMM can pause it.",
    request: z.strictObject({}),
    result: z.object({ state: z.literal("quarantined"), frozen: z.boolean().optional() }),
  },
  pause: {
    summary: "Freeze the VM's vCPUs (memory, disk, network flows and the channel kept); exec and console are refused until resume. `changed` is false when it was already paused.",
    request: z.strictObject({}),
    result: PauseResultSchema,
  },
  resume: {
    summary: "Thaw a paused VM's vCPUs; the guest continues where it stopped. `changed` is false when it was already running.",
    request: z.strictObject({}),
    result: PauseResultSchema,
  },
  snapshot: {
    summary:
      "Capture the VM: pause it (if running), freeze its disk onto `overlayPath` (the current disk file becomes the snapshot's read-only layer), write memory and device state to `stateFile`, then resume unless `leavePaused`. The caller holds the workspace lock and owns both paths.",
    request: z.strictObject({ stateFile: z.string().min(1), overlayPath: z.string().min(1), leavePaused: z.boolean().default(false), timeoutMs: TimeoutMs.optional() }),
    result: SnapshotResultSchema,
  },
  services: {
    summary: "What each supervisor service (network, egress, snapshots) reports about itself, by service name.",
    request: z.strictObject({}),
    result: z.record(z.string(), z.record(z.string(), z.unknown())),
  },
} as const satisfies Record<string, OpSpec>;

export type Op = keyof typeof OPS;
export const OP_NAMES = Object.keys(OPS) as Op[];

/** The fields an op's request carries besides `v`, `id`, `op`, as the client may write them (defaults optional). */
export type OpRequestInput<K extends Op> = z.input<(typeof OPS)[K]["request"]>;
/** The value of an op's `result` line. */
export type OpResult<K extends Op> = z.infer<(typeof OPS)[K]["result"]>;

const envelope = <K extends Op>(op: K) => ({ v: z.literal(1), id: z.string(), op: z.literal(op) });

/** The first line of every connection: the envelope (`v`, `id`, `op`) and the op's request fields. */
export const RequestSchema = z.discriminatedUnion("op", [
  OPS.status.request.extend(envelope("status")),
  OPS.ping.request.extend(envelope("ping")),
  OPS.wait_ready.request.extend(envelope("wait_ready")),
  OPS.readiness.request.extend(envelope("readiness")),
  OPS.exec.request.extend(envelope("exec")),
  OPS.attach.request.extend(envelope("attach")),
  OPS.wait_result.request.extend(envelope("wait_result")),
  OPS.console.request.extend(envelope("console")),
  OPS.shutdown.request.extend(envelope("shutdown")),
  OPS.kill.request.extend(envelope("kill")),
  OPS.quarantine.request.extend(envelope("quarantine")),
  OPS.pause.request.extend(envelope("pause")),
  OPS.resume.request.extend(envelope("resume")),
  OPS.snapshot.request.extend(envelope("snapshot")),
  OPS.services.request.extend(envelope("services")),
]);
export type Request = z.infer<typeof RequestSchema>;
/** An op's request line as the server sees it after decoding (defaults applied). */
export type OpRequest<K extends Op> = Extract<Request, { op: K }>;
export type RequestInput = z.input<typeof RequestSchema>;

export const ErrorObjectSchema = z.object({
  kind: z.string(),
  code: z.string(),
  message: z.string(),
  remediation: z.string(),
  retryable: z.boolean(),
  correlation_id: z.string(),
  details: z.record(z.string(), z.unknown()).optional(),
});

/**
 * Every line the server sends. The `result` value is checked here only for presence: its shape
 * depends on the op, and the client checks it against that op's result schema (`decodeResult`).
 */
export const ReplySchema = z.discriminatedUnion("type", [
  z.object({ id: z.string(), type: z.literal("result"), value: z.unknown() }),
  z.object({ id: z.string(), type: z.literal("error"), error: ErrorObjectSchema }),
  z.object({ id: z.string(), type: z.literal("output"), stream: z.enum(["stdout", "stderr", "console"]), data: Base64 }),
  z.object({ id: z.string(), type: z.literal("opened") }),
]);
export type Reply = z.infer<typeof ReplySchema>;

/** Why a result did not match its op's schema: the first issue, as `field: problem`. */
export type ResultDecode<K extends Op> = { ok: true; value: OpResult<K> } | { ok: false; field: string; problem: string };

export function decodeResult<K extends Op>(op: K, value: unknown): ResultDecode<K> {
  const r = OPS[op].result.safeParse(value);
  // TypeScript does not correlate OPS[K]["result"] with OpResult<K> for a generic K; the table makes it so.
  if (r.success) return { ok: true, value: r.data as OpResult<K> };
  const issue = r.error.issues[0];
  const field = issue && issue.path.length > 0 ? issue.path.map(String).join(".") : "(the value)";
  return { ok: false, field, problem: issue?.message ?? "schema" };
}

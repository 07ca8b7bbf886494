/**
 * The supervisor's control protocol: newline-delimited JSON over a Unix socket, one request per
 * connection. The client's first line is a Request; the server answers with zero or more stream
 * lines (`output`, `opened`) and ends with exactly one `result` or `error`. Console connections
 * stay open both ways: the client sends `input`/`resize`/`close` lines after the request. An exec
 * with `stdinStream` also stays open: the client sends `stdin` chunks, then `stdin_eof` (and may
 * send `signal` lines for the running command).
 * Every line is validated with zod at decode; a line longer than MAX_LINE_BYTES is a protocol
 * error detected before it is buffered whole.
 */
import { z } from "zod";

export const CONTROL_PROTOCOL_VERSION = 1;
/** Largest accepted line (a 256 KiB chunk base64-encoded plus JSON overhead fits). */
export const MAX_LINE_BYTES = 1024 * 1024;
/** Output chunks are split to at most this many raw bytes per line. */
export const MAX_CHUNK_BYTES = 256 * 1024;
/** Clients send stdin in chunks of at most this many raw bytes per line. */
export const MAX_STDIN_CHUNK_BYTES = 64 * 1024;
/**
 * A non-streamed exec carries its output inside the one result line, which must fit MAX_LINE_BYTES
 * (and the supervisor's small heap): its limits are capped at this many bytes per stream.
 */
export const MAX_INLINE_OUTPUT_BYTES = 256 * 1024;

const Base64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, "base64");

export const ExecRequestSchema = z.strictObject({
  argv: z.array(z.string()).min(1),
  env: z.record(z.string(), z.string()).optional(),
  cwd: z.string().optional(),
  user: z.string().optional(),
  /** Base64 bytes fed to the command's stdin, then EOF (small inputs; large ones use stdinStream). */
  stdin: Base64.optional(),
  /** Stdin follows the request as `stdin` lines, ended by `stdin_eof` (any size, flow-controlled). */
  stdinStream: z.boolean().default(false),
  timeoutMs: z.number().int().positive().optional(),
  stdoutLimitBytes: z.number().int().positive().optional(),
  stderrLimitBytes: z.number().int().positive().optional(),
  /** Send output lines while the command runs (else only the final result carries it). */
  stream: z.boolean().default(false),
});
export type ExecRequest = z.input<typeof ExecRequestSchema>;

export const EXEC_STATUSES = ["exited", "signaled", "timed_out", "failed_to_start"] as const;
export const ExecResultSchema = z.object({
  status: z.enum(EXEC_STATUSES),
  exitCode: z.number().int().optional(),
  signal: z.string().optional(),
  error: z.string().optional(),
  /** Base64 (empty when streamed). */
  stdout: z.string(),
  stderr: z.string(),
  stdoutTruncated: z.boolean(),
  stderrTruncated: z.boolean(),
  startedAt: z.string(),
  completedAt: z.string(),
});
export type ExecResult = z.infer<typeof ExecResultSchema>;

/** The guest workload's result, also written to result.json. */
export const WorkloadResultSchema = z.object({
  exitCode: z.number().int().optional(),
  signal: z.string().optional(),
  startError: z.string().optional(),
  startedAt: z.string().optional(),
  exitedAt: z.string().optional(),
  /** True when the workload ran; false when the boot config had no command (idle). */
  ran: z.boolean(),
});
export type WorkloadResult = z.infer<typeof WorkloadResultSchema>;

export const ReadinessProbeSchema = z.object({
  ready: z.boolean(),
  observedAt: z.string(),
  detail: z.string().optional(),
  error: z.string().optional(),
});
export type ReadinessProbe = z.infer<typeof ReadinessProbeSchema>;
export const ReadinessSchema = z.object({
  guestReady: ReadinessProbeSchema,
  execReady: ReadinessProbeSchema,
  shellReady: ReadinessProbeSchema,
  resultReady: ReadinessProbeSchema,
});
export type Readiness = z.infer<typeof ReadinessSchema>;

export const SUPERVISOR_PHASES = ["booting", "running", "stopping", "quarantined", "exited"] as const;
export type SupervisorPhase = (typeof SUPERVISOR_PHASES)[number];

export const StatusSchema = z.object({
  workspace: z.string(),
  phase: z.enum(SUPERVISOR_PHASES),
  supervisorPid: z.number().int(),
  vmmPid: z.number().int().optional(),
  accel: z.enum(["kvm", "tcg"]).optional(),
  bootId: z.string(),
  startedAt: z.string(),
  /** Milliseconds from supervisor start to the guest accepting its boot config. */
  bootMs: z.number().optional(),
  workload: WorkloadResultSchema.optional(),
});
export type SupervisorStatus = z.infer<typeof StatusSchema>;

export const RequestSchema = z.discriminatedUnion("op", [
  z.strictObject({ v: z.literal(1), id: z.string(), op: z.literal("status") }),
  /** Round trip through the guest's event loop (no process started): `{guestMs}`. */
  z.strictObject({ v: z.literal(1), id: z.string(), op: z.literal("ping") }),
  z.strictObject({ v: z.literal(1), id: z.string(), op: z.literal("wait_ready"), timeoutMs: z.number().int().positive().optional() }),
  z.strictObject({ v: z.literal(1), id: z.string(), op: z.literal("readiness"), timeoutMs: z.number().int().positive().optional() }),
  z.strictObject({ v: z.literal(1), id: z.string(), op: z.literal("exec"), exec: ExecRequestSchema }),
  z.strictObject({ v: z.literal(1), id: z.string(), op: z.literal("attach") }),
  z.strictObject({ v: z.literal(1), id: z.string(), op: z.literal("wait_result") }),
  z.strictObject({
    v: z.literal(1),
    id: z.string(),
    op: z.literal("console"),
    cols: z.number().int().positive().max(1000).default(80),
    rows: z.number().int().positive().max(1000).default(24),
  }),
  z.strictObject({
    v: z.literal(1),
    id: z.string(),
    op: z.literal("shutdown"),
    mode: z.enum(["halt", "stop"]),
    timeoutMs: z.number().int().positive().optional(),
  }),
  z.strictObject({ v: z.literal(1), id: z.string(), op: z.literal("kill") }),
  z.strictObject({ v: z.literal(1), id: z.string(), op: z.literal("quarantine") }),
  /** Each service's describe() (network: addressing, published ports, counters). */
  z.strictObject({ v: z.literal(1), id: z.string(), op: z.literal("services") }),
]);
export type Request = z.infer<typeof RequestSchema>;
export type RequestInput = z.input<typeof RequestSchema>;
export type Op = Request["op"];

/** Lines a console client sends after its request. */
export const ConsoleInputSchema = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("input"), data: Base64 }),
  z.strictObject({ type: z.literal("resize"), cols: z.number().int().positive().max(1000), rows: z.number().int().positive().max(1000) }),
  z.strictObject({ type: z.literal("close") }),
]);
export type ConsoleInput = z.infer<typeof ConsoleInputSchema>;

/** Lines an exec client with `stdinStream` sends after its request. */
export const ExecInputSchema = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("stdin"), data: Base64 }),
  z.strictObject({ type: z.literal("stdin_eof") }),
  /** Deliver a signal to the command's process group (e.g. SIGTERM, SIGINT, SIGKILL). */
  z.strictObject({ type: z.literal("signal"), signal: z.string().regex(/^SIG[A-Z0-9]{1,10}$/, "a signal name like SIGTERM") }),
]);
export type ExecInput = z.infer<typeof ExecInputSchema>;

const ErrorObjectSchema = z.object({
  kind: z.string(),
  code: z.string(),
  message: z.string(),
  remediation: z.string(),
  retryable: z.boolean(),
  correlation_id: z.string(),
  details: z.record(z.string(), z.unknown()).optional(),
});

export const ReplySchema = z.discriminatedUnion("type", [
  z.object({ id: z.string(), type: z.literal("result"), value: z.unknown() }),
  z.object({ id: z.string(), type: z.literal("error"), error: ErrorObjectSchema }),
  z.object({ id: z.string(), type: z.literal("output"), stream: z.enum(["stdout", "stderr", "console"]), data: Base64 }),
  z.object({ id: z.string(), type: z.literal("opened") }),
]);
export type Reply = z.infer<typeof ReplySchema>;

export class LineTooLongError extends Error {}

/**
 * Splits a byte stream into lines without ever holding more than MAX_LINE_BYTES of one line.
 * Pure: feed chunks, get complete lines back.
 */
export class LineDecoder {
  private chunks: Buffer[] = [];
  private size = 0;
  private readonly maxBytes: number;

  constructor(maxBytes = MAX_LINE_BYTES) {
    this.maxBytes = maxBytes;
  }

  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl === -1) break;
      const piece = chunk.subarray(start, nl);
      if (this.size + piece.length > this.maxBytes) throw new LineTooLongError(`control line exceeds ${this.maxBytes} bytes`);
      this.chunks.push(piece);
      lines.push(Buffer.concat(this.chunks, this.size + piece.length).toString("utf8"));
      this.chunks = [];
      this.size = 0;
      start = nl + 1;
    }
    const rest = chunk.subarray(start);
    if (rest.length > 0) {
      if (this.size + rest.length > this.maxBytes) throw new LineTooLongError(`control line exceeds ${this.maxBytes} bytes`);
      this.chunks.push(Buffer.from(rest));
      this.size += rest.length;
    }
    return lines;
  }
}

export function encodeLine(value: unknown): string {
  return `${JSON.stringify(value)}\n`;
}

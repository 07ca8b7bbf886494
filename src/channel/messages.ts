/**
 * The JSON messages of the guest protocol, one zod schema per message, validated at decode: anything
 * the guest sends that does not match is a protocol violation (the guest is untrusted).
 */
import { z } from "zod";
import { ChannelErrors } from "./errors.ts";
import type { BootConfig } from "./boot-config.ts";
import { stopSignalName } from "./boot-config.ts";

const isoTime = z.string().max(64);
const shortText = z.string().max(4096);
const signalName = z.string().max(16);

/** First frame of a session, guest -> host. Checked in two steps so a version mismatch reads as such. */
export const helloVersionSchema = z.object({ type: z.literal("hello"), protocol: z.number().int() }).loose();
export const helloSchema = z.object({
  type: z.literal("hello"),
  protocol: z.number().int(),
  initVersion: z.string().max(64),
  capabilities: z.array(z.string().max(32)).max(64),
  maxFrameBytes: z.number().int().min(1024).max(16 * 1024 * 1024),
  initialWindowBytes: z.number().int().min(1024).max(64 * 1024 * 1024),
  pid1: z.boolean(),
  /** The guest kernel's boot id (changes on every boot). */
  bootId: z.string().max(64).optional(),
  /** Where the boot is: a reconnecting host finds "setup" (steps still running) or "running". */
  state: z.enum(["awaiting-config", "setup", "running", "boot-failed"]),
});
export type Hello = z.infer<typeof helloSchema>;

export const goawaySchema = z.object({ code: z.string().max(64), message: shortText });
export type Goaway = z.infer<typeof goawaySchema>;

/** How a process ended, as the guest reports it. */
const exitFields = {
  exitCode: z.number().int().min(0).max(255).optional(),
  signal: signalName.optional(),
  signalNumber: z.number().int().optional(),
};

export const resultSchema = z.object({
  type: z.literal("result"),
  ...exitFields,
  startedAt: isoTime.optional(),
  exitedAt: isoTime.optional(),
  outputDroppedBytes: z.number().int().min(0).optional(),
  startError: z.object({ code: z.string().max(32), message: shortText }).optional(),
});
export type WorkloadResultMessage = z.infer<typeof resultSchema>;

/** The guest's answer to `resume` (after a snapshot restore): what it applied, and the first failure. */
function resumedSchema() {
  return z.object({
    type: z.literal("resumed"),
    entropyBytes: z.number().int().min(0).max(4096),
    clockStepMs: z.number().int(),
    hostnameSet: z.boolean(),
    networkSet: z.boolean(),
    error: shortText.optional(),
  });
}
export type ResumedMessage = z.infer<ReturnType<typeof resumedSchema>>;

/** The guest's answer to `secrets-wipe` (before a snapshot): how many files it zeroed and removed. */
function secretsWipedSchema() {
  return z.object({ type: z.literal("secrets-wiped"), count: z.number().int().min(0).max(1024), error: shortText.optional() });
}
export type SecretsWipedMessage = z.infer<ReturnType<typeof secretsWipedSchema>>;

/** The guest's answer to `refresh` (after a capture or a restore): secrets delivered, trust files rewritten. */
function refreshedSchema() {
  return z.object({ type: z.literal("refreshed"), secrets: z.number().int().min(0).max(1024), trustFiles: z.number().int().min(0).max(64), error: shortText.optional() });
}
export type RefreshedMessage = z.infer<ReturnType<typeof refreshedSchema>>;

export const guestControlSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("ready"), note: shortText.optional() }),
  z.object({ type: z.literal("workload-started"), pid: z.number().int(), stream: z.number().int().optional(), startedAt: isoTime }),
  resultSchema,
  z.object({
    type: z.literal("boot-failed"),
    // Every stage the guest's boot-config step can fail at (guest/src/serve.c boot_failed callers).
    stage: z.enum(["config", "network", "files", "egressTrust", "secrets", "setup"]),
    index: z.number().int().optional(),
    command: shortText.optional(),
    ...exitFields,
    message: shortText,
  }),
  z.object({ type: z.literal("pong"), id: z.number().int().optional() }),
  z.object({ type: z.literal("shutdown-complete") }),
  resumedSchema(),
  secretsWipedSchema(),
  refreshedSchema(),
]);
export type GuestControlMessage = z.infer<typeof guestControlSchema>;

export const EXEC_STATUSES = ["exited", "signaled", "timed_out", "failed_to_start"] as const;
export type ExecStatus = (typeof EXEC_STATUSES)[number];

export const execExitSchema = z.object({
  type: z.literal("exit"),
  status: z.enum(EXEC_STATUSES),
  ...exitFields,
  errorCode: z.string().max(32).optional(),
  error: shortText.optional(),
  stdoutTruncated: z.boolean(),
  stderrTruncated: z.boolean(),
  startedAt: isoTime,
  exitedAt: isoTime,
});
export type ExecExitMessage = z.infer<typeof execExitSchema>;

export const guestOpenSchema = z.object({ kind: z.literal("workload") });
export const closeSchema = z.object({ error: shortText.optional() }).loose();

/** Parses a JSON payload against a schema; any failure is a protocol violation naming `what`. */
export function decodeJson<T>(payload: Buffer, schema: z.ZodType<T>, what: string): T {
  let raw: unknown;
  try {
    raw = JSON.parse(payload.toString("utf8"));
  } catch (e) {
    throw ChannelErrors.CHANNEL_PROTOCOL_VIOLATION({ message: `${what}: payload is not JSON (${(e as Error).message})`, cause: e });
  }
  const r = schema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw ChannelErrors.CHANNEL_PROTOCOL_VIOLATION({
      message: `${what}: ${issue ? `${issue.path.join(".") || "(root)"}: ${issue.message}` : "invalid"}`,
      details: { issues: r.error.issues.slice(0, 5).map((i) => ({ path: i.path.join("."), message: i.message })) },
    });
  }
  return r.data;
}

export function encodeJson(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value), "utf8");
}

/* ---- host -> guest builders (one per message) ---- */

export interface WelcomeMessage {
  type: "welcome";
  protocol: number;
  maxFrameBytes: number;
  initialWindowBytes: number;
}
export function welcomeMessage(maxFrameBytes: number, initialWindowBytes: number, protocol: number): WelcomeMessage {
  return { type: "welcome", protocol, maxFrameBytes, initialWindowBytes };
}

export function bootConfigMessage(cfg: BootConfig): { type: "boot-config"; config: unknown } {
  return { type: "boot-config", config: { ...cfg, stopSignal: stopSignalName(cfg.stopSignal) } };
}
export function shutdownMessage(timeoutMs: number): { type: "shutdown"; timeoutMs: number } {
  return { type: "shutdown", timeoutMs };
}
/** Host -> guest after a restore: fresh entropy, the host's time, and the identity when it changed (a fork). */
export interface ResumeMessage {
  type: "resume";
  entropyBase64: string;
  timeUnixMs: number;
  hostname?: string;
  network?: Record<string, unknown>;
}
export function resumeMessage(o: Omit<ResumeMessage, "type">): ResumeMessage {
  return { type: "resume", ...o };
}
/** Host -> guest: this boot's secrets again (fresh tmpfs) and, for a fork, its new CA's trust files, rewritten in place. */
export interface RefreshMessage {
  type: "refresh";
  secrets?: Array<{ name: string; contentBase64: string }>;
  trust?: Array<{ path: string; contentBase64: string }>;
}
export function pingMessage(id: number): { type: "ping"; id: number } {
  return { type: "ping", id };
}
export function resizeMessage(cols: number, rows: number): { type: "resize"; cols: number; rows: number } {
  return { type: "resize", cols, rows };
}
export function signalMessage(signal: string): { type: "signal"; signal: string } {
  return { type: "signal", signal };
}

export interface ExecOpenRequest {
  kind: "exec";
  argv: string[];
  env?: string[];
  cwd?: string;
  user?: string;
  stdin: boolean;
  timeoutMs?: number;
  stdoutLimitBytes?: number;
  stderrLimitBytes?: number;
}
export interface ConsoleOpenRequest {
  kind: "console";
  cols: number;
  rows: number;
  argv?: string[];
  env?: string[];
  cwd?: string;
  user?: string;
}

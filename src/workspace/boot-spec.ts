/**
 * Merging what the image says (Entrypoint, Cmd, Env, WorkingDir, User, StopSignal) with what the
 * spec file and flags say, into the workspace's boot spec, and turning that into the boot config
 * the guest's init reads (argv, env as K=V, cwd, user, hostname, shell, stopSignal, setup, files
 * with their content inline). The boot config is written to `boot-config.json` and hashed: files'
 * contents are inside it, so verification covers them too.
 */
import { readFile, stat } from "node:fs/promises";
import { bootConfigSchema, type BootConfig } from "../channel/boot-config.ts";
import { WorkspaceErrors } from "./errors.ts";
import { signalName } from "../util/signals.ts";
import type { BootFile, BootSpec } from "./manifest.ts";

/** The image config fields that matter for booting (a subset of the OCI image config). */
export interface ImageRuntimeConfig {
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Env?: string[] | null;
  WorkingDir?: string;
  User?: string;
  StopSignal?: string;
}

export interface BootOverrides {
  /** A string is shell form (`/bin/sh -c STRING`); a list is exec form. Replaces the image's Entrypoint AND drops its Cmd. */
  entrypoint?: string | string[];
  /** Replaces the image's Cmd (arguments to the entrypoint), like `docker run IMAGE CMD...`. */
  cmd?: string[];
  /**
   * Run the image's own Entrypoint/Cmd when neither `entrypoint` nor `cmd` is given (what `run IMAGE`
   * does). Without it such a workspace boots idle: the init serves exec and the console until halted,
   * which is what a persistent agent workspace wants from an image whose Cmd is, say, a shell.
   */
  imageCommand?: boolean;
  env?: Record<string, string>;
  setup?: string[];
  files?: BootFile[];
  hostname?: string;
  cwd?: string;
  user?: string;
}

export const DEFAULT_SHELL = "/bin/sh";
const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/**
 * The whole boot config, serialized (boot-config.json; it travels as one channel message). Well
 * under the guest's 4 MiB frame limit, and small enough for the supervisor's 24 MiB heap to hold
 * the few copies it makes while encoding it (a 4.8 MB config exhausted it). Every field has its own
 * limit too; this bounds their sum.
 */
export const MAX_BOOT_CONFIG_BYTES = 2 * 1024 * 1024;
/**
 * `files:` content travels base64-encoded inside the boot config, 4 bytes per 3: at most 1.5 MiB
 * of raw content fits (less whatever env, setup and argv take).
 */
export const MAX_BOOT_FILES_BYTES = (MAX_BOOT_CONFIG_BYTES / 4) * 3;

/** A hostname derived from a workspace name: one RFC 1123 label ('_' and '.' become '-'). */
export function hostnameFor(name: string): string {
  return name.replace(/[_.]/g, "-").replace(/^-+|-+$/g, "").slice(0, 63).replace(/-+$/, "") || "microagent";
}

export function mergeBootSpec(name: string, image: ImageRuntimeConfig, o: BootOverrides): BootSpec {
  const shell = [DEFAULT_SHELL];
  let entrypoint: string[];
  let cmd: string[];
  if (o.entrypoint !== undefined) {
    entrypoint = typeof o.entrypoint === "string" ? [DEFAULT_SHELL, "-c", o.entrypoint] : [...o.entrypoint];
    cmd = o.cmd ? [...o.cmd] : [];
  } else if (o.cmd !== undefined || o.imageCommand) {
    entrypoint = [...(image.Entrypoint ?? [])];
    cmd = o.cmd ? [...o.cmd] : [...(image.Cmd ?? [])];
  } else {
    entrypoint = [];
    cmd = [];
  }
  const env: Record<string, string> = {};
  for (const kv of image.Env ?? []) {
    const eq = kv.indexOf("=");
    if (eq > 0) env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  if (env.PATH === undefined) env.PATH = DEFAULT_PATH;
  Object.assign(env, o.env ?? {});
  return {
    argv: [...entrypoint, ...cmd],
    entrypoint,
    cmd,
    env,
    cwd: o.cwd ?? (image.WorkingDir || "/"),
    user: o.user ?? (image.User || ""),
    setup: [...(o.setup ?? [])],
    files: [...(o.files ?? [])],
    hostname: o.hostname ?? hostnameFor(name),
    stopSignal: normalizeSignal(image.StopSignal) ?? "SIGTERM",
    shell,
  };
}

/** "15", "TERM", "sigterm" -> "SIGTERM"; undefined when absent. */
function normalizeSignal(sig: string | undefined): string | undefined {
  if (!sig) return undefined;
  const s = sig.trim().toUpperCase();
  const byNumber = /^[0-9]+$/.test(s) ? signalName(Number(s)) : undefined;
  if (byNumber) return byNumber;
  return s.startsWith("SIG") ? s : `SIG${s}`;
}

/** The boot config as the guest's init reads it: the channel's schema, defaults applied. */
export type GuestBootConfig = BootConfig;

/** Build the guest boot config, reading each file's content (and checking it still matches its hash). */
export async function buildGuestBootConfig(boot: BootSpec): Promise<GuestBootConfig> {
  const files: Array<{ path: string; contentBase64: string; mode: number }> = [];
  let total = 0;
  for (const f of boot.files) {
    // Sizes first: a huge source is refused without being read into memory.
    total += (await stat(f.source)).size;
    if (total > MAX_BOOT_FILES_BYTES) throw filesTooBig(total, f.source);
  }
  total = 0;
  for (const f of boot.files) {
    const content = await readFile(f.source);
    total += content.length;
    if (total > MAX_BOOT_FILES_BYTES) throw filesTooBig(total, f.source); // grew since the stat
    files.push({ path: f.target, contentBase64: content.toString("base64"), mode: f.mode });
  }
  const parsed = bootConfigSchema.safeParse({
    argv: boot.argv,
    env: Object.entries(boot.env).map(([k, v]) => `${k}=${v}`),
    cwd: boot.cwd,
    ...(boot.user ? { user: boot.user } : {}),
    hostname: boot.hostname,
    shell: boot.shell[0] ?? DEFAULT_SHELL,
    stopSignal: boot.stopSignal,
    setup: boot.setup,
    files,
  });
  if (!parsed.success) {
    // Only reachable through values the earlier checks let through (e.g. an image's odd User).
    const issue = parsed.error.issues[0];
    throw WorkspaceErrors.SPEC_INVALID({
      message: `the boot config is invalid at ${issue?.path.join(".") ?? "?"}: ${issue?.message ?? "invalid"}`,
      remediation: "Fix the named field (from the flags, the spec file or the image config).",
    });
  }
  assertBootConfigSize(parsed.data);
  return parsed.data;
}

function filesTooBig(total: number, at: string) {
  return WorkspaceErrors.SPEC_INVALID({
    message: `files: together they are ${total} bytes or more (at ${at}), over the ${MAX_BOOT_FILES_BYTES}-byte limit: files travel base64-encoded inside the ${MAX_BOOT_CONFIG_BYTES}-byte boot config`,
    remediation: "Keep files: small (configs, scripts); put large data in the image or fetch it in setup:.",
    details: { filesBytes: total, limitBytes: MAX_BOOT_FILES_BYTES },
  });
}

/** Refuse a boot config whose serialized size is over MAX_BOOT_CONFIG_BYTES, naming the big parts. */
export function assertBootConfigSize(config: GuestBootConfig): void {
  const bytes = Buffer.byteLength(JSON.stringify(config));
  if (bytes <= MAX_BOOT_CONFIG_BYTES) return;
  const sum = (xs: readonly string[]) => xs.reduce((n, x) => n + Buffer.byteLength(x), 0);
  const parts = {
    env: sum(config.env),
    setup: sum(config.setup),
    argv: sum(config.argv ?? []),
    files: sum(config.files.map((f) => f.contentBase64)),
  };
  const named = Object.entries(parts)
    .filter(([, n]) => n > 0)
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${k} ${n}`)
    .join(", ");
  throw bootConfigTooBig(bytes, named, parts);
}

export function bootConfigTooBig(bytes: number, named: string, parts: Record<string, number> = {}) {
  return WorkspaceErrors.SPEC_INVALID({
    message: `the boot config is ${bytes} bytes, over the limit of ${MAX_BOOT_CONFIG_BYTES} bytes${named ? ` (${named})` : ""}; it is sent to the guest in one message at every boot`,
    remediation: "Make env:, setup: and files: smaller: put large values in the image, in a file fetched by setup:, or in the workspace's disk.",
    details: { bytes, limitBytes: MAX_BOOT_CONFIG_BYTES, ...parts },
  });
}

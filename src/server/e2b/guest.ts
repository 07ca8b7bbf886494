/**
 * What envd does inside an E2B sandbox, done from the host through the workspace's exec channel:
 * each file operation is one small POSIX sh script (busybox and GNU userlands both run them), so
 * no agent of E2B's is needed in the guest. Scripts signal outcomes by exit code (below), print
 * machine-readable lines, and take every path as a positional argument, never spliced into code.
 *
 * Relative paths resolve from the user's home, as envd does: the exec starts in $HOME when the
 * guest knows the user, and `home` below finds it from /etc/passwd otherwise.
 */
import type { Buffer } from "node:buffer";
import { FILE_WRITE_MAX_BYTES, type Workspace } from "../../api/workspace.ts";
import { E2bErrors } from "./errors.ts";

/** Exit codes the scripts use for the outcomes the protocol distinguishes. */
const NOT_FOUND = 3;
const WRONG_TYPE = 4;
const EXISTS = 5;

const PRELUDE = [
  `[ -n "$HOME" ] || HOME=$(awk -F: -v u="$(id -u)" '$3==u{print $6; exit}' /etc/passwd 2>/dev/null)`,
  `export HOME`,
  `cd "$HOME" 2>/dev/null || cd /`,
  `abs() { case $1 in /*) printf %s "$1" ;; *) printf %s "$PWD/$1" ;; esac; }`,
].join("\n");

/** `stat -c` fields, tab separated, the name last (it may hold tabs of its own). */
const STAT_FORMAT = "%F\t%s\t%a\t%A\t%U\t%G\t%Y\t%n";

/** A sh function printing one entry: its stat line and, for a symlink, a `<TAB>L<TAB>target` line. */
const ENTRY_FN = `entry() { stat -c "$F" "$1" || return 1; if [ -L "$1" ]; then printf '\\tL\\t%s\\n' "$(readlink -f "$1")"; fi; }`;
const SYMLINK_LINE = "\tL\t";

export interface EntryInfo {
  name: string;
  type: "FILE_TYPE_FILE" | "FILE_TYPE_DIRECTORY" | "FILE_TYPE_SYMLINK" | "FILE_TYPE_UNSPECIFIED";
  path: string;
  size: string;
  mode: number;
  permissions: string;
  owner: string;
  group: string;
  modifiedTime: string;
  /** A symlink's target, resolved to an absolute path (as envd reports it). */
  symlinkTarget?: string;
}

export interface GuestOpOptions {
  user?: string | undefined;
}

interface ScriptResult {
  exitCode: number;
  stdout: Buffer;
  stderr: string;
}

/** Run one script; a start failure (the user does not exist, ...) becomes its own error. */
export async function runScript(ws: Workspace, script: string, args: readonly string[], opts: GuestOpOptions & { stdin?: Buffer; stdoutLimitBytes?: number } = {}): Promise<ScriptResult> {
  const r = await ws.exec(["/bin/sh", "-c", `${PRELUDE}\n${script}`, "e2b", ...args], {
    ...(opts.user ? { user: opts.user } : {}),
    ...(opts.stdin ? { stdin: opts.stdin } : {}),
    stdoutLimitBytes: opts.stdoutLimitBytes ?? 16 * 1024 * 1024,
    stderrLimitBytes: 64 * 1024,
    timeoutMs: 120_000,
  });
  if (r.status === "failed_to_start") throw startFailure(r.error ?? "the guest could not start the command", opts.user);
  if (r.status !== "exited") throw E2bErrors.E2B_GUEST_OP_FAILED({ message: `the guest file operation ${r.status === "timed_out" ? "timed out" : `was killed by ${r.signal}`}` });
  return { exitCode: r.exitCode ?? 1, stdout: r.stdout, stderr: r.stderr.toString("utf8").trim() };
}

/** A failed start: a missing user is named as such (never a silent fallback to root). */
export function startFailure(reason: string, user: string | undefined) {
  if (user && /user .* not found|unknown user|no such user/i.test(reason)) {
    return E2bErrors.E2B_USER_NOT_FOUND({ message: `user '${user}' does not exist in the sandbox: ${reason}`, details: { user } });
  }
  return E2bErrors.E2B_COMMAND_FAILED_TO_START({ message: `the command could not start in the sandbox: ${reason}` });
}

function check(r: ScriptResult, path: string, what: string): void {
  if (r.exitCode === 0) return;
  if (r.exitCode === NOT_FOUND) throw E2bErrors.E2B_PATH_NOT_FOUND({ message: `path '${path}' does not exist`, details: { path } });
  if (r.exitCode === EXISTS) throw E2bErrors.E2B_PATH_EXISTS({ message: `path '${path}' already exists`, details: { path } });
  if (r.exitCode === WRONG_TYPE) {
    throw what === "list"
      ? E2bErrors.E2B_NOT_A_DIRECTORY({ message: `path '${path}' is not a directory`, details: { path } })
      : E2bErrors.E2B_NOT_A_FILE({ message: `path '${path}' is a directory`, details: { path } });
  }
  throw E2bErrors.E2B_GUEST_OP_FAILED({ message: `${what} '${path}' failed in the sandbox: ${r.stderr.split("\n").at(-1) || `exit code ${r.exitCode}`}`, details: { path } });
}

export function parseStatLine(line: string): EntryInfo | undefined {
  const parts = line.split("\t");
  if (parts.length < 8) return undefined;
  const [kind, size, octal, perms, owner, group, mtime] = parts as [string, string, string, string, string, string, string];
  const path = parts.slice(7).join("\t");
  const type = kind.startsWith("regular") ? "FILE_TYPE_FILE" : kind === "directory" ? "FILE_TYPE_DIRECTORY" : kind === "symbolic link" ? "FILE_TYPE_SYMLINK" : "FILE_TYPE_UNSPECIFIED";
  const name = path === "/" ? "/" : (path.replace(/\/+$/, "").split("/").at(-1) ?? path);
  return {
    name,
    type,
    path,
    size: String(Number(size) || 0),
    mode: parseInt(octal, 8) || 0,
    permissions: perms,
    owner,
    group,
    modifiedTime: new Date((Number(mtime) || 0) * 1000).toISOString(),
  };
}

function parseStatOutput(out: Buffer): EntryInfo[] {
  const entries: EntryInfo[] = [];
  for (const line of out.toString("utf8").split("\n")) {
    if (line.startsWith(SYMLINK_LINE)) {
      const last = entries.at(-1);
      if (last) last.symlinkTarget = line.slice(SYMLINK_LINE.length);
      continue;
    }
    const e = line ? parseStatLine(line) : undefined;
    if (e) entries.push(e);
  }
  return entries;
}

export async function stat(ws: Workspace, path: string, opts: GuestOpOptions = {}): Promise<EntryInfo> {
  const r = await runScript(ws, `${ENTRY_FN}\nF=$2; p=$(abs "$1"); [ -e "$p" ] || [ -L "$p" ] || exit ${NOT_FOUND}; entry "$p"`, [path, STAT_FORMAT], opts);
  check(r, path, "stat");
  const [entry] = parseStatOutput(r.stdout);
  if (!entry) throw E2bErrors.E2B_GUEST_OP_FAILED({ message: `stat '${path}' printed nothing the server could read`, details: { path } });
  return entry;
}

export async function listDir(ws: Workspace, path: string, depth: number, opts: GuestOpOptions = {}): Promise<EntryInfo[]> {
  const script = `${ENTRY_FN}\nF=$2; p=$(abs "$1"); [ -e "$p" ] || exit ${NOT_FOUND}; [ -d "$p" ] || exit ${WRONG_TYPE}
find "$p" -mindepth 1 -maxdepth "$3" | while IFS= read -r f; do entry "$f"; done`;
  const r = await runScript(ws, script, [path, STAT_FORMAT, String(depth)], opts);
  check(r, path, "list");
  return parseStatOutput(r.stdout).sort((a, b) => a.path.localeCompare(b.path));
}

export async function makeDir(ws: Workspace, path: string, opts: GuestOpOptions = {}): Promise<EntryInfo> {
  const r = await runScript(ws, `p=$(abs "$1"); [ -e "$p" ] && exit ${EXISTS}; mkdir -p "$p" || exit 1; exec stat -c "$2" "$p"`, [path, STAT_FORMAT], opts);
  check(r, path, "mkdir");
  return parseStatOutput(r.stdout)[0]!;
}

export async function move(ws: Workspace, source: string, destination: string, opts: GuestOpOptions = {}): Promise<EntryInfo> {
  const script = `s=$(abs "$1"); d=$(abs "$2"); [ -e "$s" ] || [ -L "$s" ] || exit ${NOT_FOUND}
mkdir -p "$(dirname "$d")" && mv "$s" "$d" || exit 1; exec stat -c "$3" "$d"`;
  const r = await runScript(ws, script, [source, destination, STAT_FORMAT], opts);
  check(r, source, "move");
  return parseStatOutput(r.stdout)[0]!;
}

export async function remove(ws: Workspace, path: string, opts: GuestOpOptions = {}): Promise<void> {
  // Removing what is not there succeeds, as envd's does (rm -rf).
  const r = await runScript(ws, `p=$(abs "$1"); exec rm -rf "$p"`, [path], opts);
  check(r, path, "remove");
}

/** The file's bytes (a directory or a missing path is its own error). */
export async function readFile(ws: Workspace, path: string, opts: GuestOpOptions = {}): Promise<Buffer> {
  const limit = 64 * 1024 * 1024;
  const r = await runScript(ws, `p=$(abs "$1"); [ -e "$p" ] || exit ${NOT_FOUND}; [ -d "$p" ] && exit ${WRONG_TYPE}; exec cat "$p"`, [path], { ...opts, stdoutLimitBytes: limit });
  check(r, path, "read");
  return r.stdout;
}

/**
 * Create or replace a file, creating missing parent directories as envd does. One exec carries at
 * most FILE_WRITE_MAX_BYTES (the content rides in one control message), so larger files go in
 * appended parts. Returns the absolute path.
 */
export async function writeFile(ws: Workspace, path: string, data: Buffer, opts: GuestOpOptions = {}): Promise<string> {
  const script = `p=$(abs "$1"); [ -d "$p" ] && exit ${WRONG_TYPE}; mkdir -p "$(dirname "$p")" || exit 1
if [ "$2" = append ]; then cat >> "$p"; else cat > "$p"; fi || exit 1; printf %s "$p"`;
  let abs = path;
  let offset = 0;
  do {
    const part = data.subarray(offset, offset + FILE_WRITE_MAX_BYTES);
    const r = await runScript(ws, script, [path, offset === 0 ? "truncate" : "append"], { ...opts, stdin: part });
    check(r, path, "write");
    abs = r.stdout.toString("utf8");
    offset += part.length;
  } while (offset < data.length);
  return abs;
}

/**
 * `cp`: copy files and directory trees between the host and a running workspace, docker-cp style.
 *
 * Transport: the existing exec with streamed stdin/stdout, flow controlled end to end, so any size
 * is copied in bounded memory. Into the guest, our own tar writer (cp-tar.ts) feeds the guest's
 * `tar -x -f - -C DIR`; out of it, the guest's `tar -c -f - -C DIR NAME` is read by the project's
 * bounded tar reader and applied by cp-extract.ts under staging's path-safety rules. Only flags that
 * both busybox tar and GNU tar accept are used (`-x`/`-c`, `-f -`, `-C DIR`). The guest commands
 * run as uid 0, as docker's do, whatever the image's user.
 *
 * Destination rules (docker's): a destination that is an existing directory receives the source
 * under its own name; otherwise the source is copied to that name (its parent must exist); `SRC/.`
 * copies a directory's contents. See docs/cli/cp.md.
 */
import { lstatSync, statSync, type Stats } from "node:fs";
import { basename, dirname, posix, resolve } from "node:path";
import { Buffer } from "node:buffer";
import { SupervisorErrors } from "../supervisor/errors.ts";
import type { CpJson } from "../contract/results.ts";
import { WORKSPACE_NAME_PATTERN } from "../workspace/paths.ts";
import { CpErrors } from "./errors.ts";
import { extractTar } from "./cp-extract.ts";
import { planHostTree, writeTar } from "./cp-tar.ts";
import { Workspace } from "./workspace.ts";
import type { ExecOutcome } from "./exec.ts";

export interface CpOptions {
  /** docker's `-a`: into the guest, keep the host uid/gid (else root:root); out of it, keep the guest's (host root only). */
  archive?: boolean;
  /** docker's `-L`: follow SRC itself when it is a symlink (links below it are copied as links). */
  followLink?: boolean;
  /** Bound for each guest command (the tar runs as one exec). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** What a copy did (the `cp --json` result, see CpJsonSchema). */
export type CpResult = CpJson;

/** One side of a `cp` argument pair. */
export type CpEndpoint = { kind: "host"; path: string } | { kind: "guest"; workspace: string; path: string };

/**
 * `NAME:/path` is a guest path; anything else is a host path (write `./a:b` for a host file with a
 * colon in its name). Guest paths must be absolute.
 */
export function parseEndpoint(arg: string): CpEndpoint {
  const colon = arg.indexOf(":");
  const name = colon > 0 ? arg.slice(0, colon) : "";
  if (colon > 0 && !arg.startsWith("/") && !arg.startsWith(".") && WORKSPACE_NAME_PATTERN.test(name)) {
    const path = arg.slice(colon + 1);
    if (!path.startsWith("/") || path.includes("\0"))
      throw CpErrors.CP_USAGE({ message: `the guest path in '${arg}' must be absolute (${name}:/path)` });
    return { kind: "guest", workspace: name, path };
  }
  if (arg === "" || arg.includes("\0")) throw CpErrors.CP_USAGE({ message: `'${arg}' is not a path` });
  return { kind: "host", path: arg };
}

/** Copy between the host and a workspace; exactly one of `src`/`dst` names the workspace. */
export async function cp(src: string, dst: string, opts: CpOptions & { stateDir?: string } = {}): Promise<CpResult> {
  const s = parseEndpoint(src);
  const d = parseEndpoint(dst);
  if (s.kind === d.kind)
    throw CpErrors.CP_USAGE({ message: s.kind === "host" ? `neither '${src}' nor '${dst}' names a workspace (NAME:/path)` : `both '${src}' and '${dst}' name a workspace; copy through the host in two steps` });
  const name = s.kind === "guest" ? s.workspace : (d as { workspace: string }).workspace;
  const ws = await connect(name, opts.stateDir);
  return s.kind === "host" ? copyIn(ws, s.path, d.path, opts) : copyOut(ws, s.path, d.path, opts);
}

/** The running workspace, or CP_WORKSPACE_NOT_RUNNING naming its state and the command that fixes it. */
export async function connect(name: string, stateDir?: string): Promise<Workspace> {
  try {
    return await Workspace.connect(name, stateDir ? { stateDir } : {});
  } catch (e) {
    if (SupervisorErrors.NOT_RUNNING.is(e)) {
      const state = (e.details as { state?: string } | undefined)?.state;
      const remedy = state === "paused" ? `Resume it: \`microagent resume ${name}\`.` : `Start it: \`microagent start ${name}\`.`;
      throw CpErrors.CP_WORKSPACE_NOT_RUNNING({ message: `cannot copy: workspace ${name} is ${state ?? "not running"}`, remediation: remedy, details: { workspace: name, ...(state ? { state } : {}) }, cause: e });
    }
    throw e;
  }
}

/** The guest probe's answer for one path. */
type GuestKind = "dir" | "file" | "link" | "missing" | "noparent";

const PROBE = [
  'p=$1; if [ "$3" = follow ]; then r=$(readlink -f "$p" 2>/dev/null) && [ -n "$r" ] && p=$r; fi',
  'if [ "$3" != follow ] && [ -L "$p" ]; then k=link; elif [ -d "$p" ]; then k=dir; elif [ -e "$p" ]; then k=file; elif [ -d "$2" ]; then k=missing; else k=noparent; fi',
  "printf '%s\\n%s\\n' \"$k\" \"$p\"",
].join("\n");

async function probe(ws: Workspace, path: string, follow: boolean, opts: CpOptions): Promise<{ kind: GuestKind; resolved: string }> {
  const r = await ws.exec(["/bin/sh", "-c", PROBE, "sh", path, posix.dirname(path), follow ? "follow" : ""], guestOpts(opts, 64 * 1024));
  if (r.status !== "exited" || r.exitCode !== 0) throw tarFailure(ws.name, `inspecting ${path}`, r);
  const [kind, resolved] = r.stdout.toString("utf8").split("\n");
  if (!["dir", "file", "link", "missing", "noparent"].includes(kind ?? "")) throw tarFailure(ws.name, `inspecting ${path}`, r);
  return { kind: kind as GuestKind, resolved: resolved || path };
}

function guestOpts(opts: CpOptions, stdoutLimitBytes: number) {
  return { user: "0:0", stdoutLimitBytes, stderrLimitBytes: 64 * 1024, ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}), ...(opts.signal ? { signal: opts.signal } : {}) };
}

/** `SRC/.` (contents), and the path without the suffix. */
function splitContents(path: string): { path: string; contents: boolean } {
  if (path === "." || path.endsWith("/.")) return { path: path.slice(0, -1) || ".", contents: true };
  return { path, contents: false };
}

function nameOf(path: string, p: typeof posix | { basename: typeof basename } = posix): string {
  const b = p.basename(path.replace(/\/+$/, ""));
  if (b === "" || b === "." || b === "..")
    throw CpErrors.CP_USAGE({ message: `'${path}' names no file to copy by name; use '${path.replace(/\/*$/, "")}/.' to copy a directory's contents` });
  return b;
}

/** The guest side of a copy in: the archive on stdin, then `chmod MODE PATH` for each pair after the directory. */
const EXTRACT = 'tar -x -f - -C "$1" || exit $?; shift; while [ $# -gt 1 ]; do chmod "$1" "$2" || exit $?; shift 2; done';

/** Host -> guest. */
export async function copyIn(ws: Workspace, hostSrc: string, guestDst: string, opts: CpOptions = {}): Promise<CpResult> {
  const { path: srcPath, contents } = splitContents(hostSrc);
  const st = hostStat(srcPath, opts.followLink ?? false);
  const srcIsDir = st.isDirectory();
  if (contents && !srcIsDir) throw CpErrors.CP_NOT_A_DIRECTORY({ message: `${srcPath} is not a directory, so ${hostSrc} names no contents to copy`, details: { path: srcPath } });
  const dst = await probe(ws, guestDst, true, opts);
  const where = `${ws.name}:${guestDst}`;
  let dir: string;
  let top: string;
  let contentsOnly = false;
  if (dst.kind === "dir") {
    dir = guestDst;
    contentsOnly = contents;
    top = contents ? "" : nameOf(resolve(srcPath), { basename });
  } else if (dst.kind === "noparent" || (dst.kind === "missing" && guestDst.endsWith("/") && !srcIsDir)) {
    throw CpErrors.CP_DESTINATION_NOT_FOUND({ message: `${where}: ${dst.kind === "noparent" ? `the directory ${posix.dirname(guestDst)} does not exist` : "the directory does not exist"}`, details: { workspace: ws.name, path: guestDst } });
  } else if (srcIsDir && dst.kind !== "missing") {
    throw CpErrors.CP_TYPE_CONFLICT({ message: `cannot copy the directory ${srcPath} onto ${where}, which is not a directory`, details: { workspace: ws.name, path: guestDst } });
  } else {
    // A missing destination (or an existing file, for a file source) is the new name.
    dir = posix.dirname(guestDst.replace(/\/+$/, "")) || "/";
    top = nameOf(guestDst);
  }
  const plan = planHostTree(srcPath, top, { followTop: opts.followLink ?? false, contentsOnly, ...(opts.archive ? {} : { owner: { uid: 0, gid: 0 } }) });
  let sourceError: unknown;
  const stream = async function* () {
    try {
      yield* writeTar(plan, { repeatDirs: true });
    } catch (e) {
      sourceError = e;
      throw e;
    }
  };
  let r: ExecOutcome;
  try {
    // busybox tar chowns after chmod, which clears setuid/setgid: those modes are set again afterwards.
    const special = plan.filter((e) => e.type !== "symlink" && e.type !== "hardlink" && e.mode & 0o7000).flatMap((e) => [(e.mode & 0o7777).toString(8), posix.join(dir, e.name)]);
    r = await ws.exec(["/bin/sh", "-c", EXTRACT, "sh", dir, ...special], { ...guestOpts(opts, 64 * 1024), stdin: stream() });
  } catch (e) {
    throw sourceError ?? e;
  }
  if (sourceError) throw sourceError;
  if (r.status !== "exited" || r.exitCode !== 0) throw tarFailure(ws.name, `extracting into ${dir}`, r);
  const contentBytes = plan.reduce((n, e) => n + (e.type === "file" ? e.size : 0), 0);
  return { direction: "in", workspace: ws.name, source: hostSrc, destination: `${ws.name}:${contentsOnly ? dir : posix.join(dir, top)}`, entries: plan.length, bytes: contentBytes };
}

/** Guest -> host. */
export async function copyOut(ws: Workspace, guestSrc: string, hostDst: string, opts: CpOptions = {}): Promise<CpResult> {
  const { path: srcPath, contents } = splitContents(guestSrc);
  const src = await probe(ws, srcPath, opts.followLink ?? false, opts);
  if (src.kind === "missing" || src.kind === "noparent")
    throw CpErrors.CP_SOURCE_NOT_FOUND({ message: `${ws.name}:${srcPath}: no such file or directory in the guest`, details: { workspace: ws.name, path: srcPath } });
  const srcIsDir = src.kind === "dir";
  if (contents && !srcIsDir) throw CpErrors.CP_NOT_A_DIRECTORY({ message: `${ws.name}:${srcPath} is not a directory, so ${guestSrc} names no contents to copy`, details: { path: srcPath } });
  const realName = nameOf(src.resolved);
  const srcName = nameOf(srcPath);
  const dstStat = hostStatOrUndefined(hostDst);
  let destDir: string;
  let to: string | undefined;
  if (dstStat?.isDirectory()) {
    destDir = hostDst;
    to = contents ? undefined : srcName;
  } else if (dstStat) {
    if (srcIsDir) throw CpErrors.CP_TYPE_CONFLICT({ message: `cannot copy the directory ${ws.name}:${srcPath} onto ${hostDst}, which is not a directory`, details: { path: hostDst } });
    destDir = dirname(resolve(hostDst));
    to = basename(resolve(hostDst));
  } else {
    const parent = dirname(resolve(hostDst));
    if (hostDst.endsWith("/") && !srcIsDir) throw CpErrors.CP_DESTINATION_NOT_FOUND({ message: `${hostDst}: the directory does not exist`, details: { path: hostDst } });
    if (!hostStatOrUndefined(parent)?.isDirectory()) throw CpErrors.CP_DESTINATION_NOT_FOUND({ message: `${hostDst}: the directory ${parent} does not exist`, details: { path: hostDst } });
    destDir = parent;
    to = basename(resolve(hostDst));
  }
  const argv = to === undefined ? ["tar", "-c", "-f", "-", "-C", src.resolved, "."] : ["tar", "-c", "-f", "-", "-C", posix.dirname(src.resolved), `./${realName}`];
  const abort = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, abort.signal]) : abort.signal;
  const handle = ws.exec(argv, { ...guestOpts(opts, Number.MAX_SAFE_INTEGER), signal });
  const stderr: Buffer[] = [];
  let stderrBytes = 0;
  const stdout = async function* () {
    for await (const c of handle) {
      if (c.stream === "stdout") yield c.data;
      else if (stderrBytes < 64 * 1024) {
        stderr.push(c.data);
        stderrBytes += c.data.length;
      }
    }
  };
  const label = `${ws.name}:${srcPath}`;
  let result;
  try {
    result = await extractTar(stdout(), { destDir, ...(to === undefined ? {} : { rename: { from: realName, to } }), preserveOwner: (opts.archive ?? false) && process.getuid?.() === 0, label });
  } catch (e) {
    abort.abort(new Error("cp: extraction failed"));
    await handle.result.catch(() => {});
    // A tar that failed in the guest explains a short or broken stream better than the reader can.
    const r = await settled(handle.result);
    if (r && (r.status !== "exited" || r.exitCode !== 0) && CpErrors.CP_ARCHIVE_INVALID.is(e)) throw tarFailure(ws.name, `archiving ${srcPath}`, { ...r, stderr: Buffer.concat(stderr) });
    throw e;
  }
  const r = await handle.result;
  if (r.status !== "exited" || r.exitCode !== 0) throw tarFailure(ws.name, `archiving ${srcPath}`, { ...r, stderr: Buffer.concat(stderr) });
  const destination = to === undefined ? destDir : `${destDir.replace(/\/+$/, "")}/${to}`;
  return { direction: "out", workspace: ws.name, source: guestSrc, destination, ...result };
}

async function settled<T>(p: Promise<T>): Promise<T | undefined> {
  try {
    return await p;
  } catch {
    return undefined;
  }
}

function hostStat(path: string, follow: boolean): Stats {
  try {
    return follow ? statSync(path) : lstatSync(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === "ENOENT" || err.code === "ENOTDIR") throw CpErrors.CP_SOURCE_NOT_FOUND({ message: `${path}: no such file or directory on the host`, details: { path }, cause: e });
    throw CpErrors.CP_PERMISSION_DENIED({ message: `${path}: ${err.code ?? err.message}`, details: { path }, cause: e });
  }
}

/** The user's own destination is followed if it is a symlink (it is theirs); entries never are. */
function hostStatOrUndefined(path: string): Stats | undefined {
  try {
    return statSync(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === "ENOENT" || err.code === "ENOTDIR") return undefined;
    throw CpErrors.CP_PERMISSION_DENIED({ message: `${path}: ${err.code ?? err.message}`, details: { path }, cause: e });
  }
}

/** A failed guest command, classified by what its tar said. */
function tarFailure(workspace: string, what: string, r: Pick<ExecOutcome, "status" | "exitCode" | "error" | "stderr">): Error {
  const text = r.stderr.toString("utf8").trim();
  const last = text.split("\n").slice(-3).join("; ");
  const details = { workspace, status: r.status, ...(r.exitCode !== undefined ? { exitCode: r.exitCode } : {}) };
  if (r.status === "failed_to_start")
    return CpErrors.CP_GUEST_TAR_FAILED({ message: `${workspace}: ${what}: the guest has no usable tar or sh (${r.error ?? "failed to start"})`, details });
  if (/no space left on device|disk quota exceeded/i.test(text))
    return CpErrors.CP_DISK_FULL({ message: `${workspace}: ${what}: no space left on the workspace disk (${last})`, details: { ...details, side: "guest" } });
  if (/permission denied|read-only file system|operation not permitted/i.test(text))
    return CpErrors.CP_PERMISSION_DENIED({ message: `${workspace}: ${what}: ${last}`, details });
  if (/no such file or directory/i.test(text)) return CpErrors.CP_SOURCE_NOT_FOUND({ message: `${workspace}: ${what}: ${last}`, details });
  const how = r.status === "exited" ? `exit code ${r.exitCode}` : r.status === "timed_out" ? "timed out" : (r.error ?? r.status);
  return CpErrors.CP_GUEST_TAR_FAILED({ message: `${workspace}: ${what}: ${last || how} (${how})`, details });
}

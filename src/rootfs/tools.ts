/**
 * Locating and running e2fsprogs (mke2fs, debugfs). A missing tool is reported with the seed's
 * wording and fix; a child-process failure is translated here, once, into ROOTFS_MKFS_FAILED with
 * the tool's output tail.
 */
import { dirname } from "node:path";
import { CommonErrors } from "../contract/errors.ts";
import { findExecutable, isExecutableFile, pathDirs } from "../util/exec-path.ts";
import { run, tail, type RunResult } from "../util/run.ts";
import { RootfsErrors } from "./errors.ts";

export { tail };

/** Places e2fsprogs lives when it is not on PATH (sbin dirs, Homebrew's keg-only prefix). */
const EXTRA_DIRS = ["/usr/sbin", "/sbin", "/usr/local/sbin", "/opt/homebrew/opt/e2fsprogs/sbin", "/usr/local/opt/e2fsprogs/sbin"];

function search(name: string, env: NodeJS.ProcessEnv, first: string[] = []): string | undefined {
  return findExecutable(name, [...first, ...pathDirs(env), ...EXTRA_DIRS]);
}

export interface E2fsTools {
  mke2fs: string;
  debugfs: string;
}

/**
 * Resolve mke2fs and debugfs. An explicit mke2fs path must exist; debugfs is looked for next to it
 * first (a Homebrew install keeps both in one keg).
 */
export function resolveE2fsTools(opts: { mke2fs?: string; debugfs?: string }, env: NodeJS.ProcessEnv = process.env): E2fsTools {
  let mke2fs: string | undefined;
  if (opts.mke2fs !== undefined) {
    if (!isExecutableFile(opts.mke2fs))
      throw RootfsErrors.ROOTFS_MKE2FS_MISSING({
        message: `mke2fs not found at ${opts.mke2fs} (rootfs builds fail): the path is not an executable file`,
        details: { path: opts.mke2fs },
      });
    mke2fs = opts.mke2fs;
  } else {
    mke2fs = search("mke2fs", env);
    if (!mke2fs)
      throw RootfsErrors.ROOTFS_MKE2FS_MISSING({
        message: "mke2fs not found (rootfs builds fail): the rootfs builder needs mke2fs to format ext4 disks",
      });
  }
  let debugfs: string | undefined;
  if (opts.debugfs !== undefined) {
    if (!isExecutableFile(opts.debugfs))
      throw RootfsErrors.ROOTFS_DEBUGFS_MISSING({
        message: `debugfs not found at ${opts.debugfs}: the path is not an executable file`,
        details: { path: opts.debugfs },
      });
    debugfs = opts.debugfs;
  } else {
    debugfs = search("debugfs", env, [dirname(mke2fs)]);
    if (!debugfs)
      throw RootfsErrors.ROOTFS_DEBUGFS_MISSING({
        message: "debugfs not found: the rootfs builder needs it (from e2fsprogs) to set owners, modes and device nodes",
      });
  }
  return { mke2fs, debugfs };
}

export type ToolResult = Pick<RunResult, "code" | "signal" | "stdout" | "stderr">;

const OUTPUT_CAP = 256 * 1024;

/**
 * Run a tool to completion, bounded by a timeout; output is capped (the tail is kept). `env` is
 * the child's whole environment (debugfs runs in a fenced one, see mkfs.ts debugfsEnv).
 */
export async function runTool(
  path: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs: number; cwd?: string; signal?: AbortSignal; /** Sees all of stdout (the result keeps only its tail). */ onStdout?: (text: string) => void },
): Promise<ToolResult> {
  const cancelled = () => CommonErrors.INTERRUPTED({ message: "the rootfs build was cancelled", cause: opts.signal?.reason });
  const r = await run(path, args, { env: opts.env, cwd: opts.cwd, timeoutMs: opts.timeoutMs, signal: opts.signal, onStdout: opts.onStdout, maxOutputBytes: OUTPUT_CAP, keep: "tail" });
  const name = path.split("/").pop() ?? path;
  if (r.spawnError) {
    const e = r.spawnError;
    if (e.code === "ENOENT" || e.code === "EACCES") {
      const ctor = name.includes("debugfs") ? RootfsErrors.ROOTFS_DEBUGFS_MISSING : RootfsErrors.ROOTFS_MKE2FS_MISSING;
      throw ctor({ message: `${name} not found at ${path} (rootfs builds fail)`, cause: e, details: { path } });
    }
    throw RootfsErrors.ROOTFS_MKFS_FAILED({ message: `${name} could not be started: ${e.message}`, cause: e, details: { path } });
  }
  if (r.aborted) throw cancelled();
  if (r.timedOut) {
    throw RootfsErrors.ROOTFS_MKFS_FAILED({ message: `${path} did not finish within ${Math.round(opts.timeoutMs / 1000)} s and was killed`, details: { path, output: tail(r.stderr) } });
  }
  return { code: r.code, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Running the host tools the kernel install uses (apt-get, apt-cache, dpkg-deb, depmod, xz). A missing
 * tool is translated here, once, into TOOL_MISSING naming the package that provides it.
 */
import { CommonErrors } from "../contract/errors.ts";
import { SBIN_DIRS, findOnPath } from "../util/exec-path.ts";
import { run } from "../util/run.ts";

/** Which Debian package provides each tool (for the error's fix). */
const PROVIDERS: Record<string, string> = {
  "apt-get": "apt",
  "apt-cache": "apt",
  "dpkg-deb": "dpkg",
  depmod: "kmod",
  xz: "xz-utils",
};

/** Look a tool up on PATH plus the sbin directories unprivileged users often lack on PATH. */
export function whichTool(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  return findOnPath(name, env, SBIN_DIRS);
}

export interface RunResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Run a tool to completion with a timeout; never throws for a non-zero exit (callers decide). */
export async function runTool(name: string, args: readonly string[], opts: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  const path = whichTool(name, opts.env);
  if (!path) {
    const pkg = PROVIDERS[name];
    throw CommonErrors.TOOL_MISSING({
      message: `${name} not found on PATH`,
      remediation: pkg ? `Install ${pkg} (\`apt install ${pkg}\`), or run scripts/setup.` : undefined,
      details: { tool: name },
    });
  }
  const timeoutMs = opts.timeoutMs ?? 300_000;
  // stdout is kept whole (xz decompresses a kernel to it); 1 GiB is far above any kernel or package record.
  const r = await run(path, args, { cwd: opts.cwd, env: opts.env, timeoutMs, maxOutputBytes: 8192, stdoutBytesLimit: 1 << 30 });
  if (r.spawnError) throw CommonErrors.TOOL_MISSING({ message: `cannot run ${name}: ${r.spawnError.message}`, cause: r.spawnError, details: { tool: name } });
  const stdout = r.stdoutBytes ?? Buffer.alloc(0);
  if (r.stdoutOverflow) return { code: 1, stdout, stderr: `${r.stderr}\n(killed: more than ${1 << 30} bytes of output)` };
  return { code: r.code ?? (r.signal ? 128 : 1), stdout, stderr: r.timedOut ? `${r.stderr}\n(killed after ${timeoutMs} ms)` : r.stderr };
}

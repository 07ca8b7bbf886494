/**
 * Running the host tools the kernel install uses (apt-get, apt-cache, dpkg-deb, depmod, xz). A missing
 * tool is translated here, once, into TOOL_MISSING naming the package that provides it.
 */
import { spawn } from "node:child_process";
import { CommonErrors } from "../contract/errors.ts";
import { SBIN_DIRS, findOnPath } from "../util/exec-path.ts";

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
export function runTool(name: string, args: readonly string[], opts: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  const path = whichTool(name, opts.env);
  if (!path) {
    const pkg = PROVIDERS[name];
    return Promise.reject(
      CommonErrors.TOOL_MISSING({
        message: `${name} not found on PATH`,
        remediation: pkg ? `Install ${pkg} (\`apt install ${pkg}\`), or run scripts/setup.` : undefined,
        details: { tool: name },
      }),
    );
  }
  const timeoutMs = opts.timeoutMs ?? 300_000;
  return new Promise((resolve, reject) => {
    const child = spawn(path, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ["ignore", "pipe", "pipe"] });
    const out: Buffer[] = [];
    let err = "";
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => {
      // Keep the tail only: tools can be chatty.
      err = (err + c.toString("utf8")).slice(-8192);
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("error", (e) => {
      clearTimeout(timer);
      reject(CommonErrors.TOOL_MISSING({ message: `cannot run ${name}: ${e.message}`, cause: e, details: { tool: name } }));
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out), stderr: signal === "SIGKILL" ? `${err}\n(killed after ${timeoutMs} ms)` : err });
    });
  });
}

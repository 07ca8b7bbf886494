/**
 * The process table of one sandbox: envd's `process.Process` service on top of workspace exec.
 *
 * Each command runs inside a small sh wrapper that (1) reports its guest pid on stderr before the
 * command starts, which is the Start event and the pid the SDK sees, (2) when the caller asked for
 * stdin, feeds the command from a FIFO in the guest whose write end a `sleep` holds open, so
 * `SendInput` is one exec writing into the FIFO and `CloseStdin` kills the holder (EOF). Signals go
 * to the whole process group (every exec is a session leader in the guest), so a command's children
 * die with it. The exec channel has no streamed stdin today; this needs none.
 */
import { Buffer } from "node:buffer";
import type { Workspace } from "../../api/workspace.ts";
import type { ExecOutcome } from "../../api/exec.ts";
import { E2bErrors } from "./errors.ts";
import { runScript, startFailure } from "./guest.ts";

/** The first bytes the wrapper writes to stderr: a record separator, a tag and the pid. */
const MARKER = "\x1emicroagent-e2b pid ";

const WRAPPER = [
  `s=$1; c=$2; shift 2`,
  // The SDK always asks for "/bin/bash -l -c CMD"; an image without bash gets "/bin/sh -c CMD".
  `if [ "$1" = /bin/bash ] && [ ! -x /bin/bash ]; then shift; [ "$1" = -l ] && shift; set -- /bin/sh "$@"; fi`,
  `[ -n "$HOME" ] || HOME=$(awk -F: -v u="$(id -u)" '$3==u{print $6; exit}' /etc/passwd 2>/dev/null); export HOME`,
  `[ "$c" = 1 ] || cd "$HOME" 2>/dev/null || cd /`,
  `if [ "$s" = 1 ]; then`,
  `  d=\${TMPDIR:-/tmp}/.microagent-e2b-$$`,
  `  mkdir -p "$d" && mkfifo "$d/in" || exit 125`,
  `  sleep 2147483647 > "$d/in" 2>/dev/null < /dev/null &`,
  `  echo $! > "$d/holder"`,
  `  printf '${MARKER.replace("\x1e", "\\036")}%s\\n' $$ >&2`,
  `  "$@" < "$d/in"; rc=$?`,
  `  kill "$(cat "$d/holder")" 2>/dev/null; rm -rf "$d"; exit $rc`,
  `fi`,
  `printf '${MARKER.replace("\x1e", "\\036")}%s\\n' $$ >&2`,
  `exec "$@"`,
].join("\n");

export interface ProcessConfig {
  cmd: string;
  args: string[];
  envs: Record<string, string>;
  cwd?: string;
}

export type ProcessEvent =
  | { start: { pid: number } }
  | { data: { stdout: string } | { stderr: string } }
  | { end: { exitCode: number; exited: boolean; status: string; error?: string } }
  /** Not an envd event: the exec channel broke under the command (the VM is gone); streams are cut. */
  | { lost: { error: string } };

export interface StartOptions {
  config: ProcessConfig;
  tag?: string;
  stdin: boolean;
  user?: string;
  /** Sandbox-wide environment (from create), under the command's own. */
  sandboxEnv: Record<string, string>;
}

export interface ProcessEntry {
  pid: number;
  tag?: string;
  config: ProcessConfig;
  user?: string;
  stdinOpen: boolean;
  /** Writes to the FIFO, one at a time and in order. */
  stdinChain: Promise<void>;
  listeners: Set<(e: ProcessEvent) => void>;
}

export class ProcessTable {
  readonly #ws: Workspace;
  readonly #entries = new Map<number, ProcessEntry>();
  readonly #running = new Set<Promise<unknown>>();

  constructor(ws: Workspace) {
    this.#ws = ws;
  }

  /**
   * Start a command; `listener` gets every event of it, starting with `start` once the guest runs it.
   * Resolves with the pid (after the start event) or throws if it could not start.
   */
  start(opts: StartOptions, listener: (e: ProcessEvent) => void): Promise<number> {
    const argv = [opts.config.cmd, ...opts.config.args];
    const handle = this.#ws.exec(["/bin/sh", "-c", WRAPPER, "e2b", opts.stdin ? "1" : "0", opts.config.cwd ? "1" : "0", ...argv], {
      env: { ...opts.sandboxEnv, ...opts.config.envs },
      ...(opts.config.cwd ? { cwd: opts.config.cwd } : {}),
      ...(opts.user ? { user: opts.user } : {}),
      stdoutLimitBytes: 1024 * 1024 * 1024,
      stderrLimitBytes: 1024 * 1024 * 1024,
    });
    return new Promise<number>((resolve, reject) => {
      let entry: ProcessEntry | undefined;
      let head = Buffer.alloc(0);
      let headDone = false;
      const emit = (e: ProcessEvent) => {
        for (const l of entry?.listeners ?? [listener]) l(e);
      };
      const started = (pid: number) => {
        entry = {
          pid,
          ...(opts.tag ? { tag: opts.tag } : {}),
          config: opts.config,
          ...(opts.user ? { user: opts.user } : {}),
          stdinOpen: opts.stdin,
          stdinChain: Promise.resolve(),
          listeners: new Set([listener]),
        };
        this.#entries.set(pid, entry);
        emit({ start: { pid } });
        resolve(pid);
      };
      const pump = (async () => {
        for await (const chunk of handle) {
          if (chunk.stream === "stderr" && !headDone) {
            head = Buffer.concat([head, chunk.data]);
            const nl = head.indexOf(0x0a);
            if (nl < 0 && head.length < 256) continue;
            headDone = true;
            const line = head.subarray(0, nl < 0 ? 0 : nl).toString("utf8");
            const rest = head.subarray(nl + 1);
            if (line.startsWith(MARKER)) started(Number(line.slice(MARKER.length)));
            else throw E2bErrors.E2B_GUEST_OP_FAILED({ message: "the command wrapper did not report its pid" });
            if (rest.length > 0) emit({ data: { stderr: rest.toString("base64") } });
            continue;
          }
          if (!entry) continue; // output before the start marker cannot happen; drop it rather than misattribute
          emit({ data: chunk.stream === "stdout" ? { stdout: chunk.data.toString("base64") } : { stderr: chunk.data.toString("base64") } });
        }
        return handle.result;
      })();
      const done = pump.then(
        (r) => {
          if (!entry) {
            reject(r.status === "failed_to_start" ? startFailure(r.error ?? "unknown reason", opts.user) : E2bErrors.E2B_COMMAND_FAILED_TO_START({ message: `the command wrapper ended (${describe(r)}) before starting the command${r.stderr.length ? `: ${r.stderr.toString("utf8").trim()}` : ""}` }));
            return;
          }
          this.#entries.delete(entry.pid);
          emit({ end: endEvent(r) });
        },
        (e) => {
          if (!entry) return reject(e);
          this.#entries.delete(entry.pid);
          emit({ lost: { error: e instanceof Error ? e.message : String(e) } });
        },
      );
      this.#running.add(done);
      void done.finally(() => this.#running.delete(done));
    });
  }

  list(): Array<{ config: ProcessConfig; pid: number; tag?: string }> {
    return [...this.#entries.values()].map((e) => ({ config: e.config, pid: e.pid, ...(e.tag ? { tag: e.tag } : {}) }));
  }

  /** The process a selector (`{pid}` or `{tag}`) names. */
  find(selector: { pid?: number; tag?: string } | undefined): ProcessEntry {
    let e: ProcessEntry | undefined;
    if (selector?.pid !== undefined) e = this.#entries.get(Number(selector.pid));
    else if (selector?.tag !== undefined) e = [...this.#entries.values()].find((x) => x.tag === selector.tag);
    if (!e) {
      const what = selector?.pid !== undefined ? `pid ${selector.pid}` : `tag '${selector?.tag ?? ""}'`;
      throw E2bErrors.E2B_PROCESS_NOT_FOUND({ message: `no running command with ${what}`, details: { ...selector } });
    }
    return e;
  }

  /** Attach another listener (the `Connect` RPC). */
  attach(entry: ProcessEntry, listener: (e: ProcessEvent) => void): void {
    entry.listeners.add(listener);
  }

  /** Drop a listener wherever it is attached (its stream closed). */
  unsubscribe(listener: (e: ProcessEvent) => void): void {
    for (const e of this.#entries.values()) e.listeners.delete(listener);
  }

  async sendStdin(entry: ProcessEntry, data: Buffer): Promise<void> {
    if (!entry.stdinOpen) throw E2bErrors.E2B_STDIN_NOT_OPEN({ message: `command ${entry.pid} has no open stdin (start it with stdin: true; closeStdin is final)`, details: { pid: entry.pid } });
    const write = entry.stdinChain.then(async () => {
      const r = await runScript(this.#ws, `f=\${TMPDIR:-/tmp}/.microagent-e2b-$1/in; [ -p "$f" ] || exit 3; exec cat > "$f"`, [String(entry.pid)], { user: entry.user, stdin: data });
      if (r.exitCode === 3) throw E2bErrors.E2B_PROCESS_NOT_FOUND({ message: `command ${entry.pid} is no longer running`, details: { pid: entry.pid } });
      if (r.exitCode !== 0) throw E2bErrors.E2B_GUEST_OP_FAILED({ message: `writing stdin of command ${entry.pid} failed: ${r.stderr || `exit code ${r.exitCode}`}` });
    });
    entry.stdinChain = write.catch(() => {});
    return write;
  }

  async closeStdin(entry: ProcessEntry): Promise<void> {
    if (!entry.stdinOpen) return;
    await entry.stdinChain; // what was sent before the close arrives before EOF
    entry.stdinOpen = false;
    const d = `\${TMPDIR:-/tmp}/.microagent-e2b-$1`;
    await runScript(this.#ws, `[ -f "${d}/holder" ] || exit 0; kill "$(cat "${d}/holder")" 2>/dev/null; exit 0`, [String(entry.pid)], { user: entry.user });
  }

  /** SIGTERM or SIGKILL to the command's process group. */
  async signal(entry: ProcessEntry, signal: "TERM" | "KILL"): Promise<void> {
    const r = await runScript(this.#ws, `kill -s "$2" "-$1" 2>/dev/null || kill -s "$2" "$1"`, [String(entry.pid), signal], { user: entry.user });
    if (r.exitCode !== 0 && this.#entries.has(entry.pid)) {
      throw E2bErrors.E2B_GUEST_OP_FAILED({ message: `sending SIG${signal} to command ${entry.pid} failed: ${r.stderr || `exit code ${r.exitCode}`}` });
    }
  }

  /** Wait for every pump to finish (after the sandbox's VM is gone they end on their own). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.#running]);
  }
}

function describe(r: ExecOutcome): string {
  return r.status === "exited" ? `exit code ${r.exitCode}` : r.status === "signaled" ? `signal ${r.signal}` : r.status;
}

/** envd's EndEvent: Go's ProcessState wording ("exit status N", "signal: killed"), exitCode -1 on a signal. */
function endEvent(r: ExecOutcome): { exitCode: number; exited: boolean; status: string; error?: string } {
  switch (r.status) {
    case "exited":
      return { exitCode: r.exitCode ?? 0, exited: true, status: `exit status ${r.exitCode ?? 0}` };
    case "signaled": {
      const name = (r.signal ?? "SIGKILL").replace(/^SIG/, "").toLowerCase();
      const words: Record<string, string> = { kill: "killed", term: "terminated", int: "interrupt", hup: "hangup" };
      return { exitCode: -1, exited: false, status: `signal: ${words[name] ?? name}` };
    }
    case "timed_out":
      return { exitCode: -1, exited: false, status: "timed out", error: "the command exceeded its time limit" };
    case "failed_to_start":
      return { exitCode: -1, exited: false, status: "failed to start", error: r.error ?? "failed to start" };
  }
}

/**
 * Resolving secret references to values, at every start (and in `secret check`). Values exist only
 * in memory, inside SecretValue, whose every string, JSON and inspect form is redacted: a value that
 * reaches a log line, an event, an error's details or `--json` output by accident shows as
 * "[redacted]". A failure names the secret and its source, never the value (fail closed: the
 * caller refuses the start).
 *
 * Decisions (documented in docs/cli/secret.md):
 * - `env:` is taken verbatim from the given environment.
 * - `file:` follows symlinks (secret mounts of Docker and Kubernetes are symlinks) but the target
 *   must be a regular file: directories, FIFOs, sockets and devices are refused (a FIFO or a tty
 *   would block the start; /dev/urandom would never end). At most SECRET_MAX_BYTES.
 * - `cmd:` runs `/bin/sh -c COMMAND` in its own process group, stdin closed, in the reference's
 *   directory, killed (the whole group) after the timeout or when stdout passes the cap. A non-zero
 *   exit fails with the exit code and the tail of stderr; stdout is never echoed.
 * - `file:` and `cmd:` lose ONE trailing "\n" (or "\r\n"): `echo`, editors and most vault CLIs end
 *   their output with one, and it is never part of a token. `env:` keeps its value as is.
 * - An empty value is refused (an unset CI variable exported as "" is the usual cause).
 * - A swap secret's value must fit in an HTTP header: no CR, LF or NUL (header injection).
 */
import { spawn } from "node:child_process";
import { constants } from "node:fs";
import { open } from "node:fs/promises";
import { inspect } from "node:util";
import type { MicroagentError } from "../contract/errors.ts";
import { isMicroagentError, toMicroagentError } from "../contract/errors.ts";
import { SecretErrors } from "./errors.ts";
import { describeSource, type SecretRef } from "./ref.ts";

export const SECRET_MAX_BYTES = 64 * 1024;
export const SECRET_CMD_TIMEOUT_MS = 10_000;
/** How much of a helper's stderr an error keeps (the tail). */
export const SECRET_STDERR_TAIL_BYTES = 2048;

const REDACTED = "[redacted]";

/**
 * A secret's value. The bytes are reachable only through `reveal()`; every implicit conversion
 * (template strings, String(), JSON.stringify, console.log, util.inspect) yields "[redacted]".
 */
export class SecretValue {
  readonly #bytes: Buffer;

  constructor(bytes: Buffer) {
    this.#bytes = bytes;
  }

  /** Length in bytes (safe to report). */
  get byteLength(): number {
    return this.#bytes.length;
  }

  /** The value itself: for the channel (file delivery) and the mediator (swap) only. */
  reveal(): Buffer {
    return this.#bytes;
  }

  /** Overwrite the bytes with zeros (best effort: copies made by callers are theirs to wipe). */
  wipe(): void {
    this.#bytes.fill(0);
  }

  toString(): string {
    return REDACTED;
  }

  toJSON(): string {
    return REDACTED;
  }

  [Symbol.toPrimitive](): string {
    return REDACTED;
  }

  [inspect.custom](): string {
    return `SecretValue(${REDACTED}, ${this.#bytes.length} bytes)`;
  }
}

export interface ResolvedSecret {
  ref: SecretRef;
  value: SecretValue;
}

export interface SecretResolveOptions {
  /** Environment `env:` reads and `cmd:` runs with (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Default SECRET_CMD_TIMEOUT_MS. */
  cmdTimeoutMs?: number;
  /** Default SECRET_MAX_BYTES. */
  maxBytes?: number;
  signal?: AbortSignal;
}

export interface ResolvedSecretResolveOptions {
  env: NodeJS.ProcessEnv;
  cmdTimeoutMs: number;
  maxBytes: number;
  signal?: AbortSignal;
}

export function resolveSecretOptions(o: SecretResolveOptions = {}): ResolvedSecretResolveOptions {
  return {
    env: o.env ?? process.env,
    cmdTimeoutMs: o.cmdTimeoutMs ?? SECRET_CMD_TIMEOUT_MS,
    maxBytes: o.maxBytes ?? SECRET_MAX_BYTES,
    ...(o.signal ? { signal: o.signal } : {}),
  };
}

/** Resolve one reference, or throw a Secret* error naming it and its source. */
export async function resolveSecret(ref: SecretRef, options: SecretResolveOptions = {}): Promise<ResolvedSecret> {
  const o = resolveSecretOptions(options);
  let bytes: Buffer;
  switch (ref.source.kind) {
    case "env":
      bytes = fromEnv(ref, ref.source.var, o);
      break;
    case "file":
      bytes = stripOneNewline(await fromFile(ref, ref.source.path, o));
      break;
    case "cmd":
      bytes = stripOneNewline(await fromCommand(ref, ref.source.command, ref.source.cwd, o));
      break;
  }
  if (bytes.length === 0) {
    throw SecretErrors.SECRET_INVALID({ message: `${label(ref)}: the value is empty`, details: facts(ref) });
  }
  if (ref.delivery === "swap" && (bytes.includes(0x0d) || bytes.includes(0x0a) || bytes.includes(0x00))) {
    bytes.fill(0);
    throw SecretErrors.SECRET_INVALID({
      message: `${label(ref)}: the value contains a line break or NUL byte, which cannot go in an HTTP header (swap delivery)`,
      details: facts(ref),
    });
  }
  return { ref, value: new SecretValue(bytes) };
}

/** Resolve every reference, failing closed on the first that fails (values resolved so far are wiped). */
export async function resolveSecrets(refs: readonly SecretRef[], options: SecretResolveOptions = {}): Promise<ResolvedSecret[]> {
  const out: ResolvedSecret[] = [];
  try {
    for (const ref of refs) out.push(await resolveSecret(ref, options));
    return out;
  } catch (e) {
    for (const s of out) s.value.wipe();
    throw e;
  }
}

export interface SecretCheck {
  ref: SecretRef;
  ok: boolean;
  /** Size of the value in bytes, when it resolved. */
  bytes?: number;
  error?: MicroagentError;
}

/** Resolve each reference independently, keep only the size, wipe the value (`secret check`). */
export async function checkSecrets(refs: readonly SecretRef[], options: SecretResolveOptions = {}): Promise<SecretCheck[]> {
  const out: SecretCheck[] = [];
  for (const ref of refs) {
    try {
      const { value } = await resolveSecret(ref, options);
      out.push({ ref, ok: true, bytes: value.byteLength });
      value.wipe();
    } catch (e) {
      out.push({ ref, ok: false, error: isMicroagentError(e) ? e : toMicroagentError(e) });
    }
  }
  return out;
}

function label(ref: SecretRef): string {
  return `secret ${ref.name} (${describeSource(ref.source)})`;
}

function facts(ref: SecretRef, more: Record<string, unknown> = {}): Record<string, unknown> {
  return { secret: ref.name, source: describeSource(ref.source), kind: ref.source.kind, ...more };
}

function stripOneNewline(b: Buffer): Buffer {
  if (b.length > 0 && b[b.length - 1] === 0x0a) return b.subarray(0, b.length > 1 && b[b.length - 2] === 0x0d ? -2 : -1);
  return b;
}

function fromEnv(ref: SecretRef, name: string, o: ResolvedSecretResolveOptions): Buffer {
  const v = o.env[name];
  if (v === undefined) {
    throw SecretErrors.SECRET_SOURCE_MISSING({
      message: `${label(ref)}: the environment variable ${name} is not set`,
      remediation: `Export ${name} in the environment microagent runs in, or point the secret at another source.`,
      details: facts(ref),
    });
  }
  const bytes = Buffer.from(v, "utf8");
  if (bytes.length > o.maxBytes) throw tooLarge(ref, o.maxBytes);
  return bytes;
}

function tooLarge(ref: SecretRef, max: number): MicroagentError {
  return SecretErrors.SECRET_TOO_LARGE({ message: `${label(ref)}: the value is larger than ${max} bytes`, details: facts(ref, { maxBytes: max }) });
}

async function fromFile(ref: SecretRef, path: string, o: ResolvedSecretResolveOptions): Promise<Buffer> {
  let fh;
  try {
    // O_NONBLOCK: opening a FIFO must not wait for a writer before fstat can refuse it.
    fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") {
      throw SecretErrors.SECRET_SOURCE_MISSING({ message: `${label(ref)}: the file does not exist`, details: facts(ref), cause: e });
    }
    throw SecretErrors.SECRET_SOURCE_FAILED({ message: `${label(ref)}: the file cannot be opened (${code ?? "error"})`, details: facts(ref, { errno: code }), cause: e });
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) {
      const what = st.isDirectory() ? "a directory" : st.isFIFO() ? "a FIFO" : st.isSocket() ? "a socket" : "a device";
      throw SecretErrors.SECRET_SOURCE_FAILED({
        message: `${label(ref)}: the path is ${what}, not a regular file`,
        remediation: "Point file: at a regular file holding only the value (symlinks to one are fine).",
        details: facts(ref),
      });
    }
    if (st.size > o.maxBytes) throw tooLarge(ref, o.maxBytes);
    // Read to EOF, at most max+1 bytes: the size fstat reported may be stale or 0 (procfs).
    const buf = Buffer.alloc(o.maxBytes + 1);
    let n = 0;
    while (n < buf.length) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    if (n > o.maxBytes) {
      buf.fill(0);
      throw tooLarge(ref, o.maxBytes);
    }
    const out = Buffer.from(buf.subarray(0, n));
    buf.fill(0);
    return out;
  } catch (e) {
    if (isMicroagentError(e)) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw SecretErrors.SECRET_SOURCE_FAILED({ message: `${label(ref)}: the file cannot be read (${code ?? "error"})`, details: facts(ref, { errno: code }), cause: e });
  } finally {
    await fh.close().catch(() => {});
  }
}

function fromCommand(ref: SecretRef, command: string, cwd: string, o: ResolvedSecretResolveOptions): Promise<Buffer> {
  return new Promise((resolvePromise, reject) => {
    let child;
    try {
      // detached: its own process group, so a timeout kills the helper's children too.
      child = spawn("/bin/sh", ["-c", command], { cwd, env: o.env, stdio: ["ignore", "pipe", "pipe"], detached: true });
    } catch (e) {
      reject(SecretErrors.SECRET_SOURCE_FAILED({ message: `${label(ref)}: the command could not be started: ${(e as Error).message}`, details: facts(ref), cause: e }));
      return;
    }
    const chunks: Buffer[] = [];
    let outBytes = 0;
    let errTail = Buffer.alloc(0);
    let settled = false;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let closed = 0;
    const killGroup = () => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
      } catch {
        // already gone
      }
    };
    const wipe = () => {
      for (const c of chunks) c.fill(0);
      chunks.length = 0;
    };
    const fail = (e: MicroagentError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      o.signal?.removeEventListener("abort", onAbort);
      killGroup();
      wipe();
      reject(e);
    };
    const timer = setTimeout(() => {
      fail(
        SecretErrors.SECRET_SOURCE_TIMEOUT({
          message: `${label(ref)}: the command did not finish within ${o.cmdTimeoutMs} ms (killed)${stderrNote(errTail, chunks)}`,
          details: facts(ref, { timeoutMs: o.cmdTimeoutMs }),
        }),
      );
    }, o.cmdTimeoutMs);
    const onAbort = () => fail(SecretErrors.SECRET_SOURCE_FAILED({ message: `${label(ref)}: interrupted`, details: facts(ref) }));
    if (o.signal?.aborted) {
      onAbort();
      return;
    }
    o.signal?.addEventListener("abort", onAbort, { once: true });
    child.stdout.on("data", (d: Buffer) => {
      if (settled) return;
      outBytes += d.length;
      if (outBytes > o.maxBytes) {
        d.fill(0);
        fail(tooLarge(ref, o.maxBytes));
        return;
      }
      chunks.push(d);
    });
    child.stderr.on("data", (d: Buffer) => {
      errTail = Buffer.concat([errTail, d]);
      if (errTail.length > SECRET_STDERR_TAIL_BYTES) errTail = errTail.subarray(errTail.length - SECRET_STDERR_TAIL_BYTES);
    });
    child.on("error", (e) => {
      fail(SecretErrors.SECRET_SOURCE_FAILED({ message: `${label(ref)}: the command could not be started in ${cwd}: ${e.message}`, details: facts(ref, { cwd }), cause: e }));
    });
    // Done when the shell has exited AND both pipes are drained (the exit may come first).
    const finish = () => {
      if (settled || exit === undefined || closed < 2) return;
      if (exit.code !== 0) {
        fail(
          SecretErrors.SECRET_SOURCE_FAILED({
            message: `${label(ref)}: the command ${exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`}${stderrNote(errTail, chunks)}`,
            details: facts(ref, { ...(exit.code !== null ? { exitCode: exit.code } : {}), ...(exit.signal ? { signal: exit.signal } : {}) }),
          }),
        );
        return;
      }
      settled = true;
      clearTimeout(timer);
      o.signal?.removeEventListener("abort", onAbort);
      const out = Buffer.concat(chunks);
      wipe();
      resolvePromise(out);
    };
    child.stdout.on("close", () => {
      closed++;
      finish();
    });
    child.stderr.on("close", () => {
      closed++;
      finish();
    });
    child.on("exit", (code, signal) => {
      exit = { code, signal };
      finish();
    });
  });
}

/**
 * ": stderr: <tail>", printable, one line, at most 300 characters. Whatever the helper printed on
 * stdout (a value, perhaps) is cut out of it first: a helper that echoes what it read to stderr
 * must not leak it through our error.
 */
function stderrNote(tail: Buffer, stdoutChunks: readonly Buffer[]): string {
  let text = tail.toString("utf8");
  const out = Buffer.concat(stdoutChunks).toString("utf8").trim();
  if (out.length >= 4) text = text.split(out).join(REDACTED);
  for (const line of out.split("\n")) {
    const l = line.trim();
    if (l.length >= 4) text = text.split(l).join(REDACTED);
  }
  text = text
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, " ")
    .replace(/\s+/g, " ")
    .trim();
  if (text === "") return "";
  if (text.length > 300) text = `...${text.slice(-297)}`;
  return `: stderr: ${text}`;
}

/**
 * The output layer: how a command's outcome or error becomes bytes on stdout/stderr and an exit
 * code. Commands never print errors or call process.exit themselves; they return an outcome or
 * throw, and `emitOutcome` / `emitError` do the rest. Pure formatting helpers are exported so tests
 * need no TTY.
 */
import { CommonErrors, isMicroagentError, toMicroagentError, type ErrorObject, type MicroagentError } from "../contract/errors.ts";
import { sanitizeTerminalText } from "../util/terminal.ts";
import type { GlobalOptions } from "./globals.ts";

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;
/** sysexits EX_TEMPFAIL: the same call may succeed later. */
export const EXIT_RETRYABLE = 75;

export interface Streams {
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
}

export interface CommandOutcome {
  /** The JSON body (bare in UX JSON mode; `result` of the envelope in AX mode). */
  json?: unknown;
  /** Text-mode rendering; omitted when the command already streamed its output. */
  text?: string;
  /** Exit code; default 0. */
  exitCode?: number;
  /**
   * The exit code is the guest command's (run/exec): passed through in UX mode; in AX mode a
   * completed command exits 0 and the code is read from the envelope.
   */
  passthrough?: boolean;
  /** The operation ran but failed (e.g. doctor found a failing required check): AX prints this. */
  failure?: MicroagentError;
}

export interface CliContext {
  globals: GlobalOptions;
  streams: Streams;
  /** Progress lines on stderr: only in text mode with stderr on a terminal. */
  progress(message: string): void;
  /** True when the CLI may stream command output (text mode). */
  readonly streaming: boolean;
}

export function makeContext(globals: GlobalOptions, streams: Streams): CliContext {
  const progressOn = globals.format === "text" && globals.mode === "ux" && Boolean(streams.stderr.isTTY);
  return {
    globals,
    streams,
    streaming: globals.format === "text",
    progress(message: string) {
      if (progressOn) streams.stderr.write(`${message}\n`);
    },
  };
}

export function emitOutcome(outcome: CommandOutcome, globals: GlobalOptions, streams: Streams): number {
  const exitCode = outcome.exitCode ?? EXIT_OK;
  if (globals.mode === "ax") {
    if (outcome.failure) {
      writeJson(streams.stdout, { ok: false, error: outcome.failure.toJSON() });
      return exitCodeFor(outcome.failure);
    }
    writeJson(streams.stdout, { ok: true, result: outcome.json ?? null });
    return outcome.passthrough ? EXIT_OK : exitCode;
  }
  if (globals.format === "json") {
    if (outcome.json !== undefined) writeJson(streams.stdout, outcome.json);
  } else if (outcome.text !== undefined) {
    streams.stdout.write(outcome.text.endsWith("\n") || outcome.text === "" ? outcome.text : `${outcome.text}\n`);
  }
  return exitCode;
}

export function exitCodeFor(error: MicroagentError): number {
  if (CommonErrors.USAGE.is(error)) return EXIT_USAGE;
  return error.retryable ? EXIT_RETRYABLE : EXIT_FAILED;
}

/** Render any thrown value once, at the top, and return the exit code. */
export function emitError(thrown: unknown, globals: Pick<GlobalOptions, "format" | "mode" | "color">, streams: Streams): number {
  const error = isMicroagentError(thrown) ? thrown : toMicroagentError(thrown);
  if (globals.mode === "ax" || globals.format === "json") {
    writeJson(streams.stdout, { ok: false, error: error.toJSON() });
  } else {
    streams.stderr.write(formatErrorText(error.toJSON(), globals.color));
  }
  return exitCodeFor(error);
}

/**
 * An error for a terminal. Messages quote guest output (the serial tail of VM_DIED, BOOT_FAILED,
 * SHUTDOWN_TIMEOUT), so message and remediation are sanitized: a guest's escape sequences must not
 * reach the host user's terminal. JSON errors stay exact.
 */
export function formatErrorText(error: ErrorObject, color: boolean): string {
  const red = (s: string) => (color ? `\u001b[31m${s}\u001b[0m` : s);
  const lines = [`${red("error:")} ${sanitizeTerminalText(error.message)}`];
  if (error.remediation) lines.push(`  fix: ${sanitizeTerminalText(error.remediation)}`);
  if (error.kind === "permanent" && error.code === "INTERNAL") lines.push(`  correlation id: ${error.correlation_id}`);
  return `${lines.join("\n")}\n`;
}

export function writeJson(stream: NodeJS.WritableStream, value: unknown): void {
  stream.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** A usage error (exit 2): unknown flag, bad value, missing argument. */
export const UsageErrors = {
  USAGE: (message: string, remediation = "Run `microagent <command> --help` for the accepted flags.") =>
    CommonErrors.USAGE({ message, remediation }),
};

/** Format rows as a fixed-width table (text mode). */
export function formatTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(headers), ...rows.map(line)].join("\n");
}

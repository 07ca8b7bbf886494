/**
 * `-t` for `run` and `exec`: the host terminal bridged to a PTY in the guest (a console session
 * running the command). With `-i` the terminal is put in raw mode, so every key (Ctrl-C, Ctrl-D,
 * Ctrl-Z...) goes to the guest's line discipline and nothing is interpreted here: unlike `connect`
 * there is no detach key, and the session ends when the command does. The terminal mode is restored
 * on every way out: the command exiting, the VM dying (the console closes), an error, and this
 * process being told to stop (SIGTERM, SIGHUP) or exiting.
 */
import type { ConsoleConnection } from "../supervisor/client.ts";
import type { ConsoleExit } from "../supervisor/protocol.ts";
import { CommonErrors } from "../contract/errors.ts";

export interface TerminalStreams {
  stdin: NodeJS.ReadStream;
  stdout: NodeJS.WritableStream;
}

/** `-t` needs a terminal on the CLI's stdin: a usage error (exit 2) naming the fix otherwise. */
export function requireTerminal(command: string, stdin: NodeJS.ReadStream = process.stdin): void {
  if (stdin.isTTY) return;
  throw CommonErrors.USAGE({
    message: `${command} -t needs a terminal on stdin, and this stdin is not one (a pipe, a file or /dev/null)`,
    remediation: `Drop -t (keep -i to stream stdin into the command: \`... | microagent ${command} -i ...\`), or run it from a terminal.`,
  });
}

/** The size to open the guest PTY with: the terminal's, or 80x24 when it reports none (e.g. 0x0 under `script`). */
export function terminalSize(out: NodeJS.WritableStream): { cols: number; rows: number } {
  const o = out as { columns?: number; rows?: number };
  return { cols: o.columns || 80, rows: o.rows || 24 };
}

/**
 * Bridge the terminal to `con` until the guest process ends (or the console closes). `interactive`
 * forwards stdin (raw mode); without it, Ctrl-C here closes the console, which kills the process in
 * the guest. Resolves with the exit the guest reported, undefined when it reported none.
 */
export async function attachTerminal(con: ConsoleConnection, io: TerminalStreams, interactive: boolean): Promise<ConsoleExit | undefined> {
  const input = io.stdin;
  const wasRaw = input.isRaw ?? false;
  let restored = false;
  const restore = () => {
    if (restored) return;
    restored = true;
    if (interactive && input.isTTY) {
      try {
        input.setRawMode(wasRaw);
      } catch {
        /* the terminal is gone */
      }
    }
  };
  const onInput = (d: Buffer) => con.write(d);
  const onResize = () => {
    const out = io.stdout as { columns?: number; rows?: number };
    if (out.columns && out.rows) con.resize(out.columns, out.rows);
  };
  // Told to stop: put the terminal back and end the guest's process; if the console does not close
  // promptly, go anyway with the signal's code.
  let stopTimer: NodeJS.Timeout | undefined;
  const onStop = (sig: NodeJS.Signals) => {
    restore();
    con.close();
    stopTimer ??= setTimeout(() => process.exit(128 + (sig === "SIGHUP" ? 1 : 15)), 2000);
  };
  const onInterrupt = () => con.close();
  const unsubscribe = con.onData((d) => io.stdout.write(d));
  process.on("exit", restore);
  process.on("SIGWINCH", onResize);
  process.on("SIGTERM", onStop);
  process.on("SIGHUP", onStop);
  if (interactive) {
    if (input.isTTY) input.setRawMode(true);
    input.on("data", onInput);
    input.resume();
  } else {
    process.on("SIGINT", onInterrupt);
  }
  try {
    // A resize between opening and attaching would otherwise be lost.
    onResize();
    return await con.done;
  } finally {
    clearTimeout(stopTimer);
    unsubscribe();
    input.off("data", onInput);
    process.off("SIGWINCH", onResize);
    process.off("SIGTERM", onStop);
    process.off("SIGHUP", onStop);
    process.off("SIGINT", onInterrupt);
    process.off("exit", restore);
    restore();
    input.pause();
    con.close();
  }
}

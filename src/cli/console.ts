/**
 * Terminal handling for `connect`, over a ConsoleConnection: waiting for a shell prompt, sending one
 * line and collecting its output (`--send` scrapes the PTY for prompts), and attaching a terminal
 * (raw mode, Ctrl-] detaches). This is CLI behaviour, not library API: a program drives the console
 * through `Workspace.console()` and its own reads and writes.
 */
import { stripVTControlCharacters } from "node:util";
import type { ConsoleConnection } from "../supervisor/client.ts";
import { SupervisorErrors } from "../supervisor/errors.ts";

/** A shell prompt at the end of the output: `$ `, `# `, `> ` (with optional trailing space). */
export const PROMPT_PATTERN = /[$#>] ?$/;
const DETACH_BYTE = 0x1d; // Ctrl-]

function stripAnsi(s: string): string {
  return stripVTControlCharacters(s).replace(/\r/g, "");
}

/** Collect console output until `done(text)` says so or `timeoutMs` passes. */
function collectUntil(con: ConsoleConnection, timeoutMs: number, done: (text: string) => boolean): Promise<{ text: string; timedOut: boolean }> {
  return new Promise((resolve) => {
    let text = "";
    let finished = false;
    // Assigned below; replayed output may call finish() from inside onData, before it returns.
    let unsubscribe = () => {};
    const finish = (timedOut: boolean) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      unsubscribe();
      resolve({ text, timedOut });
    };
    const timer = setTimeout(() => finish(true), timeoutMs);
    unsubscribe = con.onData((d) => {
      if (finished) return;
      text += d.toString("utf8");
      if (done(stripAnsi(text))) finish(false);
    });
    if (finished) unsubscribe();
    void con.done.then(() => finish(true), () => finish(true));
  });
}

/** How long a new shell gets to print its first prompt before it is poked with a newline. */
const PROMPT_POKE_AFTER_MS = 1500;
/** Output must pause this long after a prompt before the console counts as settled. */
const SETTLE_QUIET_MS = 300;

/**
 * Wait until the shell shows a prompt and has stopped printing. A fresh console shell prints its prompt
 * unasked; only a shell that stays silent is poked with a newline. A poke makes the shell print a second
 * prompt, which must arrive *before* anything is sent: otherwise it would land after the echo of the next
 * line and look like that line's (empty) output. So after a poke this also waits for the output to settle.
 * Returns what was printed.
 */
export async function waitForPrompt(con: ConsoleConnection, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let text = "";
  let lastDataAt = Date.now();
  const unsubscribe = con.onData((d) => {
    text += d.toString("utf8");
    lastDataAt = Date.now();
  });
  const atPrompt = () => PROMPT_PATTERN.test(stripAnsi(text).trimEnd());
  let poked = false;
  let closed = false;
  void con.done.then(() => (closed = true), () => (closed = true));
  for (;;) {
    const now = Date.now();
    if (closed || now >= deadline) break;
    if (atPrompt() && (!poked || now - lastDataAt >= SETTLE_QUIET_MS)) {
      unsubscribe();
      return text;
    }
    if (!poked && !atPrompt() && now - lastDataAt >= PROMPT_POKE_AFTER_MS) {
      con.write("\n");
      poked = true;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  unsubscribe();
  throw SupervisorErrors.WAIT_TIMEOUT({
    message: `no shell prompt on the console within ${timeoutMs} ms${text ? `; it printed: ${JSON.stringify(stripAnsi(text).slice(-200))}` : ""}`,
    remediation: "Read `microagent logs <name>` to see what the guest is doing, or pass --ready-timeout 0 to skip the wait.",
    details: { partialOutput: stripAnsi(text) },
  });
}

/** Send one line and return its output (without the echoed line and the next prompt). */
export async function sendConsoleLine(con: ConsoleConnection, line: string, timeoutMs: number): Promise<string> {
  // The shell echoes the line back; the output is what follows the echo, up to the next prompt.
  const afterEcho = (t: string): string | undefined => {
    // The last echo: a shell whose line editor starts late echoes the line twice (tty, then redraw).
    const i = t.lastIndexOf(line);
    if (i < 0) return undefined;
    const nl = t.indexOf("\n", i + line.length);
    return nl < 0 ? undefined : t.slice(nl + 1);
  };
  const pending = collectUntil(con, timeoutMs, (t) => {
    const rest = afterEcho(t);
    return rest !== undefined && PROMPT_PATTERN.test(rest.trimEnd());
  });
  con.write(`${line}\n`);
  const { text, timedOut } = await pending;
  const clean = stripAnsi(text);
  const rest = afterEcho(clean) ?? clean;
  const lines = rest.split("\n");
  if (!timedOut && lines.length > 0 && PROMPT_PATTERN.test((lines.at(-1) as string).trimEnd())) lines.pop();
  const output = lines.join("\n");
  if (timedOut) {
    throw SupervisorErrors.WAIT_TIMEOUT({
      message: `no prompt came back within ${timeoutMs} ms after sending ${JSON.stringify(line)}; output so far: ${JSON.stringify(output.slice(-500))}`,
      remediation: "Raise --timeout, or check what the command is doing with `microagent connect <name>`.",
      details: { partialOutput: output },
    });
  }
  return output.endsWith("\n") || output === "" ? output : `${output}\n`;
}

/** Bridge a terminal to the console until Ctrl-] or the console closes. */
export async function attachConsole(con: ConsoleConnection, input: NodeJS.ReadStream, output: NodeJS.WritableStream): Promise<void> {
  const wasRaw = input.isRaw;
  if (input.isTTY) input.setRawMode(true);
  input.resume();
  const { promise: detach, resolve: detached } = Promise.withResolvers<void>();
  const onInput = (d: Buffer) => {
    const i = d.indexOf(DETACH_BYTE);
    if (i >= 0) {
      if (i > 0) con.write(d.subarray(0, i));
      detached();
      return;
    }
    con.write(d);
  };
  const onResize = () => {
    const out = output as { columns?: number; rows?: number };
    if (out.columns && out.rows) con.resize(out.columns, out.rows);
  };
  const unsubscribe = con.onData((d) => output.write(d));
  input.on("data", onInput);
  process.on("SIGWINCH", onResize);
  try {
    await Promise.race([detach, con.done.catch(() => {})]);
  } finally {
    unsubscribe();
    input.off("data", onInput);
    process.off("SIGWINCH", onResize);
    if (input.isTTY) input.setRawMode(wasRaw ?? false);
    input.pause();
    con.close();
  }
}

/**
 * Guest bytes on a host terminal (reliability D4): error texts and status details that quote the
 * serial console are sanitized in text mode; JSON keeps them exact.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { sanitizeTerminalText, isTerminalSafe } from "../../src/util/terminal.ts";
import { emitError, formatErrorText } from "../../src/cli/output.ts";
import { SupervisorErrors } from "../../src/supervisor/errors.ts";
import { lastLines } from "../../src/workspace/serial.ts";
import { mkdtemp, mkdir, writeFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { workspacePaths } from "../../src/workspace/paths.ts";
import { acquireLock } from "../../src/workspace/lock.ts";
import { recordInitialState } from "../../src/workspace/state.ts";
import { runCli } from "../helpers/cli.ts";

/** The report's payload: a title change, a screen clear and an OSC 52 clipboard write. */
const HOSTILE = "\u001b]0;PWNED\u0007\u001b[2J\u001b]52;c;cHduZWQ=\u0007 evil\r\n";

test("terminal: escape sequences and controls are removed or replaced; newline and tab stay", () => {
  assert.equal(sanitizeTerminalText(HOSTILE), " evil\n");
  assert.equal(sanitizeTerminalText("a\tb\nc"), "a\tb\nc");
  // DCS, an unterminated OSC, ST-terminated OSC, 8-bit CSI/OSC (C1), a bare ESC, BEL, backspace, DEL, lone CR.
  for (const s of ["\u001bP1$r0m\u001b\\", "\u001b]52;c;AAAA", "\u001b]8;;http://x\u001b\\link", "\u009b2J", "\u009d0;t\u009c", "\u001b", "\u0007\b\u007f", "x\ry"]) {
    const out = sanitizeTerminalText(s);
    assert.ok(isTerminalSafe(out), `${JSON.stringify(s)} -> ${JSON.stringify(out)}`);
    assert.ok(!out.includes("\u001b"));
  }
  assert.equal(sanitizeTerminalText("x\ry"), "x\uFFFDy");
  assert.equal(sanitizeTerminalText("ünïcödé ✓"), "ünïcödé ✓", "printable text is untouched");
  // Every single code point below U+00A0: only LF and TAB may survive as themselves.
  for (let c = 0; c < 0xa0; c++) {
    const out = sanitizeTerminalText(`a${String.fromCharCode(c)}b`);
    assert.ok(isTerminalSafe(out), `U+${c.toString(16)}`);
  }
});

test("terminal: a VM_DIED quoting the serial tail prints no ESC in text mode, and exactly in JSON", () => {
  const err = SupervisorErrors.VM_DIED({ message: `the VM of workspace w exited (killed by SIGKILL); serial log tail:\n${HOSTILE}` });
  const text = formatErrorText(err.toJSON(), false);
  assert.ok(!text.includes("\u001b") && !text.includes("\u0007"), JSON.stringify(text));
  assert.match(text, /serial log tail:\n evil/);

  const out = new PassThrough();
  const errStream = new PassThrough();
  let stderr = "";
  let stdout = "";
  errStream.on("data", (d: Buffer) => (stderr += d.toString()));
  out.on("data", (d: Buffer) => (stdout += d.toString()));
  emitError(err, { format: "text", mode: "ux", color: false }, { stdout: out, stderr: errStream });
  assert.ok(!stderr.includes("\u001b"));
  emitError(err, { format: "json", mode: "ux", color: false }, { stdout: out, stderr: errStream });
  assert.ok(stdout.includes("\\u001b]52;c;cHduZWQ=\\u0007"), "JSON escapes, and keeps, the exact bytes");
  assert.equal(JSON.parse(stdout).error.message, err.message);
});

test("terminal: the one-line 'last serial line' detail carries no control characters", () => {
  const [line] = lastLines(`boot ok\n${HOSTILE}`, 1);
  assert.equal(line, " evil");
});

test("terminal: `logs` shows rotated + current, sanitized in text, exact with --raw and in JSON", async () => {
  const stateDir = await mkdtemp(join(tmpdir(), "logs-cli-"));
  try {
    const paths = workspacePaths(stateDir, "w");
    await mkdir(paths.dir, { recursive: true });
    await writeFile(paths.manifest, "{}");
    const lock = await acquireLock(paths.lock);
    await recordInitialState(paths, { lock });
    await lock.release();
    await writeFile(`${paths.serialLog}.1`, "older part\r\n");
    await writeFile(paths.serialLog, HOSTILE);
    const text = await runCli(["--state-dir", stateDir, "logs", "w"]);
    assert.equal(text.code, 0, text.err);
    assert.equal(text.out, "older part\n evil\n");
    const raw = await runCli(["--state-dir", stateDir, "logs", "w", "--raw"]);
    assert.equal(raw.out, `older part\r\n${HOSTILE}`);
    const js = await runCli(["--state-dir", stateDir, "--json", "logs", "w"]);
    assert.equal(JSON.parse(js.out).logs, `older part\r\n${HOSTILE}`);
  } finally {
    await rm(stateDir, { recursive: true, force: true });
  }
});

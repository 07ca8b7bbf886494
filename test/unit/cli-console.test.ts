/**
 * The console helpers `connect` uses (src/cli/console.ts), over a fake ConsoleConnection: prompt
 * detection through escape sequences, one line's output without its echo and prompt, and listeners
 * removed once a helper returns (the connection's onData hands back an unsubscribe).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { ConsoleConnection } from "../../src/supervisor/client.ts";
import { sendConsoleLine, waitForPrompt } from "../../src/cli/console.ts";

/** A shell that echoes each line and answers with `reply(line)` and a coloured prompt. */
function fakeShell(reply: (line: string) => string): ConsoleConnection & { listeners: Set<(d: Buffer) => void>; emit(s: string): void } {
  const listeners = new Set<(d: Buffer) => void>();
  const emit = (s: string) => {
    for (const l of [...listeners]) l(Buffer.from(s));
  };
  const prompt = "\u001b]0;title\u0007\u001b[1;32m/ #\u001b[0m ";
  return {
    listeners,
    emit,
    write(data) {
      const line = data.toString().replace(/\n$/, "");
      setTimeout(() => emit(`${line}\r\n${line === "" ? "" : reply(line)}${prompt}`), 5);
    },
    resize() {},
    close() {},
    onData(cb) {
      listeners.add(cb);
      return () => listeners.delete(cb);
    },
    done: new Promise<undefined>(() => {}),
  };
}

test("cli-console: waitForPrompt sees a prompt behind OSC and SGR sequences and unsubscribes", async () => {
  const con = fakeShell(() => "");
  setTimeout(() => con.emit("booting\r\n\u001b]0;t\u0007\u001b[1;32m/ #\u001b[0m "), 10);
  const text = await waitForPrompt(con, 2000);
  assert.match(text, /booting/);
  assert.equal(con.listeners.size, 0, "waitForPrompt left a listener behind");
});

test("cli-console: sendConsoleLine returns the line's output only and unsubscribes", async () => {
  const con = fakeShell((line) => (line === "echo hi" ? "hi\r\n" : "?\r\n"));
  assert.equal(await sendConsoleLine(con, "echo hi", 2000), "hi\n");
  assert.equal(con.listeners.size, 0, "sendConsoleLine left a listener behind");
});

test("cli-console: a line whose prompt never comes back times out with the output so far, and unsubscribes", async () => {
  const con = fakeShell(() => "");
  con.write = (data) => setTimeout(() => con.emit(`${data.toString().replace(/\n$/, "")}\r\npartial`), 5);
  await assert.rejects(sendConsoleLine(con, "sleep 100", 200), (e: Error & { code?: string }) => e.code === "WAIT_TIMEOUT" && /partial/.test(e.message));
  assert.equal(con.listeners.size, 0);
});

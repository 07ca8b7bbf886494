import { test } from "node:test";
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { PassThrough } from "node:stream";
import { attachTerminal, requireTerminal, terminalSize } from "../../src/cli/tty.ts";
import type { ConsoleConnection } from "../../src/supervisor/client.ts";
import type { ConsoleExit } from "../../src/supervisor/protocol.ts";

/** A terminal stdin that records its raw-mode changes. */
function fakeTty() {
  const ee = new EventEmitter() as EventEmitter & { isTTY: boolean; isRaw: boolean; modes: boolean[]; setRawMode(m: boolean): void; resume(): void; pause(): void };
  ee.isTTY = true;
  ee.isRaw = false;
  ee.modes = [];
  ee.setRawMode = (m) => {
    ee.isRaw = m;
    ee.modes.push(m);
  };
  ee.resume = () => {};
  ee.pause = () => {};
  return ee;
}

function fakeConsole() {
  let settle!: { resolve: (e: ConsoleExit | undefined) => void; reject: (e: Error) => void };
  const done = new Promise<ConsoleExit | undefined>((resolve, reject) => (settle = { resolve, reject }));
  const written: string[] = [];
  const sizes: string[] = [];
  let closed = 0;
  let onData: ((d: Buffer) => void) | undefined;
  const con: ConsoleConnection = {
    write: (d) => void written.push(d.toString()),
    resize: (c, r) => void sizes.push(`${c}x${r}`),
    close: () => void closed++,
    onData: (cb) => ((onData = cb), () => (onData = undefined)),
    done,
  };
  return { con, settle, written, sizes, closed: () => closed, emit: (s: string) => onData?.(Buffer.from(s)) };
}

test("tty: -it puts the terminal in raw mode, forwards keys, output and resizes, and restores it when the command exits", async () => {
  const stdin = fakeTty();
  const stdout = Object.assign(new PassThrough(), { columns: 120, rows: 40 });
  const out: string[] = [];
  stdout.on("data", (d: Buffer) => out.push(d.toString()));
  const f = fakeConsole();
  const p = attachTerminal(f.con, { stdin: stdin as unknown as NodeJS.ReadStream, stdout }, true);
  assert.equal(stdin.isRaw, true);
  stdin.emit("data", Buffer.from("ls\r\u0004"));
  f.emit("hello\r\n");
  process.emit("SIGWINCH");
  f.settle.resolve({ status: "exited", exitCode: 5 });
  assert.deepEqual(await p, { status: "exited", exitCode: 5 });
  assert.deepEqual(stdin.modes, [true, false]);
  assert.deepEqual(f.written, ["ls\r\u0004"]);
  assert.ok(f.sizes.includes("120x40"));
  assert.equal(out.join(""), "hello\r\n");
  assert.equal(process.listenerCount("SIGWINCH"), 0, "the SIGWINCH listener was left behind");
});

test("tty: the terminal is restored when the console fails (VM gone) and when this process is told to stop", async () => {
  const stdin = fakeTty();
  const f = fakeConsole();
  const p = attachTerminal(f.con, { stdin: stdin as unknown as NodeJS.ReadStream, stdout: new PassThrough() }, true);
  f.settle.reject(new Error("VM_DIED"));
  await assert.rejects(p, /VM_DIED/);
  assert.equal(stdin.isRaw, false);

  const stdin2 = fakeTty();
  const g = fakeConsole();
  const q = attachTerminal(g.con, { stdin: stdin2 as unknown as NodeJS.ReadStream, stdout: new PassThrough() }, true);
  const before = process.listenerCount("SIGTERM");
  process.emit("SIGTERM", "SIGTERM");
  // Restored at once, before the console has even closed; the guest's process is asked to end.
  assert.equal(stdin2.isRaw, false);
  assert.ok(g.closed() >= 1);
  g.settle.resolve(undefined);
  assert.equal(await q, undefined);
  assert.equal(process.listenerCount("SIGTERM"), before - 1);
});

test("tty: -t without a terminal on stdin is a usage error naming the fix; a 0x0 terminal opens 80x24", () => {
  assert.throws(
    () => requireTerminal("run", { isTTY: false } as unknown as NodeJS.ReadStream),
    (e: Error & { code?: string; remediation?: string }) => e.code === "USAGE" && /needs a terminal on stdin/.test(e.message) && /Drop -t/.test(e.remediation ?? ""),
  );
  assert.deepEqual(terminalSize(Object.assign(new PassThrough(), { columns: 0, rows: 0 })), { cols: 80, rows: 24 });
});

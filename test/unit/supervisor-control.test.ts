import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:net";
import { EventEmitter } from "node:events";
import { startControlServer, type ControlHandlers, type ConsoleSession } from "../../src/supervisor/server.ts";
import { SupervisorClient } from "../../src/supervisor/client.ts";
import { LineDecoder, LineTooLongError } from "../../src/supervisor/protocol.ts";
import { SupervisorErrors } from "../../src/supervisor/errors.ts";

function fakeHandlers(): ControlHandlers {
  const status = { workspace: "t", phase: "running" as const, supervisorPid: process.pid, bootId: "b", startedAt: new Date().toISOString() };
  return {
    status: () => status,
    ping: async () => ({ guestMs: 0.5 }),
    waitReady: async () => status,
    readiness: async () => {
      const p = { ready: true, observedAt: "now" };
      return { guestReady: p, execReady: p, shellReady: p, resultReady: { ready: false, observedAt: "now" } };
    },
    exec: async (req, onOutput) => {
      onOutput?.("stdout", Buffer.from(`ran ${req.argv.join(" ")}\n`));
      onOutput?.("stderr", Buffer.from("warn\n"));
      return {
        status: "exited",
        exitCode: 3,
        stdout: onOutput ? "" : Buffer.from("buffered").toString("base64"),
        stderr: "",
        stdoutTruncated: false,
        stderrTruncated: false,
        startedAt: "a",
        completedAt: "b",
      };
    },
    attach: async (onOutput) => {
      onOutput("stdout", Buffer.alloc(600 * 1024, 0x61));
      return { ran: true, exitCode: 0 };
    },
    waitResult: async () => ({ ran: true, exitCode: 0 }),
    console: async (opts) => {
      const ee = new EventEmitter();
      let close!: () => void;
      const closed = new Promise<void>((r) => (close = r));
      // A console opened with a command (exec -t) "runs" it: it prints its options and exits 3 at once.
      if (opts.argv) setTimeout(() => (ee.emit("data", Buffer.from(JSON.stringify(opts))), close()), 20);
      const session: ConsoleSession = {
        write: (d) => ee.emit("data", Buffer.concat([Buffer.from("echo:"), d])),
        resize: (c, r) => ee.emit("data", Buffer.from(`size ${c}x${r}`)),
        close: () => close(),
        onData: (cb) => ee.on("data", cb),
        closed,
        ...(opts.argv ? { exit: closed.then(() => ({ status: "exited" as const, exitCode: 3 })) } : {}),
      };
      return session;
    },
    shutdown: async () => {
      throw SupervisorErrors.SHUTDOWN_TIMEOUT({ message: "guest did not power off within 1 ms" });
    },
    kill: async () => ({ state: "stopped" }),
    quarantine: async () => ({ state: "quarantined" }),
    pause: async () => ({ state: "paused", changed: true, ms: 1 }),
    resume: async () => ({ state: "running", changed: true, ms: 1 }),
    services: () => ({ fake: { listening: true } }),
  };
}

async function withServer(fn: (client: SupervisorClient, sock: string) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), "ma-ctl-"));
  const sock = join(dir, "c.sock");
  const server = await startControlServer(sock, fakeHandlers());
  try {
    await fn(new SupervisorClient(sock), sock);
  } finally {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
}

test("supervisor: status, readiness and kill round-trip", async () => {
  await withServer(async (c) => {
    assert.equal((await c.status()).phase, "running");
    assert.equal((await c.readiness()).resultReady.ready, false);
    assert.deepEqual(await c.kill(), { state: "stopped" });
  });
});

test("supervisor: exec streams output then returns the result", async () => {
  await withServer(async (c) => {
    const got: string[] = [];
    const r = await c.exec({ argv: ["echo", "hi"] }, (s, d) => got.push(`${s}:${d.toString()}`));
    assert.equal(r.exitCode, 3);
    assert.deepEqual(got, ["stdout:ran echo hi\n", "stderr:warn\n"]);
    const r2 = await c.exec({ argv: ["x"] });
    assert.equal(Buffer.from(r2.stdout, "base64").toString(), "buffered");
  });
});

test("supervisor: large output is chunked and reassembled", async () => {
  await withServer(async (c) => {
    let total = 0;
    let lines = 0;
    const r = await c.attach((_s, d) => {
      total += d.length;
      lines++;
    });
    assert.equal(r.exitCode, 0);
    assert.equal(total, 600 * 1024);
    assert.equal(lines, 3);
  });
});

test("supervisor: errors keep their code, kind and remediation", async () => {
  await withServer(async (c) => {
    await assert.rejects(c.shutdown("halt"), (e: Error & { code?: string; kind?: string }) => {
      assert.equal(e.code, "SHUTDOWN_TIMEOUT");
      assert.equal(e.kind, "transient");
      assert.match(e.message, /did not power off/);
      return true;
    });
  });
});

test("supervisor: console input, resize and close", async () => {
  await withServer(async (c) => {
    const con = await c.console({ cols: 80, rows: 24 });
    const seen: string[] = [];
    con.onData((d) => seen.push(d.toString()));
    con.write("ls\n");
    con.resize(100, 40);
    await new Promise((r) => setTimeout(r, 100));
    con.close();
    await con.done;
    assert.deepEqual(seen, ["echo:ls\n", "size 100x40"]);
  });
});

test("supervisor: a console with a command forwards argv/env/cwd/user and resolves with the command's exit", async () => {
  await withServer(async (c) => {
    const con = await c.console({ cols: 90, rows: 20, argv: ["sh", "-c", "x"], env: { A: "1" }, cwd: "/tmp", user: "nobody" });
    const seen: string[] = [];
    con.onData((d) => seen.push(d.toString()));
    const exit = await con.done;
    assert.deepEqual(exit, { status: "exited", exitCode: 3 });
    assert.deepEqual(JSON.parse(seen.join("")), { cols: 90, rows: 20, argv: ["sh", "-c", "x"], env: { A: "1" }, cwd: "/tmp", user: "nobody" });
    // The shell console (no argv) closed by the client reports no exit.
    const shell = await c.console({ cols: 80, rows: 24 });
    shell.close();
    assert.equal(await shell.done, undefined);
  });
});

test("supervisor: garbage and unknown ops are protocol errors", async () => {
  await withServer(async (_c, sock) => {
    const reply = await new Promise<string>((resolve) => {
      const s = connect(sock, () => s.write('{"v":1,"id":"x","op":"reboot"}\n'));
      let buf = "";
      s.on("data", (d) => (buf += d.toString()));
      s.on("close", () => resolve(buf));
    });
    const parsed = JSON.parse(reply.trim());
    assert.equal(parsed.type, "error");
    assert.equal(parsed.error.code, "SUPERVISOR_PROTOCOL");
  });
});

test("supervisor: unreachable socket is a retryable error", async () => {
  const c = new SupervisorClient("/nonexistent/ctl.sock");
  await assert.rejects(c.status(), (e: Error & { code?: string; retryable?: boolean }) => e.code === "SUPERVISOR_UNREACHABLE" && e.retryable === true);
});

test("supervisor: line decoder handles byte-at-a-time input and bounds line length", () => {
  const d = new LineDecoder(16);
  const out: string[] = [];
  for (const b of Buffer.from('{"a":1}\n{"b":2}\n')) out.push(...d.push(Buffer.from([b])));
  assert.deepEqual(out, ['{"a":1}', '{"b":2}']);
  assert.deepEqual(new LineDecoder(16).push(Buffer.from("a\nb\nc\n")), ["a", "b", "c"]);
  assert.throws(() => new LineDecoder(16).push(Buffer.alloc(17, 0x61)), LineTooLongError);
});

import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server, type Socket } from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { QmpClient, QMP_MAX_LINE_BYTES } from "../../src/vmm/qemu/qmp.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";

/** A scripted QMP peer: the greeting, then `reply` answers each command line. */
async function fakeQmp(reply: (msg: { execute: string; id: number; arguments?: unknown }, sock: Socket) => void): Promise<{ path: string; server: Server; close(): void }> {
  const dir = mkdtempSync(join(tmpdir(), "qmp-"));
  const path = join(dir, "qmp.sock");
  const server = createServer((sock) => {
    sock.write('{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}\r\n');
    let buf = "";
    sock.on("data", (d) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim()) reply(JSON.parse(line), sock);
      }
    });
    sock.on("error", () => {});
  });
  await new Promise<void>((r) => server.listen(path, r));
  return { path, server, close: () => (server.close(), rmSync(dir, { recursive: true, force: true })) };
}

test("vmm qmp: handshake, commands with ids, events, errors translated", async () => {
  const seen: string[] = [];
  const peer = await fakeQmp((msg, sock) => {
    seen.push(msg.execute);
    if (msg.execute === "query-status") {
      // An event arrives before the reply: both must be delivered.
      sock.write('{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME"}\r\n');
      sock.write(`{"return": {"status": "running", "singlestep": false, "running": true}, "id": ${msg.id}}\r\n`);
    } else if (msg.execute === "bogus") {
      sock.write(`{"error": {"class": "CommandNotFound", "desc": "The command bogus has not been found"}, "id": ${msg.id}}\r\n`);
    } else if (msg.execute === "quit") {
      sock.write(`{"return": {}, "id": ${msg.id}}\r\n`);
      sock.write('{"timestamp": {"seconds": 3, "microseconds": 0}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}\r\n');
      sock.end();
    } else {
      sock.write(`{"return": {}, "id": ${msg.id}}\r\n`);
    }
  });
  try {
    const qmp = await QmpClient.connect(peer.path, { timeoutMs: 2000 });
    assert.deepEqual(qmp.version, { qemu: { micro: 22, minor: 2, major: 7 }, package: "" });
    const events: string[] = [];
    qmp.onEvent((e) => events.push(e.event));
    assert.deepEqual(await qmp.queryStatus(), { status: "running", running: true });
    assert.deepEqual(events, ["RESUME"]);
    await qmp.stop();
    await qmp.cont();
    await assert.rejects(qmp.execute("bogus"), (e: unknown) => isMicroagentError(e) && e.code === "QMP_COMMAND_FAILED" && /has not been found/.test(e.message) && /CommandNotFound/.test(e.message));
    const shutdown = qmp.waitForEvent("SHUTDOWN", { timeoutMs: 2000 });
    await qmp.quit();
    assert.deepEqual((await shutdown).data, { guest: false, reason: "host-qmp-quit" });
    await assert.rejects(qmp.queryStatus(), (e: unknown) => isMicroagentError(e) && e.code === "QMP_CLOSED");
    assert.deepEqual(seen, ["qmp_capabilities", "query-status", "stop", "cont", "bogus", "quit"]);
  } finally {
    peer.close();
  }
});

test("vmm qmp: byte-at-a-time delivery parses the same", async () => {
  const peer = await fakeQmp((msg, sock) => {
    const text = `{"return": {"status": "paused", "running": false}, "id": ${msg.id}}\r\n`;
    for (const ch of text) sock.write(ch);
  });
  try {
    const qmp = await QmpClient.connect(peer.path);
    assert.deepEqual(await qmp.queryStatus(), { status: "paused", running: false });
    qmp.close();
  } finally {
    peer.close();
  }
});

test("vmm qmp: a runaway line is a protocol error, not unbounded memory", async () => {
  const peer = await fakeQmp((msg, sock) => {
    if (msg.execute === "qmp_capabilities") return void sock.write(`{"return": {}, "id": ${msg.id}}\r\n`);
    const chunk = Buffer.alloc(1024 * 1024, 0x61);
    for (let i = 0; i <= QMP_MAX_LINE_BYTES / chunk.length; i++) sock.write(chunk);
  });
  try {
    const qmp = await QmpClient.connect(peer.path);
    await assert.rejects(qmp.queryStatus(), (e: unknown) => isMicroagentError(e) && e.code === "QMP_PROTOCOL");
  } finally {
    peer.close();
  }
});

test("vmm qmp: nothing listening fails with QMP_CONNECT_FAILED after the deadline; timeouts are typed", async () => {
  const t0 = Date.now();
  await assert.rejects(QmpClient.connect("/tmp/definitely-not-a-qmp.sock", { timeoutMs: 300 }), (e: unknown) => isMicroagentError(e) && e.code === "QMP_CONNECT_FAILED");
  assert.ok(Date.now() - t0 >= 250);
  const peer = await fakeQmp((msg, sock) => {
    if (msg.execute === "qmp_capabilities") sock.write(`{"return": {}, "id": ${msg.id}}\r\n`);
    // Never answers anything else.
  });
  try {
    const qmp = await QmpClient.connect(peer.path);
    await assert.rejects(qmp.execute("query-status", undefined, { timeoutMs: 100 }), (e: unknown) => isMicroagentError(e) && e.code === "QMP_TIMEOUT");
    qmp.close();
  } finally {
    peer.close();
  }
});

import { test } from "node:test";
import { liveGroupMembers } from "../helpers/proc.ts";
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launchQemu } from "../../src/vmm/qemu/launch.ts";
import type { QemuSpec } from "../../src/vmm/qemu/args.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";

// These tests put a small shell script where QEMU would be: they check the launcher's process
// handling (groups, readiness, stderr tail, kill), not QEMU. The real QEMU boot is in
// test/integration/kernel-install.test.ts.

function scratch(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), "vmm-launch-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function fakeQemu(dir: string, body: string): string {
  const path = join(dir, "fake-qemu");
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

const spec = (dir: string, extra: Partial<QemuSpec> = {}): QemuSpec => ({
  accel: "tcg",
  memoryMib: 128,
  cpus: 1,
  kernelPath: "/k",
  initramfsPath: "/i",
  serial: { kind: "none" },
  ...extra,
  ...(extra.qmpSocketPath === undefined ? {} : { qmpSocketPath: join(dir, "q.sock") }),
});

test("vmm launch: QEMU exiting during startup is QEMU_START_FAILED with its stderr", async (t) => {
  const dir = scratch(t);
  const qemu = fakeQemu(dir, 'echo "qemu-system-x86_64: -drive id=disk0: Could not open disk" >&2; exit 1');
  await assert.rejects(launchQemu(spec(dir), { qemuPath: qemu, timeoutMs: 5000 }), (e: unknown) => {
    assert.ok(isMicroagentError(e));
    assert.equal(e.code, "QEMU_START_FAILED");
    assert.match(e.message, /exit code 1/);
    assert.match(e.message, /Could not open disk/);
    return true;
  });
});

test("vmm launch: a missing binary is QEMU_NOT_FOUND", async (t) => {
  const dir = scratch(t);
  await assert.rejects(launchQemu(spec(dir), { qemuPath: join(dir, "nope"), timeoutMs: 2000 }), (e: unknown) => isMicroagentError(e) && e.code === "QEMU_NOT_FOUND");
});

test("vmm launch: ready when its sockets exist; stale sockets removed; kill ends the whole group", async (t) => {
  const dir = scratch(t);
  const sock = join(dir, "q.sock");
  // The fake listens on the QMP socket path after a short delay (like QEMU's init) and forks a child
  // in its group that must die with it.
  // The fake speaks just enough QMP (greeting, then an empty return per command) for the launcher's
  // readiness check.
  const qmpPeer = join(dir, "qmp-peer.cjs");
  writeFileSync(
    qmpPeer,
    `require("net").createServer((c) => {
      c.write('{"QMP": {"version": {}, "capabilities": []}}\\r\\n');
      c.on("data", (d) => { for (const l of d.toString().split("\\n")) if (l.trim()) c.write(JSON.stringify({ return: {}, id: JSON.parse(l).id }) + "\\r\\n"); });
    }).listen(${JSON.stringify(sock)});`,
  );
  const qemu = fakeQemu(dir, `sleep 0.3; ${process.execPath} ${qmpPeer} & sleep 1000 & echo started >&2; wait`);
  // A stale socket file from an earlier run must not count as "up".
  // A process killed with SIGKILL leaves its socket file behind, like a crashed QEMU.
  const crashed = spawnSync(process.execPath, ["-e", `require("net").createServer().listen(${JSON.stringify(sock)}, () => process.kill(process.pid, "SIGKILL"))`]);
  assert.equal(crashed.signal, "SIGKILL");
  assert.ok(existsSync(sock));
  const t0 = Date.now();
  const h = await launchQemu(spec(dir, { qmpSocketPath: sock }), { qemuPath: qemu, timeoutMs: 10_000 });
  assert.ok(Date.now() - t0 >= 250, "waited for the fresh socket");
  assert.ok(existsSync(sock));
  assert.ok(h.pid > 0);
  assert.equal(h.exit(), undefined);
  const exit = await h.kill(1000);
  assert.ok(exit.signal === "SIGTERM" || exit.code !== 0);
  assert.deepEqual(await liveGroupMembersSettled(h.pid), [], "no process of the group survives");
  assert.match(h.stderrTail(), /started/);
});

test("vmm launch: sockets up but QMP silent (or QEMU failing after creating them) is QEMU_START_FAILED", async (t) => {
  const dir = scratch(t);
  const sock = join(dir, "q.sock");
  // Listens but never greets, like a QEMU stuck before its main loop.
  const qemu = fakeQemu(dir, `exec ${process.execPath} -e "require('net').createServer(() => {}).listen(process.argv[1])" ${sock}`);
  await assert.rejects(launchQemu(spec(dir, { qmpSocketPath: sock }), { qemuPath: qemu, timeoutMs: 800 }), (e: unknown) => {
    assert.ok(isMicroagentError(e));
    assert.equal(e.code, "QEMU_START_FAILED");
    assert.match(e.message, /control socket did not answer/);
    return true;
  });
  // Creates its socket, then fails (QEMU does this for an unreadable kernel): the error carries stderr.
  const failing = fakeQemu(
    dir,
    `${process.execPath} -e "require('net').createServer().listen(process.argv[1], () => setTimeout(() => { console.error('qemu: could not open kernel file'); process.exit(1); }, 200))" ${sock}; exit 1`,
  );
  await assert.rejects(launchQemu(spec(dir, { qmpSocketPath: sock }), { qemuPath: failing, timeoutMs: 5000 }), (e: unknown) => {
    assert.ok(isMicroagentError(e));
    assert.equal(e.code, "QEMU_START_FAILED");
    assert.match(e.message, /could not open kernel file/);
    return true;
  });
});

test("vmm launch: not up in time is QEMU_START_FAILED and the process is killed", async (t) => {
  const dir = scratch(t);
  const qemu = fakeQemu(dir, "exec sleep 1000");
  await assert.rejects(launchQemu(spec(dir, { qmpSocketPath: "x" }), { qemuPath: qemu, timeoutMs: 300 }), (e: unknown) => {
    assert.ok(isMicroagentError(e));
    assert.equal(e.code, "QEMU_START_FAILED");
    assert.match(e.message, /did not come up within 300 ms/);
    assert.ok(Array.isArray(e.details?.argv));
    return true;
  });
});

test("vmm launch: maxLifetimeMs hard-caps the VM", async (t) => {
  const dir = scratch(t);
  const qemu = fakeQemu(dir, "exec sleep 1000");
  const h = await launchQemu(spec(dir), { qemuPath: qemu, timeoutMs: 2000, maxLifetimeMs: 400 });
  const exit = await h.exited;
  assert.equal(exit.signal, "SIGKILL");
});

/** Pids of live (non-zombie) processes in group `pgid`, after giving stragglers a moment. */
async function liveGroupMembersSettled(pgid: number): Promise<number[]> {
  await new Promise((r) => setTimeout(r, 100));
  return liveGroupMembers(pgid);
}

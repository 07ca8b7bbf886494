/**
 * Hostile and unlucky guests on real VMs (reliability campaign D3, D4, D5, D20, D22): a guest that
 * floods its console, one that writes terminal escape sequences there, a host disk that fills up
 * under a running VM, a boot bound that is too short, and a halt raced by a kill.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { workspaceFixture, realProviders, type WorkspaceFixture } from "../helpers/workspace.ts";
import { findProcessesMentioning, reapVmProcesses } from "../helpers/global-setup.ts";
import { createWorkspace } from "../../src/workspace/create.ts";
import { deleteWorkspace } from "../../src/workspace/delete.ts";
import { workspaceStatus } from "../../src/workspace/status.ts";
import { readRuntime } from "../../src/workspace/runtime.ts";
import { workspacePaths } from "../../src/workspace/paths.ts";
import { startWorkspace, stopWorkspace } from "../../src/api/lifecycle.ts";
import { runCli } from "../helpers/cli.ts";

let fx: WorkspaceFixture;
let imageRef: string;

async function cli(...args: string[]) {
  const r = await runCli(["--state-dir", fx.stateDir, ...args]);
  return { code: r.code, stdout: r.out, stderr: r.err };
}

function liveProcesses(needle = fx.stateDir) {
  return findProcessesMentioning(needle).filter((p) => /qemu-system|supervisor\/main/.test(p.cmdline));
}

async function until(what: string, ms: number, check: () => Promise<boolean> | boolean): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

before(async () => {
  fx = await workspaceFixture("hostile");
  imageRef = await fx.image("hostile/busybox:1");
});

after(async () => {
  const left = await reapVmProcesses(fx.stateDir);
  await fx.cleanup();
  assert.deepEqual(left, [], "a qemu or supervisor process survived the suite");
});

/** The report's payload: window title, screen clear, OSC 52 clipboard write. */
const HOSTILE_PRINTF = String.raw`printf '\033]0;PWNED\007\033[2J\033]52;c;cHduZWQ=\007 evil-marker\n' > /dev/ttyS0`;

test("hostile guest: a console flood stays under the serial.log cap, logs show rotated + current, and escape sequences never reach the terminal", { timeout: 300_000 }, async (t) => {
  const name = "flood";
  await createWorkspace({ name, stateDir: fx.stateDir, image: imageRef, providers: realProviders(), profile: "tiny" });
  const paths = workspacePaths(fx.stateDir, name);
  const cap = 64 * 1024;
  process.env.MICROAGENT_SERIAL_LOG_MAX_BYTES = String(cap);
  try {
    await startWorkspace(name, { stateDir: fx.stateDir });
    // ~300 KB through the UART, about 5x the cap.
    const flood = await cli("exec", name, "--timeout", "120s", "--", "sh", "-c", "yes flood-line-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx | head -c 300000 > /dev/ttyS0; echo flooded > /dev/ttyS0");
    assert.equal(flood.code, 0, flood.stderr);
    await until("the flood's last line in serial.log", 30_000, async () => (await cli("logs", name)).stdout.includes("flooded"));
    const current = statSync(paths.serialLog).size;
    const rotated = statSync(`${paths.serialLog}.1`).size;
    assert.ok(current <= cap, `serial.log is ${current} bytes, over the ${cap}-byte cap`);
    assert.ok(rotated <= cap, `serial.log.1 is ${rotated} bytes`);
    t.diagnostic(`after ~300 KB of console output: serial.log ${current} B, serial.log.1 ${rotated} B (cap ${cap})`);
    const logs = await cli("logs", name);
    assert.equal(logs.code, 0);
    assert.ok(logs.stdout.length > cap, "logs include the rotated part");
    assert.ok(logs.stdout.length <= 2 * cap + 1024);
    assert.match(logs.stdout, /flooded\n$/);

    // D4: the guest writes escape sequences to its console.
    assert.equal((await cli("exec", name, "--", "sh", "-c", HOSTILE_PRINTF)).code, 0);
    await until("the marker in serial.log", 30_000, async () => (await cli("logs", name)).stdout.includes("evil-marker"));
    const text = await cli("logs", name);
    assert.ok(!text.stdout.includes("\u001b"), "logs (text) printed an ESC byte");
    assert.match(text.stdout, / evil-marker/);
    const raw = await cli("logs", name, "--raw");
    assert.ok(raw.stdout.includes("\u001b]52;c;cHduZWQ=\u0007 evil-marker"), "logs --raw gives the bytes as written");
    const js = JSON.parse((await cli("--json", "logs", name)).stdout);
    assert.ok(js.logs.includes("\u001b]0;PWNED\u0007"), "JSON keeps the exact text");

    // The VM dies during an exec: the printed VM_DIED error quotes the serial tail without its escapes.
    const rt = await readRuntime(paths);
    assert.ok(rt?.vmmPid);
    const inflight = cli("exec", name, "--", "sleep", "60");
    await new Promise((r) => setTimeout(r, 1500));
    process.kill(rt.vmmPid, "SIGKILL");
    const died = await inflight;
    assert.equal(died.code, 1, died.stderr);
    assert.match(died.stderr, /exited \(killed by SIGKILL\)/);
    assert.match(died.stderr, /evil-marker/, "the serial tail is quoted");
    assert.ok(!died.stderr.includes("\u001b") && !died.stderr.includes("\u0007"), `ESC/BEL in the error text: ${JSON.stringify(died.stderr.slice(-300))}`);
  } finally {
    delete process.env.MICROAGENT_SERIAL_LOG_MAX_BYTES;
    await deleteWorkspace(name, { stateDir: fx.stateDir, force: true }).catch(() => {});
  }
});

test("hostile guest: start --timeout bounds the boot; the overrun boot is killed and recorded failed", { timeout: 120_000 }, async () => {
  const name = "shortboot";
  await createWorkspace({ name, stateDir: fx.stateDir, image: imageRef, providers: realProviders(), profile: "tiny" });
  try {
    const t0 = Date.now();
    const r = await cli("--json", "start", name, "--timeout", "1s");
    const took = Date.now() - t0;
    assert.equal(r.code, 1, r.stdout);
    const err = JSON.parse(r.stdout).error;
    assert.equal(err.code, "BOOT_FAILED");
    assert.match(err.message, /timed out after 1000 ms/);
    assert.ok(took < 15_000, `start took ${took} ms`);
    const status = await workspaceStatus(name, { stateDir: fx.stateDir, verify: false });
    assert.equal(status.event.state, "failed");
    assert.match(status.event.detail, /timed out after 1000 ms/);
    await until("no VM left", 10_000, () => liveProcesses(workspacePaths(fx.stateDir, name).dir).length === 0);
  } finally {
    await deleteWorkspace(name, { stateDir: fx.stateDir, force: true }).catch(() => {});
  }
});

test("hostile guest: a halt that a concurrent kill ends exits non-zero with HALT_NOT_CLEAN", { timeout: 180_000 }, async () => {
  const name = "haltrace";
  // A workload that takes 5 s to honour SIGTERM: the halt is still in progress when the kill lands.
  await createWorkspace({
    name, stateDir: fx.stateDir, image: imageRef, providers: realProviders(), profile: "tiny",
    entrypoint: ["sh", "-c", "trap 'sleep 5; exit 0' TERM; echo trap-set; while true; do sleep 1; done"],
  });
  try {
    await startWorkspace(name, { stateDir: fx.stateDir });
    await until("the workload's trap", 30_000, async () => (await cli("logs", name)).stdout.includes("trap-set"));
    const halting = cli("--json", "halt", name);
    await until("stopping", 20_000, async () => (await workspaceStatus(name, { stateDir: fx.stateDir, verify: false })).event.state === "stopping");
    const killed = await cli("--json", "kill", name);
    assert.equal(killed.code, 0, killed.stdout);
    const halted = await halting;
    assert.equal(halted.code, 1, halted.stdout);
    const err = JSON.parse(halted.stdout).error;
    assert.equal(err.code, "HALT_NOT_CLEAN");
    assert.match(err.message, /killed/);
    const status = await workspaceStatus(name, { stateDir: fx.stateDir, verify: false });
    assert.equal(status.event.state, "stopped");
    assert.match(status.event.detail, /killed/);
  } finally {
    await stopWorkspace(name, "kill", { stateDir: fx.stateDir }).catch(() => {});
    await deleteWorkspace(name, { stateDir: fx.stateDir, force: true }).catch(() => {});
  }
});

test("hostile guest: a host disk that fills under a running VM is DISK_FULL (fast), recovers when space is back, and halt does not wait", { timeout: 300_000 }, async (t) => {
  const name = "diskfull";
  await createWorkspace({ name, stateDir: fx.stateDir, image: imageRef, providers: realProviders(), profile: "tiny" });
  const paths = workspacePaths(fx.stateDir, name);
  // The workspace dir (its qcow2 overlay, state and logs) on a 48 MiB tmpfs, a third of it a filler file.
  const saved = mkdtempSync(join(tmpdir(), "diskfull-save-"));
  cpSync(paths.dir, saved, { recursive: true });
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", paths.dir]);
  let mounted = true;
  process.env.MICROAGENT_DISK_RESUME_FREE_BYTES = String(4 * 1024 * 1024);
  process.env.MICROAGENT_DISK_FULL_POLL_MS = "300";
  try {
    cpSync(saved, paths.dir, { recursive: true });
    const filler = join(paths.dir, "filler");
    writeFileSync(filler, Buffer.alloc(20 * 1024 * 1024, 1));
    const filler2 = join(paths.dir, "filler2");
    writeFileSync(filler2, Buffer.alloc(2 * 1024 * 1024, 1));
    await startWorkspace(name, { stateDir: fx.stateDir });

    // The guest writes more than the host has: QEMU pauses the VM on ENOSPC.
    const t0 = Date.now();
    const fill = await cli("--json", "exec", name, "--timeout", "120s", "--", "sh", "-c", "dd if=/dev/zero of=/root/f bs=1M count=40 conv=fsync 2>&1; echo wrote");
    const took = Date.now() - t0;
    assert.equal(fill.code, 1, fill.stdout);
    const err = JSON.parse(fill.stdout).error;
    assert.equal(err.code, "DISK_FULL", fill.stdout);
    assert.match(err.message, /host disk is full/);
    assert.match(err.remediation, /Free disk space/);
    assert.ok(took < 60_000, `exec took ${took} ms to fail`);
    const quick = Date.now();
    const again = await cli("--json", "exec", name, "--", "true");
    assert.equal(JSON.parse(again.stdout).error.code, "DISK_FULL");
    assert.ok(Date.now() - quick < 5000, "a request to the paused VM fails fast");
    const st = JSON.parse((await cli("--json", "status", name)).stdout);
    assert.equal(st.readiness.ready, false);
    assert.match(st.readiness.reason, /DISK_FULL.*free disk space/i);
    const stText = await cli("status", name);
    assert.match(stText.stdout, /readiness: +not ready: DISK_FULL/);

    // Space comes back: the supervisor resumes the VM by itself.
    rmSync(filler);
    await until("exec works again", 60_000, async () => (await cli("exec", name, "--", "true")).code === 0);

    // Full again, with no filler left to remove: halt ends the VM at once and says why.
    const refill = await cli("--json", "exec", name, "--timeout", "120s", "--", "sh", "-c", "dd if=/dev/zero of=/root/g bs=1M count=40 conv=fsync 2>&1");
    assert.equal(JSON.parse(refill.stdout).error?.code, "DISK_FULL", refill.stdout);
    const h0 = Date.now();
    const halted = await cli("--json", "halt", name);
    const haltMs = Date.now() - h0;
    assert.equal(halted.code, 1, halted.stdout);
    assert.equal(JSON.parse(halted.stdout).error.code, "DISK_FULL");
    assert.ok(haltMs < 10_000, `halt took ${haltMs} ms`);
    t.diagnostic(`exec hit DISK_FULL after ${took} ms; halt of the paused VM took ${haltMs} ms`);
    rmSync(filler2);
    await until("the workspace is no longer live", 30_000, async () => ["failed", "stopped", "halted"].includes((await workspaceStatus(name, { stateDir: fx.stateDir, verify: false })).event.state));
    // The final state is recorded before the supervisor exits (it still stops its services and closes
    // its socket): wait, bounded, for both processes to be gone.
    await until("no VMM or supervisor left", 15_000, () => liveProcesses(paths.dir).length === 0);
  } finally {
    delete process.env.MICROAGENT_DISK_RESUME_FREE_BYTES;
    delete process.env.MICROAGENT_DISK_FULL_POLL_MS;
    await stopWorkspace(name, "kill", { stateDir: fx.stateDir }).catch(() => {});
    await until("no VM left", 10_000, () => liveProcesses(paths.dir).length === 0).catch(() => {});
    if (mounted) execFileSync("umount", ["-l", paths.dir]);
    mounted = false;
    rmSync(saved, { recursive: true, force: true });
    await deleteWorkspace(name, { stateDir: fx.stateDir, force: true }).catch(() => {});
    if (existsSync(paths.dir)) rmSync(paths.dir, { recursive: true, force: true });
    assert.deepEqual(readdirSync(join(fx.stateDir, "workspaces")).filter((n) => n === name), []);
  }
});

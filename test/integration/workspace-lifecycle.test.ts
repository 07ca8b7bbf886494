/**
 * The live lifecycle end to end, on real VMs (QEMU microvm under TCG here) booted from a busybox
 * image served by a real docker-registry on loopback. Boots are shared across assertions to keep the
 * suite lean: one persistent workspace goes through start, exec, halt, start, quarantine, kill,
 * start and a SIGKILLed supervisor; one `run` checks output and exit-code passthrough and logs.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { workspaceFixture, realProviders, type WorkspaceFixture } from "../helpers/workspace.ts";
import { findProcessesMentioning, reapVmProcesses } from "../helpers/global-setup.ts";
import { createWorkspace } from "../../src/workspace/create.ts";
import { deleteWorkspace } from "../../src/workspace/delete.ts";
import { workspaceStatus } from "../../src/workspace/status.ts";
import { readEvents, readLogs } from "../../src/workspace/history.ts";
import { readRuntime } from "../../src/workspace/runtime.ts";
import { processAlive } from "../../src/util/process.ts";
import { workspacePaths } from "../../src/workspace/paths.ts";
import { Workspace } from "../../src/api/workspace.ts";
import { startWorkspace, stopWorkspace, probeReadiness } from "../../src/api/lifecycle.ts";
import { runCli } from "../helpers/cli.ts";
import { RESULT_SCHEMAS, nonCamelKeys, type ResultCommand } from "../../src/contract/results.ts";
import { run as runFacade, FILE_WRITE_MAX_BYTES } from "../../src/index.ts";

/** A command's --json stdout, checked against its result schema and the camelCase rule. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function shaped(command: ResultCommand, stdout: string): any {
  const body = JSON.parse(stdout);
  const r = RESULT_SCHEMAS[command].safeParse(body);
  assert.ok(r.success, `${command} --json does not match its schema: ${JSON.stringify(r.error?.issues)}\n${stdout}`);
  assert.deepEqual(nonCamelKeys(body), [], `${command} --json has non-camelCase keys`);
  return body;
}

let fx: WorkspaceFixture;
let imageRef: string;

/** Run the CLI in-process; returns its exit code and output. */
async function cli(...args: string[]) {
  const r = await runCli(["--state-dir", fx.stateDir, ...args]);
  return { code: r.code, stdout: r.out, stderr: r.err };
}

function liveProcesses() {
  return findProcessesMentioning(fx.stateDir).filter((p) => /qemu-system|supervisor\/main/.test(p.cmdline));
}

before(async () => {
  fx = await workspaceFixture("lifecycle");
  imageRef = await fx.image("lifecycle/busybox:1");
  // The CLI's own create path: pull over plain HTTP from the loopback registry, reuse the kernel .debs.
  process.env.MICROAGENT_INSECURE_REGISTRIES = fx.registry.host;
  process.env.MICROAGENT_KERNEL_CACHE ??= join(tmpdir(), "microagent-test-kernel-cache");
});

after(async () => {
  // Orphan check: nothing this suite started may survive it (supervisors that just recorded their
  // final state get a moment to exit).
  const left = await reapVmProcesses(fx.stateDir);
  await fx.cleanup();
  assert.deepEqual(left, [], "a qemu or supervisor process survived the suite");
});

test("workspace: persistent workspace through start, exec, halt/start, quarantine, kill and a dead supervisor", { timeout: 600_000 }, async () => {
  const name = "persist";
  await createWorkspace({ name, stateDir: fx.stateDir, image: imageRef, providers: realProviders(), profile: "tiny" });
  const paths = workspacePaths(fx.stateDir, name);
  try {
    const early = await cli("connect", name, "--send", "true");
    assert.equal(early.code, 1);
    assert.match(early.stderr, /console input is unavailable/);

    // --- boot 1 (through the CLI) ---
    const started = await cli("--json", "start", name);
    assert.equal(started.code, 0, started.stdout + started.stderr);
    const startBody = shaped("start", started.stdout);
    assert.equal(startBody.state, "running");
    assert.ok(["kvm", "tcg"].includes(startBody.host.accel), started.stdout);
    assert.ok(startBody.host.accelReason, "start reports why it chose the accelerator");

    const st = await cli("--json", "status", name);
    assert.equal(st.code, 0, st.stderr);
    const stBody = shaped("status", st.stdout);
    assert.equal(stBody.event.state, "running");
    assert.equal(stBody.readiness.execReady.ready, true, st.stdout);

    const ready = await probeReadiness(name, { stateDir: fx.stateDir });
    assert.equal(ready.guestReady.ready, true);
    assert.equal(ready.execReady.ready, true);
    assert.equal(ready.shellReady.ready, true);

    // exec statuses and exit-code passthrough
    const ok = await cli("exec", name, "--", "sh", "-c", "echo hello from $(hostname); echo oops >&2; exit 5");
    assert.equal(ok.code, 5);
    assert.equal(ok.stdout, `hello from ${name}\n`);
    assert.equal(ok.stderr, "oops\n");
    const js = await cli("--json", "exec", name, "--", "sh", "-c", "printf abc");
    assert.equal(js.code, 0);
    const body = shaped("exec", js.stdout);
    assert.equal(body.status, "exited");
    assert.equal(body.exitCode, 0);
    assert.equal(body.protocolVersion, "exec.v1");
    assert.equal(Buffer.from(body.stdout, "base64").toString(), "abc");
    assert.equal((await cli("exec", name, "--", "/no/such/binary")).code, 127);
    assert.equal((await cli("exec", name, "--timeout", "1s", "--", "sleep", "30")).code, 124);
    assert.equal((await cli("exec", name, "--", "sh", "-c", "kill -9 $$")).code, 137);

    // the console: a shell prompt, one line sent, its output back
    const con = await cli("connect", name, "--send", "echo console-$((40+2))");
    assert.equal(con.code, 0, con.stderr);
    assert.equal(con.stdout, "console-42\n");
    assert.equal((await cli("wait", name, "--timeout", "200ms")).code, 75);

    // the library facade: awaitable and iterable
    const ws = await Workspace.connect(name, { stateDir: fx.stateDir });
    const h = ws.exec(["sh", "-c", "echo one; echo two"]);
    const seen: string[] = [];
    for await (const c of h) seen.push(c.data.toString());
    assert.equal(seen.join(""), "one\ntwo\n");
    assert.equal((await h).exitCode, 0);
    assert.equal((await ws.exec(["sh", "-c", "echo persisted > /root/marker; sync"])).exitCode, 0);

    // the facade by name: get, status (probes readiness by itself), files through exec
    const got = await Workspace.get(name, { stateDir: fx.stateDir });
    const gotStatus = await got.status();
    assert.equal(gotStatus.readiness.ready, true, JSON.stringify(gotStatus.readiness));
    assert.equal((gotStatus.readiness.execReady as { ready: boolean }).ready, true);
    // Larger than one control-protocol line (1 MiB): the content is streamed as exec stdin.
    const head = Buffer.concat([Buffer.from("h\u00e9llo\n"), Buffer.from([0, 1, 2, 255])]);
    const payload = Buffer.concat([head, randomBytes(3 * 1024 * 1024 + 17)]);
    await got.files.write("/root/facade.bin", payload);
    assert.ok((await got.files.read("/root/facade.bin")).equals(payload), "files.read returns the bytes files.write wrote");
    assert.equal((await got.exec(["wc", "-c", "/root/facade.bin"])).stdout.toString().trim().split(/\s+/)[0], String(payload.length));
    await assert.rejects(got.files.read("/root/no-such-file"), (e: Error & { code?: string }) => e.code === "FILE_READ_FAILED" && /no-such-file/.test(e.message));
    await assert.rejects(got.files.write("/no-such-dir/x", "x"), (e: Error & { code?: string }) => e.code === "FILE_WRITE_FAILED");
    await assert.rejects(got.files.write("/root/big", Buffer.alloc(FILE_WRITE_MAX_BYTES + 1)), (e: Error & { code?: string }) => e.code === "FILE_TOO_LARGE");
    await assert.rejects(got.files.read("relative/path"), (e: Error & { code?: string }) => e.code === "INVALID_ARGUMENT");

    // a caller that gives up on an exec kills the command in the guest
    const ac = new AbortController();
    const hang = ws.exec(["sleep", "37"], { signal: ac.signal }).result;
    await new Promise((r) => setTimeout(r, 500));
    ac.abort(new Error("caller gave up"));
    await assert.rejects(hang, /caller gave up/);
    await new Promise((r) => setTimeout(r, 300));
    const ps = await ws.exec(["sh", "-c", "ps | grep 'sleep 37' | grep -v grep | wc -l"]);
    assert.equal(ps.stdout.toString().trim(), "0");

    // delete refused while running, with the seed's remedy
    await assert.rejects(deleteWorkspace(name, { stateDir: fx.stateDir }), (e: Error & { code?: string; remediation?: string }) => {
      assert.equal(e.code, "WORKSPACE_RUNNING");
      assert.match(e.remediation ?? "", /halt/);
      return true;
    });

    // halt keeps the disk
    const halted = await cli("--json", "halt", name);
    assert.equal(halted.code, 0, halted.stdout + halted.stderr);
    assert.equal(shaped("halt", halted.stdout).state, "halted");

    // --- boot 2: the file written before halt is still there ---
    await startWorkspace(name, { stateDir: fx.stateDir });
    const ws2 = await Workspace.connect(name, { stateDir: fx.stateDir });
    assert.equal((await ws2.exec(["cat", "/root/marker"])).stdout.toString(), "persisted\n");

    // quarantine severs exec and console; start is refused with the seed's wording; kill ends it
    const q = await cli("--json", "quarantine", name);
    assert.equal(q.code, 0, q.stdout + q.stderr);
    assert.equal(shaped("quarantine", q.stdout).state, "quarantined");
    assert.equal(JSON.parse(q.stdout).frozen, true, "the backend's pause capability (QMP stop) froze the VM");
    const refusedExec = await cli("--json", "exec", name, "--", "true");
    assert.notEqual(refusedExec.code, 0);
    assert.equal(shaped("error", refusedExec.stdout).error.code, "QUARANTINED");
    const refusedStart = await cli("--json", "start", name);
    assert.equal(refusedStart.code, 1);
    const startErr = JSON.parse(refusedStart.stdout).error;
    assert.match(startErr.message, /quarantined/);
    assert.match(startErr.remediation, /microagent halt persist/);
    const killed = await cli("--json", "kill", name);
    assert.equal(killed.code, 0, killed.stdout + killed.stderr);
    assert.equal(shaped("kill", killed.stdout).state, "stopped");

    // --- boot 3: SIGKILL the supervisor; the next read reconciles, and no VM is left behind ---
    await startWorkspace(name, { stateDir: fx.stateDir });
    const runtime = await readRuntime(paths);
    assert.ok(runtime?.vmmPid);
    process.kill(runtime.supervisorPid, "SIGKILL");
    // QEMU runs with a parent-death signal: it dies with its supervisor, before anyone reconciles.
    for (let i = 0; i < 100 && processAlive(runtime.vmmPid, runtime.vmmStartTime); i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(processAlive(runtime.vmmPid, runtime.vmmStartTime), false, "QEMU outlived its SIGKILLed supervisor");
    const status = await workspaceStatus(name, { stateDir: fx.stateDir, verify: false });
    assert.equal(status.event.state, "failed");
    assert.match(status.event.detail, /supervisor pid \d+ (died|is gone)/);
    for (let i = 0; i < 40 && liveProcesses().length > 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(liveProcesses(), []);

    // --- boot 4: QEMU dies under an in-flight exec: the exec fails with VM_DIED and the serial tail ---
    await startWorkspace(name, { stateDir: fx.stateDir });
    const rt4 = await readRuntime(paths);
    assert.ok(rt4?.vmmPid);
    const ws4 = await Workspace.connect(name, { stateDir: fx.stateDir });
    const inflight = ws4.exec(["sleep", "60"]).result;
    await new Promise((r) => setTimeout(r, 300));
    process.kill(rt4.vmmPid, "SIGKILL");
    await assert.rejects(inflight, (e: Error & { code?: string }) => {
      assert.equal(e.code, "VM_DIED");
      assert.match(e.message, /killed by SIGKILL/);
      assert.match(e.message, /serial log tail/);
      return true;
    });
    const after4 = await cli("--json", "wait", name, "--timeout", "30s");
    assert.equal(after4.code, 1);
    assert.equal(shaped("wait", after4.stdout).state, "failed");
    assert.match(JSON.parse(after4.stdout).detail, /the VM exited unexpectedly \(killed by SIGKILL\)/);

    const states = (await readEvents(name, { stateDir: fx.stateDir })).map((e) => e.state);
    assert.deepEqual(states, [
      "prepared",
      "starting",
      "running",
      "stopping",
      "halted",
      "starting",
      "running",
      "quarantined",
      "stopped",
      "starting",
      "running",
      "failed",
      "starting",
      "running",
      "failed",
    ]);
  } finally {
    await stopWorkspace(name, "kill", { stateDir: fx.stateDir }).catch(() => {});
    await deleteWorkspace(name, { stateDir: fx.stateDir, force: true }).catch(() => {});
  }
});

test("workspace: `run` through the CLI streams output, passes the exit code through, and logs show why the workload ended", { timeout: 300_000 }, async () => {
  const r = await cli(
    "run", "--keep", "--name", "oneshot", "--profile", "tiny", "-e", "GREETING=hi there", "--setup", "echo set-up > /tmp/setup-ran",
    imageRef, "sh", "-c", "echo run-marker-out; cat /tmp/setup-ran; echo \"$GREETING\"; echo run-marker-err >&2; exit 7",
  );
  try {
    assert.equal(r.code, 7, r.stderr);
    assert.equal(r.stdout, "run-marker-out\nset-up\nhi there\n");
    assert.match(r.stderr, /run-marker-err\n/);
    assert.match(r.stderr, /kept workspace oneshot/);
    const logs = await readLogs("oneshot", { stateDir: fx.stateDir });
    assert.match(logs, /run-marker-out/);
    const events = await readEvents("oneshot", { stateDir: fx.stateDir });
    assert.deepEqual(events.map((e) => e.state), ["prepared", "starting", "running", "failed"]);
    assert.equal(events.at(-1)?.detail, "workload exited with code 7");
    const result = JSON.parse(readFileSync(workspacePaths(fx.stateDir, "oneshot").result, "utf8"));
    assert.equal(result.exitCode, 7);
  } finally {
    await deleteWorkspace("oneshot", { stateDir: fx.stateDir, force: true });
  }
  assert.deepEqual(readdirSync(`${fx.stateDir}/workspaces`).filter((n) => !n.startsWith(".")), []);
});

test("workspace: `run --json` and the facade's run() return the camelCase run result with the output and the accelerator", { timeout: 300_000 }, async () => {
  const r = await cli("--json", "run", "--profile", "tiny", imageRef, "sh", "-c", "printf json-out; printf json-err >&2; exit 3");
  assert.equal(r.code, 3, r.stdout + r.stderr);
  const body = shaped("run", r.stdout);
  assert.equal(body.exitCode, 3);
  assert.equal(body.result.exitCode, 3);
  assert.equal(body.finalState, "failed");
  assert.equal(Buffer.from(body.result.stdout, "base64").toString(), "json-out");
  assert.equal(Buffer.from(body.result.stderr, "base64").toString(), "json-err");
  assert.ok(["kvm", "tcg"].includes(body.host.accel), r.stdout);
  assert.ok(body.timingsMs.total >= body.timingsMs.create);

  const seen: string[] = [];
  const f = await runFacade({ image: imageRef, cmd: ["sh", "-c", "echo facade-run"], resources: { profile: "tiny" } }, { stateDir: fx.stateDir, onOutput: (_s, d) => seen.push(d.toString()) });
  assert.ok(RESULT_SCHEMAS.run.safeParse(f).success, JSON.stringify(f));
  assert.equal(f.exitCode, 0);
  assert.equal(Buffer.from(f.result.stdout, "base64").toString(), "facade-run\n");
  assert.equal(seen.join(""), "facade-run\n");
  await assert.rejects(runFacade({ image: imageRef, timeoutMs: -1 } as never, { stateDir: fx.stateDir }), (e: Error & { code?: string }) => e.code === "INVALID_ARGUMENT" && /timeoutMs/.test(e.message));
  assert.deepEqual(readdirSync(`${fx.stateDir}/workspaces`).filter((n) => !n.startsWith(".")), []);
});

test("workspace: an entrypoint that cannot start fails the workspace, and logs show why", { timeout: 300_000 }, async () => {
  const name = "badentry";
  await createWorkspace({ name, stateDir: fx.stateDir, image: imageRef, entrypoint: ["/app/missing.sh"], providers: realProviders(), profile: "tiny" });
  try {
    const started = await cli("start", name, "--wait", "--wait-timeout", "60s");
    assert.equal(started.code, 1, started.stdout + started.stderr);
    assert.match(started.stdout, /badentry is failed: workload failed to start: .*missing\.sh/);
    const logs = await cli("logs", name);
    assert.match(logs.stdout, /missing\.sh/);
    const status = await workspaceStatus(name, { stateDir: fx.stateDir, verify: false });
    assert.equal(status.event.state, "failed");
  } finally {
    await deleteWorkspace(name, { stateDir: fx.stateDir, force: true });
  }
});

test("workspace: run --timeout kills the VM and exits 124", { timeout: 300_000 }, async () => {
  const started = Date.now();
  const r = await cli("run", "--timeout", "2s", "--profile", "tiny", imageRef, "sleep", "60");
  assert.equal(r.code, 124, r.stderr);
  assert.match(r.stderr, /timed out after 2s/);
  assert.ok(Date.now() - started < 60_000);
  assert.deepEqual(readdirSync(`${fx.stateDir}/workspaces`).filter((n) => !n.startsWith(".")), []);
});

test("workspace: a boot that overruns its bound fails with the reason and the serial tail", { timeout: 120_000 }, async () => {
  const name = "slowboot";
  await createWorkspace({ name, stateDir: fx.stateDir, image: imageRef, providers: realProviders(), profile: "tiny" });
  process.env.MICROAGENT_BOOT_TIMEOUT_MS = "700";
  try {
    await assert.rejects(startWorkspace(name, { stateDir: fx.stateDir }), (e: Error & { code?: string }) => {
      assert.equal(e.code, "BOOT_FAILED");
      assert.match(e.message, /timed out after 700 ms/);
      assert.match(e.message, /serial log tail/);
      return true;
    });
    const status = await workspaceStatus(name, { stateDir: fx.stateDir, verify: false });
    assert.equal(status.event.state, "failed");
    assert.match(status.event.detail, /timed out after 700 ms/);
  } finally {
    delete process.env.MICROAGENT_BOOT_TIMEOUT_MS;
    await deleteWorkspace(name, { stateDir: fx.stateDir, force: true });
  }
});

/**
 * Snapshots on real VMs, through the CLI and the library: a background process's in-memory counter
 * survives snapshot + restore (memory, not disk); a file written before the snapshot is there after
 * a restore and in a fork; two restores of one snapshot read different /dev/urandom bytes and have
 * the host's time; two forks run side by side with their own hostnames and random streams, and a
 * write in one is invisible in the other; a restore refuses a snapshot whose kernel changed; a kill
 * -9 of QEMU during `snapshot create` leaves nothing listed and the workspace reconciled.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { appendFile, copyFile, open, readdir, readFile, stat } from "node:fs/promises";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { workspaceFixture, realProviders, type WorkspaceFixture } from "../helpers/workspace.ts";
import { runCli } from "../helpers/cli.ts";
import { createWorkspace } from "../../src/workspace/create.ts";
import { readManifest } from "../../src/workspace/manifest.ts";
import { workspacePaths } from "../../src/workspace/paths.ts";
import { readRuntime } from "../../src/workspace/runtime.ts";
import { stopWorkspace } from "../../src/api/lifecycle.ts";
import { Workspace } from "../../src/api/workspace.ts";
import { RESULT_SCHEMAS, nonCamelKeys, type ResultCommand } from "../../src/contract/results.ts";

let fx: WorkspaceFixture;
const live = new Set<string>();

before(async () => {
  fx = await workspaceFixture("snapshot");
  process.env.MICROAGENT_KERNEL_CACHE ??= join(tmpdir(), "microagent-test-kernel-cache");
});

after(async () => {
  for (const n of live) await stopWorkspace(n, "kill", { stateDir: fx.stateDir }).catch(() => {});
  await fx.cleanup();
});

async function cli(...args: string[]) {
  const r = await runCli(["--state-dir", fx.stateDir, ...args]);
  return { code: r.code, stdout: r.out, stderr: r.err };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function shaped(command: ResultCommand, stdout: string): any {
  const body = JSON.parse(stdout);
  const r = RESULT_SCHEMAS[command].safeParse(body);
  assert.ok(r.success, `${command} --json does not match its schema: ${JSON.stringify(r.error?.issues)}\n${stdout}`);
  assert.deepEqual(nonCamelKeys(body), [], `${command} --json has non-camelCase keys`);
  return body;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function json(command: ResultCommand, ...args: string[]): Promise<any> {
  const r = await cli("--json", ...args);
  assert.equal(r.code, 0, `${args.join(" ")}: ${r.stdout}${r.stderr}`);
  return shaped(command, r.stdout);
}

async function refusedCode(...args: string[]): Promise<{ code: string; message: string }> {
  const r = await cli("--json", ...args);
  assert.notEqual(r.code, 0, `${args.join(" ")} should be refused: ${r.stdout}${r.stderr}`);
  const e = shaped("error", r.stdout).error;
  return { code: e.code, message: e.message };
}

async function shell(name: string) {
  const ws = await Workspace.connect(name, { stateDir: fx.stateDir });
  return async (script: string) => {
    const r = await ws.exec(["/bin/sh", "-c", script]);
    assert.equal(r.exitCode, 0, `${name}: ${script}: ${r.stderr.toString()}`);
    return r.stdout.toString().trim();
  };
}

const LOOP = "i=0; echo $$ > /tmp/pid; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done";
const RAND = "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'";

async function startLoop(sh: (s: string) => Promise<string>): Promise<string> {
  await sh(`setsid sh -c '${LOOP}' </dev/null >/dev/null 2>&1 &`);
  let pid = "";
  for (let i = 0; i < 50 && !/^\d+$/.test(pid); i++) {
    await new Promise((r) => setTimeout(r, 100));
    pid = await sh("cat /tmp/pid 2>/dev/null || true");
  }
  assert.match(pid, /^\d+$/, "the background loop started");
  return pid;
}

test("snapshot create/list/restore: memory survives, the disk is the snapshot's, entropy and clock are fresh, sizes are listed", { timeout: 900_000 }, async (t) => {
  const NAME = "snapsrc";
  const imageRef = await fx.image("snap/busybox:1");
  await createWorkspace({ name: NAME, stateDir: fx.stateDir, image: imageRef, providers: realProviders(), profile: "tiny", network: "isolated" });
  live.add(NAME);
  await json("start", "start", NAME);
  let sh = await shell(NAME);
  const pid = await startLoop(sh);
  await sh("echo before-snapshot > /root/marker; sync");

  // Tag validation before anything runs.
  assert.equal((await refusedCode("snapshot", "create", NAME, ".hidden")).code, "SNAPSHOT_INVALID_TAG");

  const created = await json("snapshot create", "snapshot", "create", NAME, "base");
  assert.equal(created.snapshot.tag, "base");
  assert.equal(created.state, "running", "resumed after the capture");
  assert.ok(created.snapshot.stateBytes > 1024 * 1024, `the state file holds memory (${created.snapshot.stateBytes} bytes)`);
  t.diagnostic(`snapshot create: ${JSON.stringify(created.timingsMs)}; state ${created.snapshot.stateBytes} bytes, disk layer ${created.snapshot.diskBytes} bytes`);
  const atSnapshot = Number(await sh("cat /tmp/count"));
  assert.equal(await sh("cat /root/marker"), "before-snapshot");
  assert.equal((await refusedCode("snapshot", "create", NAME, "base")).code, "SNAPSHOT_EXISTS");

  // Files are 0600, the directory 0700; the running VM now writes to a new top layer.
  const dir = join(workspacePaths(fx.stateDir, NAME).dir, "snapshots", "base");
  assert.equal((await stat(dir)).mode & 0o777, 0o700);
  for (const f of await readdir(dir)) assert.equal((await stat(join(dir, f))).mode & 0o777, 0o600, f);
  const manifest = await readManifest(workspacePaths(fx.stateDir, NAME));
  assert.match(manifest.artifacts.disk.path, /disk-[a-z0-9]+\.qcow2$/);

  // The workspace goes on: the counter advances, a write after the snapshot lands in the new layer.
  await new Promise((r) => setTimeout(r, 600));
  assert.ok(Number(await sh("cat /tmp/count")) > atSnapshot, "the guest runs on after the capture");
  await sh("echo after-snapshot > /root/marker; sync");

  const listed = await json("snapshot list", "snapshot", "list", NAME);
  assert.deepEqual(listed.snapshots.map((s: { tag: string }) => s.tag), ["base"]);
  assert.equal(listed.snapshots[0].sizeBytes, listed.snapshots[0].stateBytes + listed.snapshots[0].diskBytes);
  const status = await json("status", "status", NAME);
  assert.deepEqual(status.snapshots.map((s: { tag: string }) => s.tag), ["base"], "status lists snapshots with sizes");

  // Restore refuses a running workspace.
  assert.equal((await refusedCode("start", NAME, "--from-snapshot", "base")).code, "WORKSPACE_INVALID_TRANSITION");
  await json("halt", "halt", NAME);

  const restores: { rand: string; count: number; clockSkew: number }[] = [];
  for (let i = 0; i < 2; i++) {
    const started = await json("start", "start", NAME, "--from-snapshot", "base");
    assert.deepEqual(started.restoredFrom, { workspace: NAME, tag: "base" });
    sh = await shell(NAME);
    assert.equal(await sh("cat /tmp/pid"), pid, "the same process, from the saved memory");
    assert.equal(await sh(`kill -0 ${pid} && echo alive`), "alive");
    const count = Number(await sh("cat /tmp/count"));
    assert.ok(count >= atSnapshot && count <= atSnapshot + 3, `the counter resumes from the snapshot (${atSnapshot} -> ${count})`);
    await new Promise((r) => setTimeout(r, 600));
    assert.ok(Number(await sh("cat /tmp/count")) > count, "and counts on");
    assert.equal(await sh("cat /root/marker"), "before-snapshot", "the disk is the snapshot's, not what was written after");
    const guestNow = Number(await sh("date +%s"));
    restores.push({ rand: await sh(RAND), count, clockSkew: Math.abs(Date.now() / 1000 - guestNow) });
    await sh("echo restore-write > /root/marker; sync");
    await json("halt", "halt", NAME);
    if (i === 0) await new Promise((r) => setTimeout(r, 3000)); // the second restore is of an older snapshot
  }
  t.diagnostic(`restores: ${JSON.stringify(restores)}`);
  assert.notEqual(restores[0]!.rand, restores[1]!.rand, "two restores of one snapshot read different /dev/urandom bytes");
  for (const r of restores) assert.ok(r.clockSkew <= 3, `the guest clock is the host's after a restore (off by ${r.clockSkew} s)`);
  const events = (await cli("events", NAME)).stdout;
  assert.match(events, /restored from snapshot base .*guest RNG reseeded \(64 bytes\), clock stepped/);

  // A plain start boots cold from the workspace's current disk (the last restore's writes).
  await json("start", "start", NAME);
  sh = await shell(NAME);
  assert.equal(await sh("cat /root/marker"), "restore-write");
  assert.equal(await sh("cat /tmp/pid 2>/dev/null || echo none"), "none", "a cold boot has no saved memory");
  await json("halt", "halt", NAME);

  // Delete: gone from the list; the layer the workspace's disk is based on stays.
  const del = await json("snapshot delete", "snapshot", "delete", NAME, "base");
  assert.equal(del.deleted, true);
  assert.deepEqual((await json("snapshot list", "snapshot", "list", NAME)).snapshots, []);
  assert.equal((await refusedCode("start", NAME, "--from-snapshot", "base")).code, "SNAPSHOT_NOT_FOUND");
  await json("start", "start", NAME);
  assert.equal(await (await shell(NAME))("cat /root/marker"), "restore-write", "the disk chain survived the snapshot's delete");
  await json("kill", "kill", NAME);
});

test("a restore refuses a snapshot whose kernel changed, naming the kernel", { timeout: 600_000 }, async () => {
  const NAME = "snapdiverge";
  const imageRef = await fx.image("snap/busybox:2");
  const stateDir = fx.stateDir;
  const r = await createWorkspace({ name: NAME, stateDir, image: imageRef, providers: realProviders(), profile: "tiny", network: "isolated" });
  live.add(NAME);
  await json("start", "start", NAME);
  await json("snapshot create", "snapshot", "create", NAME, "k1");
  await json("kill", "kill", NAME);
  // Point the workspace at a changed copy of its kernel (the shared cache stays untouched).
  const paths = workspacePaths(stateDir, NAME);
  const changed = join(paths.dir, "vmlinuz-changed");
  await copyFile(r.manifest.artifacts.kernel.path, changed);
  await appendFile(changed, Buffer.from("changed"));
  const m = await readManifest(paths);
  const { writeManifest } = await import("../../src/workspace/manifest.ts");
  await writeManifest(paths, { ...m, artifacts: { ...m.artifacts, kernel: { ...m.artifacts.kernel, path: changed } } });
  const e = await refusedCode("start", NAME, "--from-snapshot", "k1");
  assert.equal(e.code, "SNAPSHOT_DIVERGED");
  assert.match(e.message, /the kernel changed since it was taken/);
  assert.equal((await json("status", "status", NAME)).workspace.state, "stopped", "nothing was started");
});

test("kill -9 of QEMU during snapshot create leaves nothing listed and the workspace reconciled", { timeout: 600_000 }, async () => {
  const NAME = "snapkill";
  const imageRef = await fx.image("snap/busybox:3");
  await createWorkspace({ name: NAME, stateDir: fx.stateDir, image: imageRef, providers: realProviders(), profile: "tiny", network: "isolated" });
  live.add(NAME);
  await json("start", "start", NAME);
  const rt = await readRuntime(workspacePaths(fx.stateDir, NAME));
  assert.ok(rt?.vmmPid);
  const snapDir = join(workspacePaths(fx.stateDir, NAME).dir, "snapshots");
  const capture = cli("--json", "snapshot", "create", NAME, "doomed");
  // Kill QEMU once the capture has begun (its temp directory exists).
  for (let i = 0; i < 400; i++) {
    const names = await readdir(snapDir).catch(() => [] as string[]);
    if (names.some((n) => n.startsWith(".tmp-doomed"))) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  process.kill(rt.vmmPid, "SIGKILL");
  const r = await capture;
  assert.notEqual(r.code, 0, `the capture fails: ${r.stdout}`);
  const listed = await json("snapshot list", "snapshot", "list", NAME);
  assert.deepEqual(listed.snapshots, [], "nothing half-written is listed");
  assert.deepEqual((await readdir(snapDir)).filter((n) => n.startsWith(".")), [], "the debris was swept");
  const st = await json("status", "status", NAME);
  assert.ok(["failed", "stopped"].includes(st.workspace.state), `reconciled: ${st.workspace.state}`);
  // And it boots again from the disk the manifest names.
  await json("start", "start", NAME);
  await json("kill", "kill", NAME);
});

test("two forks of one snapshot run side by side with their own hostname, MAC and random stream; writes stay apart; the source needs them gone before delete", { timeout: 900_000 }, async (t) => {
  const SRC = "forksrc";
  const imageRef = await fx.image("snap/busybox:4");
  await createWorkspace({ name: SRC, stateDir: fx.stateDir, image: imageRef, providers: realProviders(), profile: "tiny" });
  live.add(SRC);
  await json("start", "start", SRC);
  const src = await shell(SRC);
  const pid = await startLoop(src);
  await src("echo from-source > /root/marker; sync");
  await json("snapshot create", "snapshot", "create", SRC, "prepared");

  const forks = ["fork-a", "fork-b"];
  const seen: Record<string, { hostname: string; mac: string; rand: string; pid: string; route: string; dns: string }> = {};
  for (const f of forks) {
    const t0 = performance.now();
    const created = await json("create", "create", f, "--from-snapshot", `${SRC}:prepared`);
    t.diagnostic(`${f}: forked and restored in ${Math.round(performance.now() - t0)} ms`);
    live.add(f);
    assert.deepEqual(created.fromSnapshot, { workspace: SRC, tag: "prepared" });
    assert.equal(created.state, "running");
    assert.deepEqual(created.start.restoredFrom, { workspace: SRC, tag: "prepared" });
    const sh = await shell(f);
    assert.equal(await sh("cat /root/marker"), "from-source", "the file written before the snapshot is in the fork");
    seen[f] = {
      hostname: await sh("hostname"),
      mac: await sh("cat /sys/class/net/eth0/address"),
      rand: await sh(RAND),
      pid: await sh("cat /tmp/pid"),
      route: await sh("awk '$2 == \"00000000\" {print $1}' /proc/net/route"),
      dns: await sh("nslookup host.microagent.internal 10.200.0.1 >/dev/null 2>&1 && echo dns-ok || echo dns-failed"),
    };
  }
  t.diagnostic(JSON.stringify(seen));
  const a = seen["fork-a"]!;
  const b = seen["fork-b"]!;
  assert.equal(a.hostname, "fork-a");
  assert.equal(b.hostname, "fork-b");
  assert.notEqual(a.mac, b.mac, "each fork has its own MAC");
  // The host stack's idea of the guest MAC is the one the guest now uses (its drop counters are data keys).
  const net = JSON.parse((await cli("--json", "network", "fork-a")).stdout) as { guestMac?: string; mac?: string; addressing?: { guestMac?: string } };
  t.diagnostic(`fork-a network: ${JSON.stringify(net).slice(0, 600)}`);
  assert.ok(JSON.stringify(net).includes(a.mac), "the host stack expects the MAC the fork's guest uses");
  assert.equal(a.route, "eth0", "the default route is back after re-addressing");
  assert.equal(a.dns, "dns-ok", "the re-addressed NIC carries traffic");
  assert.equal(b.dns, "dns-ok");
  assert.notEqual(a.rand, b.rand, "the forks do not share a random stream");
  assert.equal(a.pid, pid);
  assert.equal(b.pid, pid, "the same process, forked from memory");

  // Writes stay in their own overlay.
  const shA = await shell("fork-a");
  const shB = await shell("fork-b");
  await shA("echo only-in-a > /root/a; sync");
  assert.equal(await shB("cat /root/a 2>/dev/null || echo absent"), "absent");
  assert.equal(await src("cat /root/a 2>/dev/null || echo absent"), "absent");

  // The source cannot be deleted while forks are layered on it; the snapshot itself can.
  await json("kill", "kill", SRC);
  const refused = await refusedCode("delete", SRC);
  assert.equal(refused.code, "SNAPSHOT_IN_USE");
  assert.match(refused.message, /fork-a/);
  await json("snapshot delete", "snapshot", "delete", SRC, "prepared");
  assert.equal(await shA("cat /root/marker"), "from-source", "a fork keeps its disk after the snapshot's delete");
  for (const f of forks) await json("delete", "delete", "--force", f);
  await json("delete", "delete", "--force", SRC);
});

test("snapshot of a paused workspace keeps it paused, --leave-paused leaves a running one paused; kill -9 of the supervisor mid-capture leaves nothing listed", { timeout: 600_000 }, async () => {
  const NAME = "snappause";
  const imageRef = await fx.image("snap/busybox:5");
  await createWorkspace({ name: NAME, stateDir: fx.stateDir, image: imageRef, providers: realProviders(), profile: "tiny", network: "isolated" });
  live.add(NAME);
  await json("start", "start", NAME);
  const left = await json("snapshot create", "snapshot", "create", NAME, "left", "--leave-paused");
  assert.equal(left.state, "paused");
  assert.equal(left.wasPaused, false);
  assert.equal((await json("status", "status", NAME)).workspace.state, "paused");
  assert.equal((await refusedCode("exec", NAME, "true")).code, "WORKSPACE_PAUSED");
  const again = await json("snapshot create", "snapshot", "create", NAME, "while-paused");
  assert.equal(again.state, "paused", "a paused workspace stays paused");
  assert.equal(again.wasPaused, true);
  assert.equal(again.timingsMs.pause, 0);
  await json("resume", "resume", NAME);
  assert.equal(await (await shell(NAME))("echo ok"), "ok");

  // kill -9 of the supervisor (QEMU goes with it) while the capture runs.
  const rt = await readRuntime(workspacePaths(fx.stateDir, NAME));
  assert.ok(rt?.supervisorPid);
  const snapDir = join(workspacePaths(fx.stateDir, NAME).dir, "snapshots");
  const capture = cli("--json", "snapshot", "create", NAME, "doomed");
  for (let i = 0; i < 400; i++) {
    const names = await readdir(snapDir).catch(() => [] as string[]);
    if (names.some((n) => n.startsWith(".tmp-doomed"))) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  process.kill(rt.supervisorPid, "SIGKILL");
  assert.notEqual((await capture).code, 0);
  const listed = await json("snapshot list", "snapshot", "list", NAME);
  assert.deepEqual(listed.snapshots.map((s: { tag: string }) => s.tag), ["left", "while-paused"], "only the complete snapshots are listed");
  assert.deepEqual((await readdir(snapDir)).filter((n) => n.startsWith(".")), [], "the debris was swept");
  const st = await json("status", "status", NAME);
  assert.ok(["failed", "stopped"].includes(st.workspace.state), `reconciled: ${st.workspace.state}`);
  // Both snapshots still restore.
  await json("start", "start", NAME, "--from-snapshot", "left");
  assert.equal(await (await shell(NAME))("echo restored"), "restored");
  await json("kill", "kill", NAME);
});

test("run from a warm snapshot: the first run captures it, the next restore it with identical results and their own hostname, MAC and randomness; --cold skips it", { timeout: 900_000 }, async (t) => {
  const imageRef = await fx.image("snap/busybox:6");
  const script =
    "echo same-output; hostname; cat /sys/class/net/eth0/address; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s; " +
    "nslookup host.microagent.internal 10.200.0.1 >/dev/null 2>&1 && echo dns-ok || echo dns-failed; exit 3";
  const runs: { warm?: { key: string; restored: boolean }; exitCode: number; lines: string[]; workspace: string; totalMs: number }[] = [];
  for (const name of ["warm-one", "warm-two", "warm-three"]) {
    const r = await cli("--json", "run", "--name", name, "--profile", "tiny", imageRef, "sh", "-c", script);
    const body = shaped("run", r.stdout);
    runs.push({ warm: body.warm, exitCode: body.exitCode, lines: Buffer.from(body.result.stdout, "base64").toString().trim().split("\n"), workspace: body.workspace, totalMs: body.timingsMs.total });
  }
  t.diagnostic(JSON.stringify(runs));
  const [first, second, third] = runs as [(typeof runs)[0], (typeof runs)[0], (typeof runs)[0]];
  assert.equal(first.warm?.restored, false, "the first run of a combination boots cold and captures");
  assert.equal(second.warm?.restored, true, "the second is restored from the warm snapshot");
  assert.equal(third.warm?.restored, true);
  assert.equal(second.warm?.key, first.warm?.key);
  const { macFor } = await import("../../src/backend/linux-qemu.ts");
  for (const r of runs) {
    assert.equal(r.exitCode, 3, "the same exit code");
    assert.equal(r.lines[0], "same-output", "the same output");
    assert.equal(r.lines[1], r.workspace, "each run's own hostname");
    assert.equal(r.lines[2], macFor(r.workspace), "each run's own MAC");
    assert.ok(Math.abs(Number(r.lines[4]) - Date.now() / 1000) < 60, "the clock is now");
    assert.equal(r.lines[5], "dns-ok", "the NIC works (the stack's DNS answers through it)");
  }
  assert.notEqual(second.lines[3], third.lines[3], "two restores of the warm snapshot read different random bytes");
  const cold = shaped("run", (await cli("--json", "run", "--cold", "--profile", "tiny", imageRef, "sh", "-c", script)).stdout);
  assert.equal(cold.warm, undefined, "--cold neither restores nor captures");
  assert.equal(cold.exitCode, 3);
  t.diagnostic(`run totals: first ${first.totalMs} ms, warm ${second.totalMs}/${third.totalMs} ms, cold ${cold.timingsMs.total} ms`);

  // A warm entry whose state file changed (one byte, same size) is caught by its hash while QEMU starts:
  // the run fails with SNAPSHOT_CORRUPT before any guest code runs, the entry is gone, the next run is cold.
  const entryDir = join(fx.stateDir, "warm", first.warm!.key);
  const statePath = join(entryDir, "state");
  const fh = await open(statePath, "r+");
  try {
    const b = Buffer.alloc(1);
    const at = Math.floor((await fh.stat()).size / 2);
    await fh.read(b, 0, 1, at);
    b[0] = b[0]! ^ 0xff;
    await fh.write(b, 0, 1, at);
  } finally {
    await fh.close();
  }
  const bad = await cli("--json", "run", "--profile", "tiny", imageRef, "sh", "-c", script);
  assert.notEqual(bad.code, 0, "a corrupted warm entry is not restored");
  const badErr = shaped("error", bad.stdout).error;
  assert.deepEqual([badErr.code, badErr.details?.code], ["BOOT_FAILED", "SNAPSHOT_CORRUPT"], bad.stdout);
  assert.match(badErr.message, /the state file does not match its recorded sha256/);
  assert.equal(await stat(entryDir).then(() => true, () => false), false, "the corrupted entry was removed");
  const after = shaped("run", (await cli("--json", "run", "--profile", "tiny", imageRef, "sh", "-c", script)).stdout);
  assert.deepEqual([after.exitCode, after.warm?.restored], [3, false], "the next run boots cold and captures again");
});

test("snapshots hold no secret: /run/secrets is wiped for the capture and delivered again; a restore and a fork get theirs; a fork's guest trusts its own new CA", { timeout: 900_000 }, async (t) => {
  const SRC = "secsrc";
  const FORK = "secfork";
  const value = `snap-secret-${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;
  const canary = `snap-canary-${Math.random().toString(36).slice(2)}`;
  process.env.MA_SNAP_SECRET = value;
  const imageRef = await fx.image("snap/busybox:5");
  try {
    assert.equal((await cli("create", SRC, "--image", imageRef, "--profile", "tiny", "--secret", "KEY=env:MA_SNAP_SECRET")).code, 0);
    live.add(SRC);
    await json("start", "start", SRC);
    const src = await shell(SRC);
    const sha = (s: string) => createHash("sha256").update(s).digest("hex");
    assert.equal(await src("sha256sum /run/secrets/KEY | cut -d' ' -f1"), sha(value));
    // A process holding a canary in its memory: proves the scan below reads the guest's RAM.
    await src(`setsid sh -c 'c=${canary}; while :; do sleep 1; done' </dev/null >/dev/null 2>&1 &`);

    const snap = await json("snapshot create", "snapshot", "create", SRC, "s1");
    t.diagnostic(`snapshot with secrets: ${JSON.stringify(snap).slice(0, 300)}`);
    // Delivered again right after the capture, on a fresh tmpfs.
    assert.equal(await src("sha256sum /run/secrets/KEY | cut -d' ' -f1"), sha(value), "the secret is back after the capture");
    assert.match(await src("grep ' /run/secrets ' /proc/mounts"), /tmpfs/);
    const dir = join(workspacePaths(fx.stateDir, SRC).dir, "snapshots", "s1");
    const files = await readdir(dir);
    const bytes = await Promise.all(files.map((f) => readFile(join(dir, f))));
    assert.ok(bytes.some((b) => b.includes(canary)), `sanity: the guest's memory (with the canary) is in ${files.join(", ")}`);
    assert.ok(!bytes.some((b) => b.includes(value)), "no snapshot file holds the secret's value");

    // Restore in place: the secret comes back from its source (resolved at this start).
    assert.equal((await cli("kill", SRC)).code, 0);
    await json("start", "start", SRC, "--from-snapshot", "s1");
    assert.equal(await (await shell(SRC))("sha256sum /run/secrets/KEY | cut -d' ' -f1"), sha(value), "a restore delivers the secret again");

    // A fork: its own secret delivery and its own workspace CA, rewritten in place in the guest.
    const forked = await json("create", "create", FORK, "--from-snapshot", `${SRC}:s1`);
    live.add(FORK);
    assert.equal(forked.state, "running");
    const fork = await shell(FORK);
    assert.equal(await fork("sha256sum /run/secrets/KEY | cut -d' ' -f1"), sha(value));
    const forkCa = (await readFile(join(workspacePaths(fx.stateDir, FORK).dir, "egress-ca.pem"), "utf8")).trim();
    const srcCa = (await readFile(join(workspacePaths(fx.stateDir, SRC).dir, "egress-ca.pem"), "utf8")).trim();
    assert.notEqual(forkCa, srcCa, "the fork has a CA of its own");
    assert.equal(await fork("cat /run/microagent/egress/workspace-ca.crt"), forkCa, "the fork's guest holds its own CA");
    assert.ok((await fork("cat /run/microagent/egress/ca-bundle.crt")).includes(forkCa.split("\n")[1]!), "and the bundle carries it");
  } finally {
    delete process.env.MA_SNAP_SECRET;
    for (const n of [FORK, SRC]) {
      await stopWorkspace(n, "kill", { stateDir: fx.stateDir }).catch(() => {});
      await cli("delete", n, "--force");
      live.delete(n);
    }
  }
});

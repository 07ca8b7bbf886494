/**
 * Secrets end to end on real VMs (QEMU microvm, TCG here): `--secret NAME=SOURCE` with env:, file:
 * and cmd: sources is resolved by the starting process at every start, handed to the supervisor in
 * memory, and delivered to a tmpfs on /run/secrets in the guest (mode 0400, owned by the workload's
 * user); a source that is gone refuses the start (fail closed); and no value ever reaches the state
 * dir (disk image included), the runtime dir, the serial log, events, supervisor.log, or any output
 * of the CLI. Checks inside the guest compare sha256 sums, so the outputs themselves hold no value.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { workspaceFixture, type WorkspaceFixture } from "../helpers/workspace.ts";
import { findProcessesMentioning, reapVmProcesses } from "../helpers/global-setup.ts";
import { runCli } from "../helpers/cli.ts";
import { scratchDir } from "../helpers/scratch.ts";
import { RESULT_SCHEMAS } from "../../src/contract/results.ts";
import { readRuntime } from "../../src/workspace/runtime.ts";
import { workspacePaths } from "../../src/workspace/paths.ts";
import { spawnSupervisor, waitForSupervisorReady } from "../../src/supervisor/spawn.ts";
import { SupervisorClient } from "../../src/supervisor/client.ts";

const hex = (n: number) => randomBytes(n).toString("hex");
const ENV_VALUE = `env-${hex(32)}`;
const FILE_VALUE = `file-${hex(32)}`;
const FILE_VALUE_2 = `file2-${hex(32)}`;
const CMD_VALUE = `cmd-${hex(32)}`;
const RUN_VALUE = `run-${hex(32)}`;
const VALUES = [ENV_VALUE, FILE_VALUE, FILE_VALUE_2, CMD_VALUE, RUN_VALUE];
const sha = (s: string) => createHash("sha256").update(s).digest("hex");

let fx: WorkspaceFixture;
let imageRef: string;
let src: string;
/** Every stdout and stderr the CLI printed in this file. */
const outputs: string[] = [];

async function cli(args: string[], env: Record<string, string> = {}) {
  const r = await runCli(["--state-dir", fx.stateDir, ...args], env);
  outputs.push(r.out, r.err);
  return { code: r.code, stdout: r.out, stderr: r.err };
}

/** An exec in `name` whose stdout is returned trimmed (fails the test on a non-zero exit). */
async function guest(name: string, script: string, user?: string): Promise<string> {
  const r = await cli(["exec", ...(user ? ["-u", user] : []), name, "--", "sh", "-c", script]);
  assert.equal(r.code, 0, `${script}: ${r.stderr}`);
  return r.stdout.trim();
}

function liveProcesses() {
  return findProcessesMentioning(fx.stateDir).filter((p) => /qemu-system|supervisor\/main/.test(p.cmdline));
}

/** Every file below `dir` (recursively), read whole. */
function filesUnder(dir: string): Array<{ path: string; bytes: Buffer }> {
  const out: Array<{ path: string; bytes: Buffer }> = [];
  let entries: string[] = [];
  try {
    entries = readdirSync(dir, { recursive: true, encoding: "utf8" });
  } catch {
    return out;
  }
  for (const rel of entries) {
    const p = join(dir, rel);
    try {
      if (statSync(p).isFile()) out.push({ path: p, bytes: readFileSync(p) });
    } catch {
      // gone meanwhile (a socket, a rotated log)
    }
  }
  return out;
}

/** Where a value (raw or base64, as the boot config carries it) appears among `files`. */
function leaks(files: Array<{ path: string; bytes: Buffer }>, values: readonly string[]): string[] {
  const found: string[] = [];
  for (const v of values) {
    for (const form of [v, Buffer.from(v).toString("base64").replace(/=+$/, "")]) {
      for (const f of files) if (f.bytes.includes(form)) found.push(`${f.path} holds ${form === v ? "" : "the base64 of "}${v.slice(0, 8)}...`);
    }
  }
  return found;
}

before(async () => {
  fx = await workspaceFixture("secrets");
  imageRef = await fx.image("secrets/busybox:1");
  process.env.MICROAGENT_INSECURE_REGISTRIES = fx.registry.host;
  process.env.MICROAGENT_KERNEL_CACHE ??= join(tmpdir(), "microagent-test-kernel-cache");
  src = scratchDir("secret-sources");
});

after(async () => {
  const left = await reapVmProcesses(fx.stateDir);
  await fx.cleanup();
  rmSync(src, { recursive: true, force: true });
  assert.deepEqual(left, [], "a qemu or supervisor process survived the suite");
});

test("secrets: env:, file: and cmd: secrets reach /run/secrets (tmpfs, 0400, the workload's user) at every start; a removed source refuses the start", { timeout: 900_000 }, async () => {
  const name = "vault";
  const filePath = join(src, "api-key.txt");
  const cmdPath = join(src, "cmd-value.txt");
  writeFileSync(filePath, `${FILE_VALUE}\n`, { mode: 0o600 }); // one trailing newline is dropped
  writeFileSync(cmdPath, CMD_VALUE, { mode: 0o600 });
  const env = { MA_TEST_SECRET: ENV_VALUE };
  const created = await cli([
    "--json", "create", name, "--image", imageRef, "--profile", "tiny", "--network", "isolated", "-u", "nobody",
    "--secret", "API_KEY=env:MA_TEST_SECRET", "--secret", `FILE_KEY=file:${filePath}`, "--secret", `CMD_KEY=cmd:cat ${cmdPath}`,
  ]);
  assert.equal(created.code, 0, created.stdout + created.stderr);
  // The manifest keeps references: name, source, delivery.
  assert.deepEqual(
    JSON.parse(created.stdout).secrets.map((s: { name: string; source: string; delivery: string }) => `${s.name}=${s.source}:${s.delivery}`),
    ["API_KEY=env:MA_TEST_SECRET:file", `FILE_KEY=file:${filePath}:file`, `CMD_KEY=cmd:cat ${cmdPath}:file`],
  );
  const paths = workspacePaths(fx.stateDir, name);
  try {
    // --- boot 1 ---
    const started = await cli(["--json", "start", name], env);
    assert.equal(started.code, 0, started.stdout + started.stderr);
    assert.equal(JSON.parse(started.stdout).state, "running");

    // What the workload's user sees: three files, mode 0400, owned by nobody, the exact values.
    assert.equal(await guest(name, "id -u"), "65534");
    assert.equal(await guest(name, "ls /run/secrets | tr '\\n' ' '"), "API_KEY CMD_KEY FILE_KEY");
    assert.equal(await guest(name, "stat -c '%a %u %g' /run/secrets/API_KEY /run/secrets/FILE_KEY /run/secrets/CMD_KEY | sort -u"), "400 65534 65534");
    assert.equal(await guest(name, "sha256sum /run/secrets/API_KEY | cut -d' ' -f1"), sha(ENV_VALUE));
    assert.equal(await guest(name, "sha256sum /run/secrets/FILE_KEY | cut -d' ' -f1"), sha(FILE_VALUE));
    assert.equal(await guest(name, "sha256sum /run/secrets/CMD_KEY | cut -d' ' -f1"), sha(CMD_VALUE));
    // A tmpfs of its own, nosuid,nodev,noexec; the directory lists, the files are the user's only.
    const mount = await guest(name, "grep ' /run/secrets ' /proc/mounts");
    assert.match(mount, /^tmpfs \/run\/secrets tmpfs /);
    for (const opt of ["nosuid", "nodev", "noexec", "mode=755"]) assert.match(mount, new RegExp(`[ ,]${opt}[ ,]`), mount);
    const other = await cli(["exec", "-u", "1000", name, "--", "cat", "/run/secrets/API_KEY"]);
    assert.notEqual(other.code, 0, "another user cannot read the file");
    assert.match(other.stderr, /Permission denied/);
    assert.equal(await guest(name, "sha256sum /run/secrets/API_KEY | cut -d' ' -f1", "root"), sha(ENV_VALUE), "root reads it too");
    // File delivery sets no variable; the source variable did not follow the workload either.
    assert.equal(await guest(name, "env | grep -c -e API_KEY -e MA_TEST_SECRET || true"), "0");
    // Neither the supervisor nor QEMU carry a value in argv or environment.
    const rt = await readRuntime(paths);
    assert.ok(rt?.supervisorPid && rt.vmmPid);
    for (const pid of [rt.supervisorPid, rt.vmmPid]) {
      const proc = [readFileSync(`/proc/${pid}/environ`), readFileSync(`/proc/${pid}/cmdline`)];
      for (const v of VALUES) assert.ok(!proc.some((b) => b.includes(v)), `process ${pid} carries a value in its environ or cmdline`);
    }
    // The supervisor's secrets service reports names, deliveries and sizes only.
    const services = await new SupervisorClient(paths.controlSocket).services();
    assert.deepEqual(services.secrets, {
      dir: "/run/secrets",
      secrets: [
        { name: "API_KEY", delivery: "file", bytes: ENV_VALUE.length },
        { name: "FILE_KEY", delivery: "file", bytes: FILE_VALUE.length },
        { name: "CMD_KEY", delivery: "file", bytes: CMD_VALUE.length },
      ],
    });
    // A canary the workload writes to its disk: proves the scan below does see the disk's bytes.
    const canary = `canary-${hex(24)}`;
    await guest(name, `echo ${canary} > /canary; sync`, "root");
    assert.equal((await cli(["--json", "status", name])).code, 0);
    const halted = await cli(["--json", "halt", name]);
    assert.equal(halted.code, 0, halted.stdout + halted.stderr);

    // After halt: the disk image holds the canary (so the scan works) and no secret.
    assert.ok(readFileSync(paths.disk).includes(canary), "sanity: the canary written to / is in disk.qcow2");
    assert.deepEqual(leaks(filesUnder(fx.stateDir), VALUES), [], "a value is in the state dir after halt");

    // --- boot 2: the sources changed; the new value is delivered (references are resolved at every start) ---
    writeFileSync(filePath, FILE_VALUE_2, { mode: 0o600 });
    const again = await cli(["--json", "start", name], env);
    assert.equal(again.code, 0, again.stdout + again.stderr);
    assert.equal(await guest(name, "sha256sum /run/secrets/FILE_KEY | cut -d' ' -f1"), sha(FILE_VALUE_2));
    assert.equal(await guest(name, "cat /canary", "root"), canary, "same disk as boot 1");
    assert.equal(await guest(name, "ls -a /run/secrets | wc -l"), "5", "just the three files (and . ..) on a fresh tmpfs");
    assert.equal((await cli(["--json", "halt", name])).code, 0);
    // halt returns once the guest is down; the supervisor and QEMU may take a moment more to exit.
    for (let i = 0; i < 100 && liveProcesses().length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(liveProcesses().map((p) => p.cmdline), [], "the halted workspace's processes exit");

    // --- start 3: the env: source is gone: refused, naming the secret and the source, state unchanged ---
    const refused = await cli(["--json", "start", name]);
    assert.equal(refused.code, 1, refused.stdout + refused.stderr);
    const err = JSON.parse(refused.stdout).error;
    assert.ok(RESULT_SCHEMAS.error.safeParse(JSON.parse(refused.stdout)).success, refused.stdout);
    assert.equal(err.code, "SECRET_SOURCE_MISSING");
    assert.equal(err.kind, "not_found");
    assert.match(err.message, /secret API_KEY \(env:MA_TEST_SECRET\): the environment variable MA_TEST_SECRET is not set/);
    assert.equal(JSON.parse((await cli(["--json", "status", name])).stdout).event.state, "halted", "a refused start changes nothing");

    // --- start 4: the file is gone too (the env is back): refused on FILE_KEY; a failing helper on CMD_KEY ---
    rmSync(filePath);
    const noFile = await cli(["--json", "start", name], env);
    assert.equal(noFile.code, 1);
    assert.equal(JSON.parse(noFile.stdout).error.code, "SECRET_SOURCE_MISSING");
    assert.match(JSON.parse(noFile.stdout).error.message, new RegExp(`secret FILE_KEY \\(file:${filePath}\\): the file does not exist`));
    writeFileSync(filePath, FILE_VALUE, { mode: 0o600 });
    rmSync(cmdPath);
    const noCmd = await cli(["--json", "start", name], env);
    assert.equal(noCmd.code, 1);
    assert.equal(JSON.parse(noCmd.stdout).error.code, "SECRET_SOURCE_FAILED");
    assert.match(JSON.parse(noCmd.stdout).error.message, /secret CMD_KEY \(cmd:cat .*\): the command exited with code 1/);
    assert.deepEqual(liveProcesses().map((p) => p.cmdline), [], "no supervisor or VM was started for a refused start");

    // A supervisor spawned without the handoff (not through start) refuses to boot a workspace with secrets.
    writeFileSync(cmdPath, CMD_VALUE, { mode: 0o600 });
    const bare = spawnSupervisor(paths, { env: process.env });
    await assert.rejects(waitForSupervisorReady(paths, bare.pid, 60_000), (e: Error & { code?: string }) => {
      assert.equal(e.code, "SUPERVISOR_START_FAILED", e.message);
      assert.match(e.message, /names secrets \(API_KEY, FILE_KEY, CMD_KEY\) but its supervisor was started without them/);
      return true;
    });
    assert.equal(liveProcesses().filter((p) => /qemu-system/.test(p.cmdline)).length, 0, "no VM was launched");
  } finally {
    // Kept (halted) for the last test's scan of the state dir.
    if (liveProcesses().length > 0) await cli(["kill", name]);
  }
});

test("secrets: `run -u 1000` delivers a file secret owned by uid 1000; a detached run's exec sees it; a missing source fails the run", { timeout: 600_000 }, async () => {
  const path = join(src, "run-token");
  writeFileSync(path, RUN_VALUE, { mode: 0o600 });
  const r = await cli(["--json", "run", "--profile", "tiny", "-u", "1000", "--secret", `TOKEN=file:${path}`, imageRef, "sh", "-c", "stat -c '%a %u' /run/secrets/TOKEN; sha256sum /run/secrets/TOKEN | cut -d' ' -f1"]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const body = JSON.parse(r.stdout);
  assert.equal(Buffer.from(body.result.stdout, "base64").toString(), `400 1000\n${sha(RUN_VALUE)}\n`);

  // Detached (default user network): exec sees the file.
  const d = await cli(["run", "-d", "--name", "detached", "--profile", "tiny", "--secret", `TOKEN=file:${path}`, imageRef]);
  assert.equal(d.code, 0, d.stdout + d.stderr);
  try {
    assert.equal(await guest("detached", "stat -c '%a %u' /run/secrets/TOKEN"), "400 0");
    assert.equal(await guest("detached", "sha256sum /run/secrets/TOKEN | cut -d' ' -f1"), sha(RUN_VALUE));
  } finally {
    await cli(["kill", "detached"]);
    await cli(["delete", "--force", "detached"]);
  }

  const missing = await cli(["--json", "run", "--profile", "tiny", "--secret", `TOKEN=env:MA_TEST_NOT_SET_ANYWHERE`, imageRef, "true"]);
  assert.equal(missing.code, 1, missing.stdout + missing.stderr);
  assert.equal(JSON.parse(missing.stdout).error.code, "SECRET_SOURCE_MISSING");
  assert.deepEqual(readdirSync(join(fx.stateDir, "workspaces")).filter((n) => !n.startsWith(".") && n !== "vault"), [], "the refused run left no workspace");
});

test("secrets: no value anywhere: state dir (disks, serial logs, events, supervisor logs), runtime dirs, and every CLI output of this file", () => {
  const files = filesUnder(fx.stateDir);
  assert.ok(files.length > 0 && files.some((f) => f.path.endsWith("serial.log") || f.path.endsWith("events.jsonl")), "the scan covers the state dir");
  assert.deepEqual(leaks(files, VALUES), []);
  const runtimeRoot = join(process.env.XDG_RUNTIME_DIR && process.env.XDG_RUNTIME_DIR.length < 40 ? process.env.XDG_RUNTIME_DIR : tmpdir(), `microagent-${process.getuid?.() ?? 0}`);
  assert.deepEqual(leaks(filesUnder(runtimeRoot), VALUES), []);
  const printed = [{ path: "CLI output", bytes: Buffer.from(outputs.join("\n")) }];
  assert.ok(outputs.length > 20, "the outputs were collected");
  assert.deepEqual(leaks(printed, VALUES), []);
});

test("secrets: cleanup", async () => {
  const d = await cli(["delete", "--force", "vault"]);
  assert.equal(d.code, 0, d.stderr);
});

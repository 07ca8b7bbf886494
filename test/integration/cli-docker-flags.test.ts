/**
 * `run` and `exec` typed the way docker users type them, driving the real CLI (`node bin/microagent.js`,
 * the built dist/) as a subprocess: under a real PTY (tmux) for -t, with a real pipe for -i. Three
 * boots in all: a `run -i` that hashes 32 MiB through sha256sum, a detached workspace (`run -d`) that
 * takes `exec -w/-u`, `exec -it`, `logs -f` and `wait`, and a `run -it` shell session.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { tmpdir } from "node:os";
import { workspaceFixture, type WorkspaceFixture } from "../helpers/workspace.ts";
import { findProcessesMentioning, reapVmProcesses } from "../helpers/global-setup.ts";
import { scratchDir } from "../helpers/scratch.ts";

const BIN = resolve("bin/microagent.js");
let fx: WorkspaceFixture;
let imageRef: string;
let tmuxSocket: string;

interface Ran {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** The real CLI as a subprocess; `input` is piped to its stdin (and closed), else stdin is /dev/null. */
function cli(args: string[], opts: { input?: Buffer; timeoutMs?: number } = {}): Promise<Ran> {
  return new Promise((done, fail) => {
    // `--` as scripts/microagent passes it: else Node itself reads a script argument `--env-file`.
    const child = spawn(process.execPath, ["--", BIN, "--state-dir", fx.stateDir, ...args], {
      stdio: [opts.input ? "pipe" : "ignore", "pipe", "pipe"],
      env: { ...process.env, MICROAGENT_INSECURE_REGISTRIES: fx.registry.host },
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on("data", (d: Buffer) => out.push(d));
    child.stderr?.on("data", (d: Buffer) => err.push(d));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      fail(new Error(`microagent ${args.join(" ")} took over ${opts.timeoutMs ?? 180_000} ms; stderr: ${Buffer.concat(err).toString()}`));
    }, opts.timeoutMs ?? 180_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      done({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() });
    });
    if (opts.input) {
      child.stdin?.on("error", () => {});
      child.stdin?.end(opts.input);
    }
  });
}

/** tmux on a private socket: a real PTY on the host for the CLI's -t. */
function tmux(...args: string[]): string {
  return execFileSync("tmux", ["-S", tmuxSocket, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}
const shq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * Start the CLI in a detached tmux window of `cols`x`rows`. Its exit code lands in `exitFile`, then
 * the same terminal's `stty -a` in `exitFile.stty` (was it put back in cooked mode?).
 */
function tmuxCli(session: string, args: string[], exitFile: string, size = { cols: 100, rows: 30 }): void {
  const cmd = [process.execPath, "--", BIN, "--state-dir", fx.stateDir, ...args].map(shq).join(" ");
  tmux(
    "new-session", "-d", "-s", session, "-x", String(size.cols), "-y", String(size.rows),
    `MICROAGENT_INSECURE_REGISTRIES=${fx.registry.host} ${cmd}; echo $? > ${shq(`${exitFile}.tmp`)}; stty -a > ${shq(`${exitFile}.stty`)}; mv ${shq(`${exitFile}.tmp`)} ${shq(exitFile)}; sleep 30`,
  );
}

/** The terminal the CLI ran on is back in cooked mode (canonical input, echo) after it ended. */
function assertRestored(exitFile: string): void {
  const stty = readFileSync(`${exitFile}.stty`, "utf8");
  assert.match(stty, /(^|\s)icanon(\s|;|$)/, stty);
  assert.match(stty, /(^|\s)echo(\s|;|$)/, stty);
}

const screen = (session: string) => tmux("capture-pane", "-p", "-t", session, "-S", "-200");

async function until<T>(what: string, timeoutMs: number, probe: () => T | undefined | false): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function liveProcesses() {
  return findProcessesMentioning(fx.stateDir).filter((p) => /qemu-system|supervisor\/main/.test(p.cmdline));
}

before(async () => {
  fx = await workspaceFixture("docker-flags");
  // Cmd is the shell, as in most base images: `run -it IMAGE` gives it.
  imageRef = await fx.image("docker/busybox:1", { cmd: ["/bin/sh"] });
  process.env.MICROAGENT_KERNEL_CACHE ??= join(tmpdir(), "microagent-test-kernel-cache");
  tmuxSocket = join(scratchDir("tmux"), "sock");
});

after(async () => {
  try {
    tmux("kill-server");
  } catch {
    /* no server left */
  }
  const left = await reapVmProcesses(fx.stateDir);
  await fx.cleanup();
  assert.deepEqual(left, [], "a qemu or supervisor process survived the suite");
});

test("docker flags: refused ones and impossible combinations are usage errors naming the reason, before anything boots", async () => {
  const cases: Array<[string[], RegExp]> = [
    [["run", "--privileged", imageRef], /run does not take docker's --privileged: a workspace is a VM/],
    [["run", "-v", "/etc:/etc", imageRef], /-v\/--volume: host directories are not mounted.*files: in the spec file/],
    [["run", "--pid", "host", imageRef], /--pid: the guest has its own kernel/],
    [["run", "--cap-add", "SYS_ADMIN", imageRef], /--cap-add: capabilities are the guest kernel's business/],
    [["run", "--device", "/dev/kvm", imageRef], /--device: host devices are not passed/],
    [["create", "x1", "--image", imageRef, "--gpus", "all"], /create does not take docker's --gpus/],
    [["exec", "-d", "nosuch", "--", "true"], /exec does not take docker's -d/],
    [["run", "-d", "--rm", imageRef], /-d keeps the workspace/],
    [["run", "-d", "-i", imageRef], /-d cannot be combined with -i or -t/],
    // The test's stdin is /dev/null: -t has no terminal to give the guest.
    [["run", "-t", imageRef], /run -t needs a terminal on stdin[\s\S]*fix: Drop -t \(keep -i/],
    [["exec", "-it", "nosuch", "sh"], /exec -t needs a terminal on stdin/],
    [["run", "--env-file", "/nonexistent/env", imageRef], /'\/nonexistent\/env' cannot be read \(no such file\)/],
  ];
  for (const [args, want] of cases) {
    const r = await cli(args, { timeoutMs: 30_000 });
    assert.equal(r.code, 2, `${args.join(" ")}: exit ${r.code}\n${r.stderr}`);
    assert.match(r.stderr, want, args.join(" "));
  }
  assert.equal(liveProcesses().length, 0, "a refused run booted something");
});

test("docker flags: run -i pipes 32 MiB of binary stdin through the guest's sha256sum; --entrypoint, -w and -u apply", async () => {
  const data = randomBytes(32 * 1024 * 1024);
  const want = createHash("sha256").update(data).digest("hex");
  const t0 = performance.now();
  const r = await cli(["run", "-i", "-w", "/tmp", "-u", "nobody", "--entrypoint", "/bin/sh", imageRef, "-c", "pwd; id -u; id -g; sha256sum"], { input: data, timeoutMs: 600_000 });
  const ms = Math.round(performance.now() - t0);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.toString().trim().split("\n");
  assert.equal(lines[0], "/tmp", "-w is the command's working directory");
  assert.equal(lines[1], "65534", "-u nobody is resolved in the guest's /etc/passwd");
  assert.equal(lines[2], "65534");
  assert.equal(lines[3]?.split(/\s+/)[0], want, "the guest hashed exactly the bytes piped in");
  process.stderr.write(`# run -i: 32 MiB through sha256sum in ${ms} ms (boot included)\n`);
});

test("docker flags: run -d prints the name and returns; exec -w/-u/-it, --env-file, logs -f and wait work on it", async () => {
  const envFile = join(scratchDir("envfile"), "env");
  writeFileSync(envFile, `# a comment\nGREETING=hello "world"  \nFROM_HOST\nUNSET_ON_HOST\n`);
  process.env.FROM_HOST = "host-value";
  const name = "dock-detached";
  // The workload runs until told to finish, then exits 7.
  const script = 'echo started; while [ ! -e /tmp/go ]; do sleep 0.2; done; echo "finished $GREETING"; exit 7';
  const d = await cli(["run", "-d", "--name", name, "--env-file", envFile, imageRef, "sh", "-c", script]);
  delete process.env.FROM_HOST;
  assert.equal(d.code, 0, d.stderr);
  assert.equal(d.stdout.toString(), `${name}\n`, "run -d prints the workspace's name alone on stdout");
  try {
    const ex = await cli(["exec", "-w", "/etc", "-u", "nobody", name, "--", "sh", "-c", 'pwd; id -u; echo "$GREETING|$FROM_HOST|${UNSET_ON_HOST-unset}"']);
    assert.equal(ex.code, 0, ex.stderr);
    assert.equal(ex.stdout.toString(), '/etc\n65534\nhello "world"  |host-value|unset\n', "docker's env-file format: verbatim values, KEY alone from the host, missing host vars left out");
    // The old spellings still work.
    const old = await cli(["exec", "--cwd", "/var", "--user", "0", name, "--", "sh", "-c", "pwd; id -u"]);
    assert.equal(old.stdout.toString(), "/var\n0\n");
    const missing = await cli(["exec", "-u", "nosuchuser", name, "--", "id"]);
    assert.equal(missing.code, 127, missing.stderr);
    assert.match(missing.stderr, /user nosuchuser not found in \/etc\/passwd/);
    // exec -i without a terminal: stdin streamed, EOF closes it.
    const piped = await cli(["exec", "-i", name, "--", "wc", "-c"], { input: Buffer.alloc(100_000, 1) });
    assert.equal(piped.stdout.toString().trim(), "100000");

    // exec -it under a real PTY: its exit code is the command's, and it sees the window size.
    const exitFile = join(scratchDir("exec-it"), "exit");
    tmuxCli("execit", ["exec", "-it", "-u", "nobody", name, "sh"], exitFile, { cols: 90, rows: 20 });
    await until("the exec -it prompt", 60_000, () => screen("execit").trimEnd().endsWith("$"));
    tmux("send-keys", "-t", "execit", "stty size; id -u; exit 4", "Enter");
    const code = await until("exec -it to end", 60_000, () => existsSync(exitFile) && readFileSync(exitFile, "utf8").trim());
    const text = screen("execit");
    assert.match(text, /^20 90\r?$/m, `stty size in the guest is the tmux window's\n${text}`);
    assert.match(text, /^65534\r?$/m, text);
    assert.equal(code, "4", `exec -it exits with the command's code\n${text}`);
    assertRestored(exitFile);

    // A second terminal session stays open while the VM goes away under it (below).
    const cutFile = join(scratchDir("exec-it-cut"), "exit");
    tmuxCli("execcut", ["exec", "-it", name, "sh"], cutFile, { cols: 80, rows: 24 });
    await until("the second exec -it prompt", 60_000, () => screen("execcut").trimEnd().endsWith("#"));

    // Let the workload finish: logs -f follows it to the end; wait sees it settle.
    const logs = cli(["logs", "-f", name], { timeoutMs: 120_000 });
    await new Promise((r) => setTimeout(r, 500));
    const go = await cli(["exec", name, "--", "touch", "/tmp/go"]);
    assert.equal(go.code, 0, go.stderr);
    const l = await logs;
    assert.equal(l.code, 0, l.stderr);
    assert.match(l.stdout.toString(), /started[\s\S]*finished hello "world"/);
    // A workload exiting non-zero settles the workspace as failed, and wait says with which code.
    const w = await cli(["wait", name, "--timeout", "60s"]);
    assert.equal(w.code, 1, w.stderr);
    assert.match(w.stdout.toString(), /is failed: workload exited with code 7/);
    // The VM powered off under the open session: it ends with an error, and the terminal is cooked again.
    const cut = await until("the cut exec -it to end", 60_000, () => existsSync(cutFile) && readFileSync(cutFile, "utf8").trim());
    assert.equal(cut, "1", screen("execcut"));
    assert.match(screen("execcut"), /ended without sh's exit status/);
    assertRestored(cutFile);
  } finally {
    await cli(["delete", "--force", name]);
  }
});

test("docker flags: run -it IMAGE gives the image's shell on a real PTY; a resize is seen; Ctrl-D ends it with the shell's code", async () => {
  const exitFile = join(scratchDir("run-it"), "exit");
  tmuxCli("runit", ["run", "-it", imageRef], exitFile, { cols: 100, rows: 30 });
  await until("the shell prompt", 180_000, () => screen("runit").trimEnd().endsWith("#"));
  tmux("send-keys", "-t", "runit", "stty size", "Enter");
  await until("stty size", 30_000, () => /^30 100\r?$/m.test(screen("runit")));
  tmux("resize-window", "-t", "runit", "-x", "120", "-y", "40");
  await new Promise((r) => setTimeout(r, 500));
  tmux("send-keys", "-t", "runit", "stty size; tty", "Enter");
  await until("stty size after the resize", 30_000, () => /^40 120\r?$/m.test(screen("runit")));
  // The shell's stdin is a guest PTY.
  await until("tty to name a pts", 30_000, () => /^\/dev\/pts\/\d+\r?$/m.test(screen("runit")));
  // The shell's last status is its exit code on EOF.
  tmux("send-keys", "-t", "runit", "(exit 5)", "Enter");
  await new Promise((r) => setTimeout(r, 500));
  tmux("send-keys", "-t", "runit", "C-d");
  const code = await until("run -it to end", 90_000, () => existsSync(exitFile) && readFileSync(exitFile, "utf8").trim());
  assert.equal(code, "5", screen("runit"));
  assertRestored(exitFile);
  await until("the run's VM to go", 60_000, () => liveProcesses().length === 0);
});

/**
 * The real microagent-init binary, driven over an inherited socket (`--serve-fd 3`) on the host: no VM,
 * the same protocol code that runs as PID 1. Commands run on the host, so they stay harmless.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { existsSync, readFileSync, statSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { GuestChannel } from "../../src/channel/guest-channel.ts";
import type { BootConfigInput } from "../../src/channel/boot-config.ts";
import { encodeFrame, FrameDecoder } from "../../src/channel/frame.ts";
import type { Frame } from "../../src/channel/frame.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const INIT = join(ROOT, "guest/build/microagent-init");
const scratch = mkdtempSync(join(tmpdir(), "guest-init-test-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

// Build it if a fresh checkout has not yet (the Makefile is quick and incremental).
execFileSync("make", ["-s", "-C", join(ROOT, "guest")], { stdio: "inherit" });

/** The init's console (its stderr) is a different pipe from the channel: wait for it to catch up. */
async function waitLog(log: () => string, re: RegExp): Promise<void> {
  for (let i = 0; i < 300 && !re.test(log()); i++) await new Promise((r) => setTimeout(r, 10));
  assert.match(log(), re);
}

interface Served {
  ch: GuestChannel;
  child: ChildProcess;
  log: () => string;
  exited: Promise<number | null>;
  stop: () => Promise<void>;
}

async function serve(boot?: BootConfigInput): Promise<Served> {
  const child = spawn(INIT, ["--serve-fd", "3"], { stdio: ["ignore", "ignore", "pipe", "pipe"] });
  let log = "";
  child.stderr!.on("data", (c: Buffer) => (log += c.toString()));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const kill = setTimeout(() => child.kill("SIGKILL"), 60_000); // hard bound per served init
  const ch = await GuestChannel.connect(child.stdio[3] as Duplex, { helloTimeoutMs: 10_000 });
  if (boot) await ch.sendBootConfig(boot, { timeoutMs: 20_000 });
  return {
    ch,
    child,
    log: () => log,
    exited,
    stop: async () => {
      clearTimeout(kill);
      ch.close();
      if (child.exitCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
}

test("guest init: the binary is static and small", () => {
  const size = statSync(INIT).size;
  assert.ok(size < 1024 * 1024, `microagent-init is ${size} bytes`);
  const file = execFileSync("file", [INIT]).toString();
  assert.match(file, /statically linked|static-pie/);
});

test("guest init: hello, exec exit codes, stderr, env, cwd, stdin", async () => {
  const s = await serve({ env: ["GREETING=hi from config"] });
  try {
    assert.equal(s.ch.hello.protocol, 1);
    assert.equal(s.ch.hello.pid1, false);
    assert.match(s.ch.hello.bootId ?? "", /^[0-9a-f-]{36}$/);
    assert.ok(s.ch.hello.capabilities.includes("exec"));

    const r = await s.ch.exec({ argv: ["sh", "-c", 'echo "$GREETING $EXTRA"; pwd; echo oops >&2; exit 7'], env: { EXTRA: "and exec" }, cwd: "/tmp" });
    assert.equal(r.status, "exited");
    assert.equal(r.exitCode, 7);
    assert.equal(r.stdout.toString(), "hi from config and exec\n/tmp\n");
    assert.equal(r.stderr.toString(), "oops\n");

    const cat = await s.ch.exec({ argv: ["cat"], stdin: "line one\nline two\n" });
    assert.equal(cat.stdout.toString(), "line one\nline two\n");
    assert.equal(cat.exitCode, 0);

    // Interactive stdin: write, then close.
    const h = s.ch.exec({ argv: ["sh", "-c", "read a; echo got:$a; read b; echo got:$b"], stdin: true });
    await h.writeStdin("first\n");
    await h.writeStdin("second\n");
    h.closeStdin();
    assert.equal((await h).stdout.toString(), "got:first\ngot:second\n");
  } finally {
    await s.stop();
  }
});

test("guest init: streamed output with backpressure, in order, across many frames", async () => {
  const s = await serve({});
  try {
    // ~3 MiB of numbered lines: far more than one window (256 KiB), so credit must cycle.
    const h = s.ch.exec({ argv: ["sh", "-c", "seq 1 400000"] });
    let text = "";
    let chunks = 0;
    for await (const c of h) {
      assert.equal(c.stream, "stdout");
      text += c.data.toString();
      chunks++;
      if (chunks % 20 === 0) await new Promise((r) => setTimeout(r, 1)); // a slow consumer
    }
    const r = await h;
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout.length, 0, "an iterated handle does not also collect");
    const lines = text.trimEnd().split("\n");
    assert.equal(lines.length, 400000);
    assert.equal(lines[0], "1");
    assert.equal(lines[399999], "400000");
    assert.ok(chunks > 10, `only ${chunks} chunks`);
  } finally {
    await s.stop();
  }
});

test("guest init: megabytes of stdin through cat come back intact (flow control both ways at once)", async () => {
  const s = await serve({});
  try {
    const input = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < input.length; i++) input[i] = (i * 7 + (i >> 11)) & 0xff;
    const r = await s.ch.exec({ argv: ["cat"], stdin: input });
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout.length, input.length);
    assert.ok(r.stdout.equals(input));
  } finally {
    await s.stop();
  }
});

test("guest init: a consumer pausing after the process exited still gets every byte", async () => {
  const s = await serve({});
  try {
    const h = s.ch.exec({ argv: ["head", "-c", "2000000", "/dev/zero"] });
    let total = 0;
    let first = true;
    for await (const c of h) {
      total += c.data.length;
      if (first) {
        first = false;
        await new Promise((r) => setTimeout(r, 1500)); // longer than the guest's exit grace
      }
    }
    assert.equal(total, 2000000);
    assert.equal((await h).stdoutTruncated, false);
  } finally {
    await s.stop();
  }
});

test("guest init: streamed workload output loses nothing while the host listens", async () => {
  const s = await serve();
  try {
    let total = 0;
    s.ch.onWorkloadOutput((c) => (total += c.data.length));
    await s.ch.sendBootConfig({ argv: ["head", "-c", "3000000", "/dev/zero"], streamOutput: true });
    const r = await s.ch.result();
    assert.equal(r.exitCode, 0);
    assert.equal(r.outputDroppedBytes, 0);
    assert.equal(total, 3000000);
  } finally {
    await s.stop();
  }
});

test("guest init: signaled, timed_out, failed_to_start, kill", async () => {
  const s = await serve({});
  try {
    const sig = await s.ch.exec({ argv: ["sh", "-c", "kill -TERM $$; sleep 5"] });
    assert.equal(sig.status, "signaled");
    assert.equal(sig.signal, "SIGTERM");

    const t0 = Date.now();
    const slow = await s.ch.exec({ argv: ["sleep", "30"], timeoutMs: 300 });
    assert.equal(slow.status, "timed_out");
    assert.ok(Date.now() - t0 < 10_000);

    const missing = await s.ch.exec({ argv: ["/no/such/binary"] });
    assert.equal(missing.status, "failed_to_start");
    assert.equal(missing.error?.code, "ENOENT");
    assert.match(missing.error!.message, /\/no\/such\/binary/);

    const notOnPath = await s.ch.exec({ argv: ["definitely-not-a-command-xyz"] });
    assert.equal(notOnPath.status, "failed_to_start");
    assert.equal(notOnPath.error?.code, "ENOENT");

    const badCwd = await s.ch.exec({ argv: ["true"], cwd: "/no/such/dir" });
    assert.equal(badCwd.status, "failed_to_start");
    assert.match(badCwd.error!.message, /chdir \/no\/such\/dir/);

    const h = s.ch.exec({ argv: ["sleep", "30"] });
    setTimeout(() => h.kill("SIGINT"), 100);
    const killed = await h;
    assert.equal(killed.status, "signaled");
    assert.equal(killed.signal, "SIGINT");

    // PATH from the request decides where argv[0] is found (execvp semantics with the request's env).
    const viaPath = await s.ch.exec({ argv: ["sh", "-c", "echo $PATH"], env: { PATH: "/bin:/usr/bin" } });
    assert.equal(viaPath.stdout.toString(), "/bin:/usr/bin\n");
  } finally {
    await s.stop();
  }
});

test("guest init: output limits truncate and say so", async () => {
  const s = await serve({});
  try {
    const r = await s.ch.exec({ argv: ["sh", "-c", "head -c 100000 /dev/zero; head -c 5000 /dev/zero >&2"], stdoutLimitBytes: 1000, stderrLimitBytes: 10 });
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout.length, 1000);
    assert.equal(r.stderr.length, 10);
    assert.equal(r.stdoutTruncated, true);
    assert.equal(r.stderrTruncated, true);
  } finally {
    await s.stop();
  }
});

test("guest init: user switching resolves names and uid:gid", async () => {
  const s = await serve({});
  try {
    const r = await s.ch.exec({ argv: ["id", "-u"], user: "65534:65534" });
    if (process.getuid?.() === 0) {
      assert.equal(r.stdout.toString().trim(), "65534");
    } else {
      // Not root on this host: the switch itself must fail, and say where.
      assert.equal(r.status, "failed_to_start");
      assert.match(r.error!.message, /setgid|setuid/);
    }
    const bad = await s.ch.exec({ argv: ["id"], user: "no-such-user-xyz" });
    assert.equal(bad.status, "failed_to_start");
    assert.match(bad.error!.message, /no-such-user-xyz not found/);
  } finally {
    await s.stop();
  }
});

test("guest init: console PTY echoes, reports its size, and resizes", async () => {
  const s = await serve({});
  try {
    const con = s.ch.openConsole({ cols: 100, rows: 30, argv: ["/bin/sh"], env: { PS1: "$ " } });
    let out = "";
    con.onData((d) => (out += d.toString()));
    const waitFor = async (re: RegExp) => {
      const deadline = Date.now() + 10_000;
      while (!re.test(out)) {
        if (Date.now() > deadline) throw new Error(`console never showed ${re}; got ${JSON.stringify(out)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    await con.write("stty size; echo MARK-$((40+2))\n");
    await waitFor(/MARK-42/);
    assert.match(out, /30 100/);
    assert.match(out, /stty size; echo MARK/, "the tty echoes input");
    con.resize(120, 40);
    await new Promise((r) => setTimeout(r, 100));
    await con.write("stty size\n");
    await waitFor(/40 120/);
    await con.write("exit 3\n");
    const r = await con.exited;
    assert.equal(r.exitCode, 3);

    // Closing a console from the host ends it at once, on both sides.
    const con2 = s.ch.openConsole({ argv: ["/bin/sh"] });
    con2.close();
    await assert.rejects(con2.exited, (e: unknown) => isMicroagentError(e) && e.code === "CHANNEL_CLOSED");
  } finally {
    await s.stop();
  }
});

test("guest init: workload output streams to the host and its result arrives", async () => {
  const child = spawn(INIT, ["--serve-fd", "3"], { stdio: ["ignore", "ignore", "pipe", "pipe"] });
  let console_ = "";
  child.stderr!.on("data", (c: Buffer) => (console_ += c.toString()));
  try {
    const ch = await GuestChannel.connect(child.stdio[3] as Duplex, { helloTimeoutMs: 10_000 });
    let streamed = "";
    ch.onWorkloadOutput((c) => (streamed += `${c.stream}:${c.data.toString()}`));
    const report = await ch.sendBootConfig({ argv: ["sh", "-c", "echo to-out; echo to-err >&2; exit 4"], streamOutput: true });
    assert.ok(report.workload && report.workload.pid > 0);
    const result = await ch.result();
    assert.equal(result.exitCode, 4);
    assert.ok(result.startedAt && result.exitedAt);
    assert.match(streamed, /stdout:to-out\n/);
    assert.match(streamed, /stderr:to-err\n/);
    // The serial console always gets the workload's output too (stderr of a non-PID-1 init; a
    // different pipe from the channel, so it may lag the result a little).
    for (let i = 0; i < 200 && !/workload exited/.test(console_); i++) await new Promise((r) => setTimeout(r, 10));
    assert.match(console_, /to-out/);
    assert.match(console_, /workload exited with code 4/);
    ch.close();
  } finally {
    child.kill("SIGKILL");
  }
});

test("guest init: a workload that cannot start reports startError", async () => {
  const s = await serve();
  try {
    await s.ch.sendBootConfig({ argv: ["/missing/entrypoint"] });
    const r = await s.ch.result();
    assert.equal(r.startError?.code, "ENOENT");
    assert.match(r.startError!.message, /\/missing\/entrypoint/);
  } finally {
    await s.stop();
  }
});

test("guest init: files are written atomically with mode, setup runs in order, a failing step stops the boot", async () => {
  const dir = mkdtempSync(join(scratch, "boot-"));
  const s = await serve();
  try {
    const marker = join(dir, "order");
    await assert.rejects(
      s.ch.sendBootConfig({
        files: [{ path: join(dir, "sub/dir/cfg.txt"), mode: 0o640, contentBase64: Buffer.from("secret=1\n").toString("base64") }],
        setup: [`echo one >> ${marker}`, `echo two >> ${marker}`, "exit 9", `echo never >> ${marker}`],
        argv: ["sh", "-c", `echo workload >> ${marker}`],
      }),
      (e: unknown) => {
        assert.ok(isMicroagentError(e) && e.code === "CHANNEL_BOOT_FAILED");
        assert.match(e.message, /setup step 3 \(exit 9\) exited with code 9/);
        assert.equal(e.details?.index, 2);
        return true;
      },
    );
    assert.equal(readFileSync(join(dir, "sub/dir/cfg.txt"), "utf8"), "secret=1\n");
    assert.equal(statSync(join(dir, "sub/dir/cfg.txt")).mode & 0o777, 0o640);
    assert.equal(existsSync(join(dir, "sub/dir/cfg.txt.microagent-tmp")), false);
    assert.equal(readFileSync(marker, "utf8"), "one\ntwo\n", "the workload never ran after the failed step");
    await waitLog(s.log, /boot failed: setup step 3/);
    // Exec still works for debugging.
    assert.equal((await s.ch.exec({ argv: ["true"] })).exitCode, 0);
  } finally {
    await s.stop();
  }
});

test("guest init: exec works while a slow setup step runs, and ready waits for the steps", async () => {
  const s = await serve();
  try {
    const t0 = Date.now();
    const boot = s.ch.sendBootConfig({ setup: ["sleep 1", "true"] });
    const r = await s.ch.exec({ argv: ["echo", "during-setup"] });
    assert.equal(r.stdout.toString(), "during-setup\n");
    assert.ok(Date.now() - t0 < 900, "exec answered before the setup step finished");
    await boot;
    assert.ok(Date.now() - t0 >= 950, "ready came after the slow step");
  } finally {
    await s.stop();
  }
});

test("guest init: shutdown sends the stop signal to the workload and exits", async () => {
  const s = await serve();
  try {
    await s.ch.sendBootConfig({ argv: ["sh", "-c", "trap 'echo got-usr1; exit 0' USR1; while true; do sleep 0.05; done"], stopSignal: "SIGUSR1" });
    await new Promise((r) => setTimeout(r, 200));
    const t0 = Date.now();
    const resultP = s.ch.result();
    await s.ch.shutdown({ timeoutMs: 5000 });
    const r = await resultP;
    assert.equal(r.exitCode, 0);
    assert.ok(Date.now() - t0 < 5000);
    await waitLog(s.log, /sending SIGUSR1 to the workload/);
    await waitLog(s.log, /got-usr1/);
    assert.equal(await s.exited, 0);
  } finally {
    await s.stop();
  }
});

test("guest init: a workload ignoring the stop signal is killed after the timeout", async () => {
  const s = await serve();
  try {
    await s.ch.sendBootConfig({ argv: ["sh", "-c", "trap '' TERM; while true; do sleep 0.05; done"] });
    await new Promise((r) => setTimeout(r, 200));
    const t0 = Date.now();
    await s.ch.shutdown({ timeoutMs: 500 });
    assert.ok(Date.now() - t0 >= 450, "waited for the workload first");
    await waitLog(s.log, /did not stop in time/);
  } finally {
    await s.stop();
  }
});

/** Raw host side: speak frames directly to check the guest's own checks. */
async function rawSession(): Promise<{ child: ChildProcess; sock: Duplex; frames: Frame[]; log: () => string; exited: Promise<number | null> }> {
  const child = spawn(INIT, ["--serve-fd", "3"], { stdio: ["ignore", "ignore", "pipe", "pipe"] });
  let log = "";
  child.stderr!.on("data", (c: Buffer) => (log += c.toString()));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const sock = child.stdio[3] as Duplex;
  const frames: Frame[] = [];
  const dec = new FrameDecoder({ maxPayloadBytes: 1 << 20 });
  sock.on("data", (c: Buffer) => frames.push(...dec.push(c)));
  setTimeout(() => child.kill("SIGKILL"), 20_000).unref();
  return { child, sock, frames, log: () => log, exited };
}

test("guest init: a host speaking another protocol version gets a clear refusal", async () => {
  const r = await rawSession();
  r.sock.write(encodeFrame({ type: "welcome", stream: 0, channel: 0, payload: Buffer.from(JSON.stringify({ type: "welcome", protocol: 2, maxFrameBytes: 65536, initialWindowBytes: 65536 })) }, 1 << 20));
  assert.equal(await r.exited, 3);
  const goaway = r.frames.find((f) => f.type === "goaway");
  assert.ok(goaway);
  assert.match(goaway.payload.toString(), /INCOMPATIBLE_VERSION/);
  await waitLog(r.log, /host speaks protocol 2 but this microagent-init speaks 1/);
});

test("guest init: a hello request on an active session starts a new session (a host replaced before the guest noticed)", async () => {
  const r = await rawSession();
  const welcome = encodeFrame({ type: "welcome", stream: 0, channel: 0, payload: Buffer.from('{"type":"welcome","protocol":1,"maxFrameBytes":65536,"initialWindowBytes":65536}') }, 1 << 20);
  r.sock.write(welcome);
  r.sock.write(encodeFrame({ type: "hello", stream: 0, channel: 0, payload: Buffer.from('{"type":"hello-request","protocol":1}') }, 1 << 20));
  const deadline = Date.now() + 5000;
  while (r.frames.filter((f) => f.type === "hello").length < 2 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10));
  assert.equal(r.frames.filter((f) => f.type === "hello").length, 2);
  await waitLog(r.log, /a new host connected/);
  r.child.kill("SIGKILL");
  await r.exited;
});

test("guest init: a repeated boot config gets the first boot's outcome again (a reconnected host)", async () => {
  const r = await rawSession();
  try {
    const send = (type: "welcome" | "msg", body: unknown) =>
      r.sock.write(encodeFrame({ type, stream: 0, channel: 0, payload: Buffer.from(JSON.stringify(body)) }, 1 << 20));
    const msgs = () => r.frames.filter((f) => f.type === "msg").map((f) => JSON.parse(f.payload.toString()) as { type: string; note?: string });
    const waitFor = async (pred: () => boolean) => {
      for (let i = 0; i < 500 && !pred(); i++) await new Promise((res) => setTimeout(res, 10));
      assert.ok(pred(), JSON.stringify(msgs()));
    };
    send("welcome", { type: "welcome", protocol: 1, maxFrameBytes: 65536, initialWindowBytes: 65536 });
    send("msg", { type: "boot-config", config: { setup: ["exit 4"] } });
    await waitFor(() => msgs().filter((m) => m.type === "boot-failed").length === 1);
    send("msg", { type: "boot-config", config: {} });
    await waitFor(() => msgs().filter((m) => m.type === "boot-failed").length === 2);
    assert.equal(msgs().filter((m) => m.type === "ready").length, 0);
  } finally {
    r.child.kill("SIGKILL");
    await r.exited;
  }
});

test("guest init: oversize and garbage frames from the host end the session with GOAWAY", async () => {
  const r = await rawSession();
  const h = Buffer.alloc(12);
  h.writeUInt32BE(512 * 1024 * 1024, 0);
  h[8] = 7;
  r.sock.write(h);
  assert.equal(await r.exited, 3);
  assert.match(r.frames.find((f) => f.type === "goaway")!.payload.toString(), /FRAME_TOO_LARGE/);

  const r2 = await rawSession();
  r2.sock.write(encodeFrame({ type: "welcome", stream: 0, channel: 0, payload: Buffer.from('{"type":"welcome","protocol":1}') }, 1 << 20));
  r2.sock.write(encodeFrame({ type: "msg", stream: 0, channel: 0, payload: Buffer.from("{not json") }, 1 << 20));
  assert.equal(await r2.exited, 3);
  assert.match(r2.frames.find((f) => f.type === "goaway")!.payload.toString(), /not a JSON object/);
});

test("guest init: resume is answered with resumed; outside PID 1 it changes nothing (the VM test covers the real reseed and clock step)", async () => {
  const s = await serve({});
  try {
    assert.ok(s.ch.hello.capabilities.includes("restore"), "the guest announces it handles resume");
    const r = await s.ch.resume({ entropyBase64: Buffer.alloc(64, 7).toString("base64"), timeUnixMs: Date.now(), hostname: "forked" }, { timeoutMs: 10_000 });
    assert.deepEqual(r, { type: "resumed", entropyBytes: 0, clockStepMs: 0, hostnameSet: false, networkSet: false });
    await waitLog(s.log, /resume: not PID 1, leaving the RNG, clock and identity alone/);
    // The session goes on as before.
    assert.equal((await s.ch.exec({ argv: ["true"] })).exitCode, 0);
  } finally {
    await s.stop();
  }
});

/**
 * microagent-init's `secrets` (guest/src/secrets.c), driven on the host over `--serve-fd 3` with
 * MICROAGENT_INIT_SECRETS_DIR standing in for the /run/secrets tmpfs a PID 1 mounts (the mount
 * itself is proven in a VM by test/integration/secrets.test.ts). Raw frames reach the guest's own
 * validation, which the host's schema would otherwise stop first.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { GuestChannel } from "../../src/channel/guest-channel.ts";
import { encodeFrame, FrameDecoder, type Frame } from "../../src/channel/frame.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const INIT = join(ROOT, "guest/build/microagent-init");
const scratch = mkdtempSync(join(tmpdir(), "guest-secrets-test-"));
after(() => rmSync(scratch, { recursive: true, force: true }));
execFileSync("make", ["-s", "-C", join(ROOT, "guest")], { stdio: "inherit" });

const VALUE = `gv-${randomBytes(24).toString("hex")}`;
const b64 = (s: string | Buffer) => Buffer.from(s).toString("base64");

function init(dir: string | undefined) {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? "/usr/bin:/bin" };
  if (dir !== undefined) env.MICROAGENT_INIT_SECRETS_DIR = dir;
  const child = spawn(INIT, ["--serve-fd", "3"], { stdio: ["ignore", "ignore", "pipe", "pipe"], env });
  let log = "";
  child.stderr!.on("data", (c: Buffer) => (log += c.toString()));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const kill = setTimeout(() => child.kill("SIGKILL"), 30_000);
  void exited.finally(() => clearTimeout(kill));
  return { child, sock: child.stdio[3] as Duplex, log: () => log, exited };
}

/** The init's answer to a raw boot-config message: the first boot-failed or ready control. */
async function rawBoot(dir: string | undefined, config: unknown): Promise<{ answer: string; log: string }> {
  const g = init(dir);
  const frames: Frame[] = [];
  const dec = new FrameDecoder({ maxPayloadBytes: 1 << 22 });
  g.sock.on("data", (c: Buffer) => frames.push(...dec.push(c)));
  g.sock.write(encodeFrame({ type: "welcome", stream: 0, channel: 0, payload: Buffer.from('{"type":"welcome","protocol":1,"maxFrameBytes":65536,"initialWindowBytes":65536}') }, 1 << 22));
  g.sock.write(encodeFrame({ type: "msg", stream: 0, channel: 0, payload: Buffer.from(JSON.stringify({ type: "boot-config", config })) }, 1 << 22));
  const deadline = Date.now() + 10_000;
  const answer = () => frames.map((f) => f.payload.toString()).find((p) => /"boot-failed"|"ready"/.test(p));
  while (!answer() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  g.child.kill("SIGKILL");
  await g.exited;
  return { answer: answer() ?? "(no answer)", log: g.log() };
}

test("guest secrets: each NAME is written mode 0400, owned by the workload's user, with the exact bytes", async () => {
  const dir = mkdtempSync(join(scratch, "ok-"));
  // The workload (nobody) must be able to reach the directory, as it reaches /run/secrets (0755).
  chmodSync(scratch, 0o711);
  chmodSync(dir, 0o755);
  const g = init(dir);
  try {
    const ch = await GuestChannel.connect(g.sock, { helloTimeoutMs: 10_000 });
    const binary = randomBytes(64 * 1024);
    await ch.sendBootConfig({ user: "nobody", secrets: [{ name: "API_KEY", contentBase64: b64(VALUE) }, { name: "_bin2", contentBase64: b64(binary) }] }, { timeoutMs: 10_000 });
    assert.deepEqual(readdirSync(dir).sort(), ["API_KEY", "_bin2"]);
    const st = statSync(join(dir, "API_KEY"));
    assert.equal(st.mode & 0o7777, 0o400);
    const nobody = execFileSync("id", ["-u", "nobody"]).toString().trim();
    assert.equal(String(st.uid), nobody, "owned by the workload's user (nobody)");
    assert.equal(readFileSync(join(dir, "API_KEY"), "utf8"), VALUE);
    assert.ok(readFileSync(join(dir, "_bin2")).equals(binary));
    // The workload's user reads it; the init's log names the count, never the value.
    const r = await ch.exec({ argv: ["cat", join(dir, "API_KEY")] });
    assert.equal(r.stdout.toString(), VALUE, r.stderr.toString());
    const other = await ch.exec({ argv: ["cat", join(dir, "API_KEY")], user: "4321" });
    assert.notEqual(other.exitCode, 0, "another user cannot read it");
    assert.match(other.stderr.toString(), /Permission denied/);
    await new Promise((r) => setTimeout(r, 50));
    assert.match(g.log(), /secrets: 2 delivered to .* \(owner \d+:\d+, mode 0400\)/);
    assert.ok(!g.log().includes(VALUE));
    ch.close();
  } finally {
    g.child.kill("SIGKILL");
    await g.exited;
  }
});

test("guest secrets: no user means root; a numeric uid is taken as is", async () => {
  const dir = mkdtempSync(join(scratch, "uid-"));
  const a = await rawBoot(dir, { secrets: [{ name: "R", contentBase64: b64("r") }] });
  assert.match(a.answer, /"ready"/);
  assert.equal(statSync(join(dir, "R")).uid, 0);
  const dir2 = mkdtempSync(join(scratch, "uid2-"));
  const b = await rawBoot(dir2, { user: "4321:4322", secrets: [{ name: "U", contentBase64: b64("u") }] });
  assert.match(b.answer, /"ready"/);
  assert.equal(statSync(join(dir2, "U")).uid, 4321);
  assert.equal(statSync(join(dir2, "U")).gid, 4322);
});

test("guest secrets: hostile entries fail the boot by stage and name, before anything is written", async () => {
  const cases: Array<[unknown, RegExp]> = [
    [{ name: "../etc/passwd", contentBase64: b64(VALUE) }, /secrets\[1\]: not a valid secret name/],
    [{ name: "a/b", contentBase64: b64(VALUE) }, /not a valid secret name/],
    [{ name: "..", contentBase64: b64(VALUE) }, /not a valid secret name/],
    [{ name: "1A", contentBase64: b64(VALUE) }, /not a valid secret name/],
    [{ name: "N".repeat(65), contentBase64: b64(VALUE) }, /not a valid secret name/],
    [{ name: "OK", contentBase64: b64(VALUE) }, /secrets: OK is given twice/],
    [{ name: "E", contentBase64: "" }, /E: the value must be 1 to 65536 bytes/],
    [{ name: "BIG", contentBase64: b64(Buffer.alloc(64 * 1024 + 3)) }, /BIG: the value must be 1 to 65536 bytes/],
    [{ name: "NOTB64", contentBase64: "@@@@" }, /NOTB64: contentBase64 is not valid base64/],
    [{ name: "X" }, /secrets\[1\]: needs a name and contentBase64/],
    ["just a string", /secrets\[1\]: needs a name and contentBase64/],
  ];
  for (const [bad, re] of cases) {
    const dir = mkdtempSync(join(scratch, "bad-"));
    const { answer, log } = await rawBoot(dir, { secrets: [{ name: "OK", contentBase64: b64(VALUE) }, bad] });
    assert.match(answer, /"boot-failed"/, JSON.stringify(bad));
    assert.match(answer, /"stage":"secrets"/);
    assert.match(answer, re);
    assert.ok(!answer.includes(VALUE) && !log.includes(VALUE), "no value in the failure or the log");
    // NOTB64 fails while writing (decoding is the write step); every other case before the first file.
    if (!/NOTB64/.test(String(re))) assert.deepEqual(readdirSync(dir), [], `nothing written for ${JSON.stringify(bad).slice(0, 40)}`);
  }
  const many = Array.from({ length: 65 }, (_, i) => ({ name: `S${i}`, contentBase64: b64("v") }));
  assert.match((await rawBoot(mkdtempSync(join(scratch, "many-")), { secrets: many })).answer, /65 entries, at most 64/);
  assert.match((await rawBoot(mkdtempSync(join(scratch, "obj-")), { secrets: { A: "x" } })).answer, /secrets: must be an array/);
});

test("guest secrets: an unknown workload user, a symlinked file, or no directory fail closed", async () => {
  const dir = mkdtempSync(join(scratch, "user-"));
  const u = await rawBoot(dir, { user: "no-such-user-xyz", secrets: [{ name: "A", contentBase64: b64(VALUE) }] });
  assert.match(u.answer, /cannot give them to the workload's user: user no-such-user-xyz not found/);
  assert.deepEqual(readdirSync(dir), []);

  // A name that already exists as a symlink is not followed (O_EXCL|O_NOFOLLOW).
  const dir2 = mkdtempSync(join(scratch, "link-"));
  const target = join(scratch, "link-target");
  symlinkSync(target, join(dir2, "A"));
  const l = await rawBoot(dir2, { secrets: [{ name: "A", contentBase64: b64(VALUE) }] });
  assert.match(l.answer, /secrets: writing .*\/A: File exists/);
  assert.throws(() => statSync(target), "the symlink's target was not created");

  const n = await rawBoot(undefined, { secrets: [{ name: "A", contentBase64: b64(VALUE) }] });
  assert.match(n.answer, /not PID 1, and MICROAGENT_INIT_SECRETS_DIR names no directory/);
});

test("guest secrets: the host channel refuses a malformed secrets entry before sending it", async () => {
  const g = init(mkdtempSync(join(scratch, "schema-")));
  try {
    const ch = await GuestChannel.connect(g.sock, { helloTimeoutMs: 10_000 });
    await assert.rejects(ch.sendBootConfig({ secrets: [{ name: "../x", contentBase64: b64(VALUE) }] }), (e: unknown) => {
      assert.ok(!isMicroagentError(e) || !e.message.includes(VALUE));
      assert.ok(!String((e as Error).message).includes(b64(VALUE)), "the schema error does not quote the content");
      return true;
    });
    ch.close();
  } finally {
    g.child.kill("SIGKILL");
    await g.exited;
  }
});

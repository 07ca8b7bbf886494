/**
 * `microagent serve e2b` driven by the published `e2b` SDK (the unmodified npm package, pinned in
 * package.json), on real VMs booted from a busybox image with an E2B-style user (`user`, home
 * /home/user) served by a loopback registry. One sandbox carries the commands and files checks, as
 * the SDK's own tests share one per file; test names follow the SDK's tests
 * (packages/js-sdk/tests/sandbox/{commands,files}/*) where they mirror one. A second sandbox checks
 * the timeout auto-kill and gives the bench its create-to-first-command figure, measured against
 * the library doing the same in this run.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chown, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { gzipSync } from "node:zlib";
import { Buffer } from "node:buffer";
import { Sandbox, CommandExitError, NotFoundError, TimeoutError, type CommandHandle } from "e2b";
import { workspaceFixture, realProviders, type WorkspaceFixture } from "../helpers/workspace.ts";
import { addTreeLayer, buildBusyboxImage, pushImage, type OciImage } from "../helpers/oci-image.ts";
import { reapVmProcesses } from "../helpers/global-setup.ts";
import { e2bFetch, startE2bServer, type E2bServer } from "../../src/server/e2b/server.ts";
import { envelope } from "../../src/server/e2b/connect.ts";
import { Workspace } from "../../src/api/workspace.ts";

let fx: WorkspaceFixture;
let img: OciImage;
let imageRef: string;
let server: E2bServer;
let sbx: Sandbox;
const API_KEY = "e2b-test-key";
const serverLog: string[] = [];

/** The sandbox's envd access token, from the control API (the SDK keeps its copy private). */
async function accessToken(id: string): Promise<string> {
  const detail = (await (await fetch(`${server.url}/sandboxes/${id}`, { headers: { "X-API-KEY": API_KEY } })).json()) as { envdAccessToken: string };
  return detail.envdAccessToken;
}

/** The frames of a Connect server-stream body. */
function frames(buf: Buffer): Array<{ flags: number; json: Record<string, unknown> }> {
  const out = [];
  for (let off = 0; off < buf.length; ) {
    const len = buf.readUInt32BE(off + 1);
    out.push({ flags: buf[off]!, json: JSON.parse(buf.subarray(off + 5, off + 5 + len).toString()) as Record<string, unknown> });
    off += 5 + len;
  }
  return out;
}

/** The SDK's connection options, as a user sets them through the environment (docs/e2b.md). */
function pointSdkAt(url: string): void {
  process.env.E2B_API_URL = url;
  process.env.E2B_SANDBOX_URL = url;
  process.env.E2B_API_KEY = API_KEY;
  process.env.E2B_DOMAIN = "127.0.0.1"; // never used for a URL here; keeps the SDK off e2b.app for anything unforeseen
}

before(async () => {
  fx = await workspaceFixture("e2b");
  img = await buildBusyboxImage({
    files: {
      "/etc/passwd": "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
      "/etc/group": "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n",
    },
  });
  await addTreeLayer(img, async (rootfs) => {
    await mkdir(join(rootfs, "home/user"), { recursive: true });
    await writeFile(join(rootfs, "home/user/.profile"), "export E2B_PROFILE_READ=yes\n");
    await chown(join(rootfs, "home/user/.profile"), 1000, 1000);
    await chown(join(rootfs, "home/user"), 1000, 1000);
  });
  imageRef = (await pushImage(img, fx.registry, "e2b/base:1")).ref;
  process.env.MICROAGENT_KERNEL_CACHE ??= join(tmpdir(), "microagent-test-kernel-cache");
  server = await startE2bServer({
    hostname: "127.0.0.1",
    port: 0,
    apiKey: API_KEY,
    host: { stateDir: fx.stateDir, providers: realProviders() },
    templates: { base: imageRef },
    network: "user", // one sandbox = one workspace in the default user network mode
    resources: { profile: "tiny" },
    log: (line) => serverLog.push(line),
  });
  pointSdkAt(server.url);
  sbx = await Sandbox.create("base", { requestTimeoutMs: 600_000, metadata: { suite: "e2b-sdk" } });
});

after(async () => {
  await server?.close().catch(() => {});
  // Orphan check: supervisors that just recorded their final state get a moment to exit.
  const left = await reapVmProcesses(fx.stateDir, 15_000);
  await img?.cleanup();
  await fx?.cleanup();
  assert.deepEqual(left, [], "a qemu or supervisor process survived the suite");
});

test("create: Sandbox.create boots one workspace per sandbox and reports it running", async () => {
  assert.match(sbx.sandboxId, /^[0-9a-f]{20}$/);
  assert.equal(await sbx.isRunning(), true);
  const ws = await Workspace.get(`e2b-${sbx.sandboxId}`, { stateDir: fx.stateDir });
  assert.equal((await ws.status()).event.state, "running");
  const info = await sbx.getInfo();
  assert.equal(info.sandboxId, sbx.sandboxId);
  assert.equal(info.templateId, "base");
  assert.deepEqual(info.metadata, { suite: "e2b-sdk" });
  assert.ok(info.endAt.getTime() > Date.now(), "the default timeout lies ahead");
});

test("create: a wrong API key is refused with the SDK's AuthenticationError", async () => {
  await assert.rejects(Sandbox.list({ apiKey: "wrong" }).nextItems(), (e: Error) => e.name === "AuthenticationError" && /api-key/i.test(e.message));
});

test("commands/run: run command, streaming and exit codes", async () => {
  const text = "Hello, World!";
  const r = await sbx.commands.run(`echo "${text}"`);
  assert.equal(r.exitCode, 0);
  assert.equal(r.stdout, `${text}\n`);

  const seen: string[] = [];
  const streamed = await sbx.commands.run(`for i in 1 2 3; do echo line$i; echo err$i >&2; sleep 0.2; done`, { onStdout: (d) => void seen.push(d) });
  assert.equal(streamed.stdout, "line1\nline2\nline3\n");
  assert.equal(streamed.stderr, "err1\nerr2\nerr3\n");
  assert.ok(seen.length >= 2, `stdout arrived in ${seen.length} chunk(s); expected it streamed as printed`);
  assert.equal(seen.join(""), "line1\nline2\nline3\n");

  await assert.rejects(sbx.commands.run("echo out; echo err >&2; exit 3"), (e: unknown) => {
    assert.ok(e instanceof CommandExitError, `got ${String(e)}`);
    assert.equal(e.exitCode, 3);
    assert.equal(e.stdout, "out\n");
    assert.equal(e.stderr, "err\n");
    return true;
  });
});

test("commands/envVars: command envs, sandbox cwd and user, login shell", async () => {
  const r = await sbx.commands.run("echo $FOO:$BAR", { envs: { FOO: "foo", BAR: "b a r" } });
  assert.equal(r.stdout, "foo:b a r\n");
  assert.equal((await sbx.commands.run("pwd", { cwd: "/tmp" })).stdout, "/tmp\n");
  // No user: the image's default (root here). A named user runs as itself, in its home.
  assert.equal((await sbx.commands.run("id -un; pwd")).stdout, "root\n/root\n");
  assert.equal((await sbx.commands.run("id -un; pwd; echo $HOME", { user: "user" as "root" })).stdout, "user\n/home/user\n/home/user\n");
  // This image has no bash, so commands ran as `sh -c`; once a bash exists they run as `bash -l -c`.
  assert.equal((await sbx.commands.run("echo $0")).stdout, "/bin/sh\n");
  await sbx.files.write("/bin/bash", '#!/bin/sh\necho "bash $*" > /tmp/bash-argv\nshift 2\nexec /bin/sh -c "$@"\n');
  await sbx.commands.run("chmod 755 /bin/bash");
  assert.equal((await sbx.commands.run("echo via-bash")).stdout, "via-bash\n");
  assert.equal(await sbx.files.read("/tmp/bash-argv"), "bash -l -c echo via-bash\n");
  await sbx.files.remove("/bin/bash");

  // --user: the user when the SDK names none (E2B templates default to `user`). Same sandbox, a
  // second front end over the server's table, driven on the raw Connect wire.
  const asUser = e2bFetch(server.table, API_KEY, "user");
  const res = await asUser(
    new Request(`${server.url}/process.Process/Start`, {
      method: "POST",
      headers: { "E2b-Sandbox-Id": sbx.sandboxId, "X-Access-Token": await accessToken(sbx.sandboxId), "Content-Type": "application/connect+json" },
      body: Buffer.from(envelope({ process: { cmd: "/bin/bash", args: ["-l", "-c", "id -un"] }, stdin: false })),
    }),
  );
  assert.equal(res.headers.get("content-type"), "application/connect+json");
  const got = frames(Buffer.from(await res.arrayBuffer()));
  const events = got.filter((f) => f.flags === 0).map((f) => f.json.event as Record<string, Record<string, unknown>>);
  assert.equal(typeof events[0]!.start!.pid, "number");
  const stdout = events.flatMap((e) => (e.data?.stdout ? [Buffer.from(e.data.stdout as string, "base64").toString()] : [])).join("");
  assert.equal(stdout, "user\n");
  assert.deepEqual(events.at(-1)!.end, { exitCode: 0, exited: true, status: "exit status 0" });
  assert.deepEqual(got.at(-1), { flags: 2, json: {} });
});

test("commands/run: a user missing from the image is a clear error, not a silent root", async () => {
  await assert.rejects(sbx.commands.run("id -un", { user: "ghost" as "root" }), (e: Error) => {
    assert.ok(e instanceof NotFoundError, `got ${e.name}: ${e.message}`);
    assert.match(e.message, /user 'ghost' does not exist/);
    return true;
  });
});

test("commands/sendStdin: send stdin to a background command, then close it", async () => {
  const cmd: CommandHandle = await sbx.commands.run("cat", { background: true, stdin: true });
  assert.ok(cmd.pid > 0);
  const listed = await sbx.commands.list();
  assert.ok(listed.some((p) => p.pid === cmd.pid && p.args.includes("cat")), `commands.list: ${JSON.stringify(listed)}`);
  await sbx.commands.sendStdin(cmd.pid, "Hello, ");
  await sbx.commands.sendStdin(cmd.pid, "World!\n");
  await sbx.commands.closeStdin(cmd.pid);
  const r = await cmd.wait();
  assert.equal(r.exitCode, 0);
  assert.equal(r.stdout, "Hello, World!\n");
});

test("commands/kill: kill a background command (and its children); connect by pid", async () => {
  const cmd = await sbx.commands.run("sleep 600 & sleep 600; echo never", { background: true });
  const again = await sbx.commands.connect(cmd.pid);
  assert.equal(again.pid, cmd.pid);
  assert.equal(await sbx.commands.kill(cmd.pid), true);
  await assert.rejects(cmd.wait(), (e: unknown) => e instanceof CommandExitError && e.exitCode === -1 && !e.stdout.includes("never"));
  assert.equal((await sbx.commands.list()).some((p) => p.pid === cmd.pid), false);
  assert.equal(await sbx.commands.kill(cmd.pid), false, "a gone pid is not found");
  assert.equal((await sbx.commands.run("ps | grep -c '[s]leep 600' || true")).stdout.trim(), "0", "the background child died with the group");
});

test("files/write, files/read: text, bytes, relative paths, gzip and octet-stream", async () => {
  const info = await sbx.files.write("/home/user/notes/a.txt", "This is a test file.");
  assert.equal(info.path, "/home/user/notes/a.txt");
  assert.equal(info.name, "a.txt");
  assert.equal(await sbx.files.read("/home/user/notes/a.txt"), "This is a test file.");
  const rel = await sbx.files.write("rel.txt", "relative", { user: "user" as "root" });
  assert.equal(rel.path, "/home/user/rel.txt");
  assert.equal(await sbx.files.read("rel.txt", { user: "user" as "root" }), "relative");
  const bytes = new Uint8Array(1_200_000).map((_, i) => (i * 7) % 256); // over one exec's content cap: written in parts
  await sbx.files.write("/tmp/big.bin", bytes.buffer as ArrayBuffer);
  assert.deepEqual(await sbx.files.read("/tmp/big.bin", { format: "bytes" }), bytes);
  await sbx.files.write("/tmp/gz.txt", "gzipped both ways", { gzip: true });
  assert.equal(await sbx.files.read("/tmp/gz.txt", { gzip: true }), "gzipped both ways");
  await sbx.files.write("/tmp/empty.txt", "");
  assert.equal(await sbx.files.read("/tmp/empty.txt"), "");
  await assert.rejects(sbx.files.read("/nope/missing.txt"), (e: Error) => e.name === "FileNotFoundError" || e instanceof NotFoundError);
  // The raw wire: an octet-stream upload with Content-Encoding gzip, as envd >= 0.5.7 takes it.
  const res = await fetch(`${server.url}/files?path=/tmp/raw.txt`, {
    method: "POST",
    headers: { "E2b-Sandbox-Id": sbx.sandboxId, "E2b-Sandbox-Port": "49983", "X-Access-Token": await accessToken(sbx.sandboxId), "Content-Type": "application/octet-stream", "Content-Encoding": "gzip" },
    body: gzipSync("raw body"),
  });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), [{ name: "raw.txt", type: "file", path: "/tmp/raw.txt" }]);
  assert.equal(await sbx.files.read("/tmp/raw.txt"), "raw body");
});

test("files/signing: signed download and upload URLs work bare; expired and tampered ones are refused", async () => {
  const down = await sbx.downloadUrl("/home/user/notes/a.txt", { useSignatureExpiration: 10_000 });
  assert.match(down, /signature=v1_/);
  const got = await fetch(down);
  assert.equal(got.status, 200);
  assert.equal(await got.text(), "This is a test file.");
  const expired = await fetch(await sbx.downloadUrl("/home/user/notes/a.txt", { useSignatureExpiration: -10_000 }));
  assert.equal(expired.status, 401);
  assert.deepEqual(await expired.json(), { code: 401, message: "signature is already expired" });
  const tampered = await fetch(down.replace("a.txt", "b.txt"));
  assert.equal(tampered.status, 401);
  assert.deepEqual(await tampered.json(), { code: 401, message: "invalid signature" });
  const form = new FormData();
  form.append("file", new Blob(["uploaded bare"]), "up.txt");
  const up = await fetch(await sbx.uploadUrl("/tmp/up.txt", { useSignatureExpiration: 10_000 }), { method: "POST", body: form });
  assert.equal(up.status, 200);
  assert.equal(await sbx.files.read("/tmp/up.txt"), "uploaded bare");
  const textForm = new FormData();
  textForm.append("file", "a plain field"); // no file name: the field's text is the content
  const upText = await fetch(await sbx.uploadUrl("/tmp/up2.txt"), { method: "POST", body: textForm });
  assert.deepEqual(await upText.json(), [{ name: "up2.txt", type: "file", path: "/tmp/up2.txt" }]);
  assert.equal(await sbx.files.read("/tmp/up2.txt"), "a plain field");
});

test("files/list, files/makeDir, files/rename, files/remove, files/exists", async () => {
  assert.equal(await sbx.files.makeDir("/tmp/d/sub"), true);
  assert.equal(await sbx.files.makeDir("/tmp/d/sub"), false, "an existing directory is not made again");
  await sbx.files.write("/tmp/d/one.txt", "1");
  await sbx.files.write("/tmp/d/sub/two.txt", "22");
  const top = await sbx.files.list("/tmp/d");
  assert.deepEqual(top.map((e) => [e.name, e.type, e.path]), [["one.txt", "file", "/tmp/d/one.txt"], ["sub", "dir", "/tmp/d/sub"]]);
  const one = top[0]!;
  assert.equal(one.size, 1);
  assert.equal(one.permissions, "-rw-r--r--");
  assert.equal(one.owner, "root");
  assert.ok(one.modifiedTime && Math.abs(one.modifiedTime.getTime() - Date.now()) < 3600_000, `mtime ${String(one.modifiedTime)}`);
  const deep = await sbx.files.list("/tmp/d", { depth: 2 });
  assert.deepEqual(deep.map((e) => e.path), ["/tmp/d/one.txt", "/tmp/d/sub", "/tmp/d/sub/two.txt"]);
  const moved = await sbx.files.rename("/tmp/d/one.txt", "/tmp/d/sub/uno.txt");
  assert.equal(moved.path, "/tmp/d/sub/uno.txt");
  assert.equal(await sbx.files.exists("/tmp/d/one.txt"), false);
  assert.equal(await sbx.files.read("/tmp/d/sub/uno.txt"), "1");
  assert.equal((await sbx.files.getInfo("/tmp/d/sub")).type, "dir");
  await sbx.commands.run("cd /tmp/d && ln -s sub/uno.txt ln");
  const ln = await sbx.files.getInfo("/tmp/d/ln");
  assert.deepEqual([ln.type, ln.symlinkTarget], ["symlink", "/tmp/d/sub/uno.txt"]);
  assert.deepEqual((await sbx.files.list("/tmp/d")).map((e) => [e.name, e.type, e.symlinkTarget]), [["ln", "symlink", "/tmp/d/sub/uno.txt"], ["sub", "dir", undefined]]);
  await sbx.files.remove("/tmp/d");
  await sbx.files.remove("/tmp/d"); // removing what is gone succeeds, as envd's does
  assert.equal(await sbx.files.exists("/tmp/d"), false);
  await assert.rejects(sbx.files.list("/tmp/d"), (e: Error) => e instanceof NotFoundError || e.name === "FileNotFoundError");
  await assert.rejects(sbx.files.rename("/tmp/none", "/tmp/other"), (e: Error) => e instanceof NotFoundError || e.name === "FileNotFoundError");
});

test("pause: Sandbox.pause freezes the sandbox with its memory, connect resumes it", async () => {
  // A background process counting in memory: after pause + connect it continues (same pid, higher count).
  const counter = await sbx.commands.run("i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done", { background: true });
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(await Sandbox.pause(sbx.sandboxId), true);
  const ws = await Workspace.get(`e2b-${sbx.sandboxId}`, { stateDir: fx.stateDir });
  assert.equal((await ws.status()).event.state, "paused");
  const listedPaused = await Sandbox.list({ query: { metadata: { suite: "e2b-sdk" }, state: ["paused"] } }).nextItems();
  assert.deepEqual(listedPaused.map((s) => [s.sandboxId, s.state]), [[sbx.sandboxId, "paused"]]);
  assert.deepEqual(await Sandbox.list({ query: { metadata: { suite: "e2b-sdk" }, state: ["running"] } }).nextItems(), []);
  assert.equal(await Sandbox.pause(sbx.sandboxId), false, "pausing a paused sandbox answers 409, which the SDK reports as false");
  const resumed = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 600_000 });
  assert.equal((await ws.status()).event.state, "running");
  const a = Number((await resumed.commands.run("cat /tmp/count")).stdout.trim());
  await new Promise((r) => setTimeout(r, 600));
  const b = Number((await resumed.commands.run("cat /tmp/count")).stdout.trim());
  assert.ok(a > 0 && b > a, `the in-memory counter continues after the resume (${a} then ${b})`);
  await counter.kill();
});

test("kill: Sandbox.list shows the sandbox, kill removes it and its workspace", async () => {
  const listed = await Sandbox.list({ query: { metadata: { suite: "e2b-sdk" } } }).nextItems();
  assert.deepEqual(listed.map((s) => s.sandboxId), [sbx.sandboxId]);
  assert.equal(listed[0]!.state, "running");
  assert.deepEqual(await Sandbox.list({ query: { metadata: { suite: "other" } } }).nextItems(), []);
  // connect: a second handle on the running sandbox; a longer timeout extends its life.
  const before = (await sbx.getInfo()).endAt.getTime();
  const again = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 900_000 });
  assert.equal((await again.commands.run("echo again")).stdout, "again\n");
  assert.ok((await again.getInfo()).endAt.getTime() > before + 300_000, "connect extended the timeout");
  // sandboxKilledDuringRun: a command running when the sandbox dies fails as the SDK's TimeoutError.
  const running = await sbx.commands.run("sleep 600", { background: true });
  assert.equal(await sbx.kill(), true);
  const err = await running.wait().catch((e: unknown) => e);
  assert.ok(err instanceof TimeoutError, `got ${String(err)}`);
  assert.match(err.message, /sandbox was killed or reached its end of life/);
  assert.equal(await sbx.isRunning(), false);
  assert.equal(await Sandbox.kill(sbx.sandboxId), false, "killing twice finds nothing");
  await assert.rejects(Workspace.get(`e2b-${sbx.sandboxId}`, { stateDir: fx.stateDir }), (e: Error & { code?: string }) => e.code === "WORKSPACE_NOT_FOUND");
  await assert.rejects(sbx.commands.run("true"), (e: Error) => /not running|timeout|502/i.test(`${e.name} ${e.message}`));
});

/** The library path a caller of src/api takes: create, start, first exec (the same image and resources). */
async function libraryCreateToFirstCommand(name: string): Promise<number> {
  const t0 = performance.now();
  const lib = await Workspace.create(name, { image: imageRef, network: "user", resources: { profile: "tiny" } }, { stateDir: fx.stateDir, providers: realProviders() });
  await lib.start();
  const out = await lib.exec(["/bin/sh", "-c", "echo ready"]);
  const ms = performance.now() - t0;
  assert.equal(out.stdout.toString(), "ready\n");
  await lib.delete({ force: true });
  return ms;
}

async function e2bCreateToFirstCommand(): Promise<{ ms: number; sb: Sandbox }> {
  const t0 = performance.now();
  const sb = await Sandbox.create("base", { requestTimeoutMs: 600_000 });
  const r = await sb.commands.run("echo ready");
  const ms = performance.now() - t0;
  assert.equal(r.stdout, "ready\n");
  return { ms, sb };
}

test("timeout: a sandbox is killed when its timeout passes; bench: create-to-first-command via serve e2b vs the library", async () => {
  // ABBA order, so drift on this shared machine weighs on both sides alike.
  const lib1 = await libraryCreateToFirstCommand("bench-lib-1");
  const e1 = await e2bCreateToFirstCommand();
  await e1.sb.kill();
  const e2 = await e2bCreateToFirstCommand();
  const lib2 = await libraryCreateToFirstCommand("bench-lib-2");
  const libMs = (lib1 + lib2) / 2;
  const e2bMs = (e1.ms + e2.ms) / 2;
  console.log(
    `bench: create-to-first-command serve e2b ${e2bMs.toFixed(0)} ms (${e1.ms.toFixed(0)}, ${e2.ms.toFixed(0)}) vs library ${libMs.toFixed(0)} ms (${lib1.toFixed(0)}, ${lib2.toFixed(0)}): ratio ${(e2bMs / libMs).toFixed(2)}`,
  );
  console.log(serverLog.filter((l) => l.includes("running after")).join("\n"));

  const sb = e2.sb;
  await sb.setTimeout(1000);
  const info = await sb.getInfo();
  assert.ok(info.endAt.getTime() <= Date.now() + 1500, "setTimeout moved the end time");
  const deadline = Date.now() + 60_000;
  while ((await sb.isRunning()) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 200));
  assert.equal(await sb.isRunning(), false, "the sandbox outlived its timeout");
  for (let i = 0; i < 100; i++) {
    try {
      await Workspace.get(`e2b-${sb.sandboxId}`, { stateDir: fx.stateDir });
    } catch {
      return; // deleted with the sandbox
    }
    await new Promise((res) => setTimeout(res, 100));
  }
  assert.fail("the timed-out sandbox's workspace was not deleted");
});

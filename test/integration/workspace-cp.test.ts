/**
 * `cp` on a real VM (one boot): a directory tree host -> guest -> host with hashes, modes and mtimes
 * checked on both ends, owners in the guest with and without --archive, owners back on the host with
 * --archive (the suite runs as root), docker's destination rules, a guest disk that fills up, the
 * missing-path errors, and the stopped-workspace error once the VM is stopped.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chownSync, chmodSync, lchownSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { workspaceFixture, realProviders, type WorkspaceFixture } from "../helpers/workspace.ts";
import { scratchDir } from "../helpers/scratch.ts";
import { rawTar } from "../helpers/raw-tar.ts";
import { runCli } from "../helpers/cli.ts";
import { createWorkspace } from "../../src/workspace/create.ts";
import { startWorkspace, stopWorkspace } from "../../src/api/lifecycle.ts";
import { Workspace } from "../../src/api/workspace.ts";
import { cp } from "../../src/api/cp.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { RESULT_SCHEMAS, nonCamelKeys } from "../../src/contract/results.ts";

let fx: WorkspaceFixture;
const NAME = "cpws";

before(async () => {
  fx = await workspaceFixture("cp");
  process.env.MICROAGENT_KERNEL_CACHE ??= join(tmpdir(), "microagent-test-kernel-cache");
});

after(async () => {
  await stopWorkspace(NAME, "kill", { stateDir: fx.stateDir }).catch(() => {});
  await fx.cleanup();
});

const MTIME = 1_650_000_000;

/** The tree every direction must preserve. */
function makeTree(root: string): void {
  mkdirSync(join(root, "a", "b", "c"), { recursive: true });
  writeFileSync(join(root, "a", "b", "c", "random.bin"), randomBytes(5 * 1024 * 1024));
  writeFileSync(join(root, "empty"), "");
  writeFileSync(join(root, "run.sh"), "#!/bin/sh\necho hi\n");
  chmodSync(join(root, "run.sh"), 0o755);
  writeFileSync(join(root, "private"), "p");
  chmodSync(join(root, "private"), 0o600);
  writeFileSync(join(root, "suid"), "s");
  chmodSync(join(root, "suid"), 0o4755);
  symlinkSync("a/b/c/random.bin", join(root, "link"));
  for (const p of ["a/b/c/random.bin", "empty", "run.sh", "private", "suid"]) utimesSync(join(root, p), MTIME, MTIME);
  for (const p of ["a/b/c", "a/b", "a"]) utimesSync(join(root, p), MTIME + 60, MTIME + 60);
  // Owners that differ from the caller's, to see --archive at work.
  for (const p of ["a", "a/b", "a/b/c", "a/b/c/random.bin", "empty", "run.sh", "private", "suid"]) chownSync(join(root, p), 1234, 5678);
  lchownSync(join(root, "link"), 1234, 5678);
  chmodSync(join(root, "suid"), 0o4755); // chown cleared it
  assert.equal(lstatSync(join(root, "suid")).mode & 0o7777, 0o4755);
}

interface Node {
  type: string;
  mode: number;
  mtime: number;
  sha?: string;
  target?: string;
}

/** Every path below root: type, permission bits, whole-second mtime (files and dirs), content hash. */
function walk(root: string, rel = ""): Map<string, Node> {
  const out = new Map<string, Node>();
  for (const name of readdirSync(join(root, rel)).sort()) {
    const p = rel ? `${rel}/${name}` : name;
    const st = lstatSync(join(root, p));
    if (st.isSymbolicLink()) out.set(p, { type: "symlink", mode: 0, mtime: 0, target: readlinkSync(join(root, p)) });
    else if (st.isDirectory()) {
      out.set(p, { type: "dir", mode: st.mode & 0o7777, mtime: Math.floor(st.mtimeMs / 1000) });
      for (const [k, v] of walk(root, p)) out.set(k, v);
    } else out.set(p, { type: "file", mode: st.mode & 0o7777, mtime: Math.floor(st.mtimeMs / 1000), sha: createHash("sha256").update(readFileSync(join(root, p))).digest("hex") });
  }
  return out;
}

async function cli(...args: string[]) {
  const r = await runCli(["--state-dir", fx.stateDir, ...args]);
  return { code: r.code, stdout: r.out, stderr: r.err };
}

async function sh(ws: Workspace, script: string): Promise<string> {
  const r = await ws.exec(["/bin/sh", "-c", script]);
  assert.equal(r.exitCode, 0, `${script}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

async function rejects(p: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isMicroagentError(e), String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, message);
    return true;
  });
}

test("cp: a tree round trips host -> guest -> host; owners, destination rules, full disk, missing paths, stopped workspace", { timeout: 600_000 }, async () => {
  const imageRef = await fx.image("cp/busybox:1");
  await createWorkspace({ name: NAME, stateDir: fx.stateDir, image: imageRef, providers: realProviders(), profile: "tiny" });
  const host = scratchDir("cp-host");
  const src = join(host, "tree");
  mkdirSync(src);
  makeTree(src);
  const before = walk(src);

  await startWorkspace(NAME, { stateDir: fx.stateDir });
  const ws = await Workspace.connect(NAME, { stateDir: fx.stateDir });

  // --- host -> guest, into an existing directory (docker: lands as /root/tree) ---
  const t0 = Date.now();
  const inRes = await cli("--json", "cp", src, `${NAME}:/root`);
  const inMs = Date.now() - t0;
  assert.equal(inRes.code, 0, inRes.stdout + inRes.stderr);
  const inBody = JSON.parse(inRes.stdout);
  assert.ok(RESULT_SCHEMAS.cp.safeParse(inBody).success, inRes.stdout);
  assert.deepEqual(nonCamelKeys(inBody), []);
  assert.equal(inBody.destination, `${NAME}:/root/tree`);
  assert.equal(inBody.bytes, 5 * 1024 * 1024 + "#!/bin/sh\necho hi\n".length + 2);
  // The guest's view: hashes, modes, mtimes, owners (root:root without --archive), the symlink.
  const guestView = await sh(
    ws,
    "cd /root/tree && for f in a/b/c/random.bin empty run.sh private suid; do echo \"$f $(sha256sum < $f | cut -d' ' -f1) $(stat -c '%a %Y %u:%g' $f)\"; done; stat -c '%a %Y %u:%g' a/b; readlink link",
  );
  const lines = guestView.trim().split("\n");
  const sha = (p: string) => before.get(p)?.sha;
  assert.deepEqual(lines.slice(0, 5), [
    `a/b/c/random.bin ${sha("a/b/c/random.bin")} 644 ${MTIME} 0:0`,
    `empty ${sha("empty")} 644 ${MTIME} 0:0`,
    `run.sh ${sha("run.sh")} 755 ${MTIME} 0:0`,
    `private ${sha("private")} 600 ${MTIME} 0:0`,
    `suid ${sha("suid")} 4755 ${MTIME} 0:0`,
  ]);
  assert.equal(lines[5], `755 ${MTIME + 60} 0:0`, "directory mode, mtime (after its children) and owner");
  assert.equal(lines[6], "a/b/c/random.bin");

  // --archive keeps the host owners in the guest; the destination is a new name (rename).
  const arch = await cli("cp", "-a", src, `${NAME}:/root/archived`);
  assert.equal(arch.code, 0, arch.stderr);
  assert.match(arch.stdout, /^copied 10 entries \(5\.0 MiB\) to cpws:\/root\/archived\n$/);
  assert.equal(await sh(ws, "stat -c '%u:%g' /root/archived/a/b/c/random.bin /root/archived/a; stat -c '%a' /root/archived/suid"), "1234:5678\n1234:5678\n4755\n");

  // --- guest -> host: a missing destination is the new name ---
  const back = join(host, "back");
  const t1 = Date.now();
  const out = await cp(`${NAME}:/root/tree`, back, { stateDir: fx.stateDir });
  const outMs = Date.now() - t1;
  assert.equal(out.destination, back);
  // Identical but for setuid, which the host copy drops without --archive (it would apply to the caller).
  const expected = new Map(before);
  expected.set("suid", { ...(before.get("suid") as Node), mode: 0o755 });
  assert.deepEqual(walk(back), expected, "the tree came back identical (types, modes, mtimes, hashes, link targets)");
  // Without --archive the copies belong to the caller (root here); with it, to the guest's owners.
  assert.equal(lstatSync(join(back, "run.sh")).uid, 0);
  const archBack = join(host, "archback");
  await cp(`${NAME}:/root/archived`, archBack, { stateDir: fx.stateDir, archive: true });
  assert.equal(lstatSync(join(archBack, "a/b/c/random.bin")).uid, 1234);
  assert.equal(lstatSync(join(archBack, "a/b/c/random.bin")).gid, 5678);
  assert.equal(lstatSync(join(archBack, "suid")).mode & 0o7777, 0o4755);
  // SRC/. copies the contents into an existing directory; a single file into a directory keeps its name.
  mkdirSync(join(host, "contents"));
  await cp(`${NAME}:/root/tree/a/.`, join(host, "contents"), { stateDir: fx.stateDir });
  assert.equal(lstatSync(join(host, "contents", "b", "c", "random.bin")).size, 5 * 1024 * 1024);
  await cp(`${NAME}:/root/tree/run.sh`, join(host, "contents"), { stateDir: fx.stateDir });
  assert.equal(readFileSync(join(host, "contents", "run.sh"), "utf8"), "#!/bin/sh\necho hi\n");
  // A file onto an existing file in the guest replaces it.
  writeFileSync(join(host, "note"), "v2\n");
  await cp(join(host, "note"), `${NAME}:/root/tree/empty`, { stateDir: fx.stateDir });
  assert.equal(await sh(ws, "cat /root/tree/empty"), "v2\n");

  // --- errors ---
  await rejects(cp(`${NAME}:/root/nope`, join(host, "x"), { stateDir: fx.stateDir }), "CP_SOURCE_NOT_FOUND", /cpws:\/root\/nope: no such file or directory in the guest/);
  await rejects(cp(join(host, "nope"), `${NAME}:/root`, { stateDir: fx.stateDir }), "CP_SOURCE_NOT_FOUND", /nope: no such file or directory on the host/);
  await rejects(cp(src, `${NAME}:/no/such/dir/x`, { stateDir: fx.stateDir }), "CP_DESTINATION_NOT_FOUND", /\/no\/such\/dir does not exist/);
  await rejects(cp(src, `${NAME}:/root/tree/run.sh`, { stateDir: fx.stateDir }), "CP_TYPE_CONFLICT", /not a directory/);
  const missing = await cli("--json", "cp", `${NAME}:/root/nope`, host);
  assert.equal(missing.code, 1);
  assert.equal(JSON.parse(missing.stdout).code ?? JSON.parse(missing.stdout).error?.code, "CP_SOURCE_NOT_FOUND", missing.stdout);
  // A guest filesystem that fills up: a 1 MiB tmpfs cannot take the 5 MiB file.
  await sh(ws, "mkdir -p /mnt/small && mount -t tmpfs -o size=1m tmpfs /mnt/small");
  await rejects(cp(src, `${NAME}:/mnt/small`, { stateDir: fx.stateDir }), "CP_DISK_FULL", /no space left on the workspace disk/);

  // -L follows SRC itself (host and guest); without it a symlink is copied as a link.
  symlinkSync(src, join(host, "linkdir"));
  await cp(join(host, "linkdir"), `${NAME}:/root/`, { stateDir: fx.stateDir, followLink: true });
  await cp(join(host, "linkdir"), `${NAME}:/root/asLink`, { stateDir: fx.stateDir });
  assert.equal(await sh(ws, "test -d /root/linkdir && test ! -L /root/linkdir && sha256sum < /root/linkdir/a/b/c/random.bin | cut -d' ' -f1; readlink /root/asLink"), `${sha("a/b/c/random.bin")}\n${src}\n`);
  await cp(`${NAME}:/root/tree/link`, join(host, "derefd"), { stateDir: fx.stateDir, followLink: true });
  assert.equal(lstatSync(join(host, "derefd")).isFile(), true);
  assert.equal(createHash("sha256").update(readFileSync(join(host, "derefd"))).digest("hex"), sha("a/b/c/random.bin"));

  // A hostile guest: its tar is replaced by one that sends a crafted archive. Nothing may land
  // outside the host destination, through a symlink the archive plants or with '..'.
  const outside = join(host, "outside");
  mkdirSync(outside);
  const hostile: Array<[Buffer, RegExp]> = [
    [
      rawTar([
        { name: "tree/", typeflag: "5", mode: 0o755 },
        { name: "tree/out", typeflag: "2", linkname: outside },
        { name: "tree/out/pwned", typeflag: "0", content: Buffer.from("pwned") },
      ]),
      /would be written through the symlink "tree\/out"/,
    ],
    [rawTar([{ name: "tree/../../pwned", typeflag: "0", content: Buffer.from("pwned") }]), /contains '\.\.'/],
    [rawTar([{ name: "tree/h", typeflag: "1", linkname: join(outside, "victim") }]), /hard link target ".*victim", which is an absolute path/],
    [rawTar([{ name: "tree/h", typeflag: "1", linkname: "tree/../../outside/victim" }]), /hard link target .* contains '\.\.'/],
  ];
  writeFileSync(join(outside, "victim"), "safe");
  await sh(ws, "rm -f /bin/tar && printf '#!/bin/sh\\ncat /root/evil.tar\\n' > /bin/tar && chmod 755 /bin/tar");
  for (const [tar, why] of hostile) {
    await ws.files.write("/root/evil.tar", tar);
    mkdirSync(join(host, "victimdest"), { recursive: true });
    await rejects(cp(`${NAME}:/root/tree`, join(host, "victimdest"), { stateDir: fx.stateDir }), "CP_ARCHIVE_UNSAFE", why);
    assert.deepEqual(readdirSync(outside), ["victim"]);
    assert.equal(readFileSync(join(outside, "victim"), "utf8"), "safe");
    assert.equal(readdirSync(host).includes("pwned"), false);
  }

  // --- a stopped workspace ---
  await stopWorkspace(NAME, "stop", { stateDir: fx.stateDir });
  const stopped = await cli("cp", src, `${NAME}:/root`);
  assert.equal(stopped.code, 1);
  assert.match(stopped.stderr, /cannot copy: workspace cpws is stopped/);
  assert.match(stopped.stderr, /microagent start cpws/);
  await rejects(cp(`${NAME}:/root/tree`, join(host, "y"), { stateDir: fx.stateDir }), "CP_WORKSPACE_NOT_RUNNING", /is stopped/);
  console.log(`cp timings: 5 MiB tree in ${inMs} ms, out ${outMs} ms`);
});

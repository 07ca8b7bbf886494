/**
 * `cp`'s host side without a VM: the tar writer (round trips through the project's reader and the
 * host's GNU tar), the planner's refusals, and the extractor against hostile guest archives.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, linkSync, lstatSync, mkdirSync, readFileSync, readlinkSync, statSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { Buffer } from "node:buffer";
import { encodeHeader, planHostTree, writeTar } from "../../src/api/cp-tar.ts";
import { extractTar } from "../../src/api/cp-extract.ts";
import { parseEndpoint } from "../../src/api/cp.ts";
import { readTar } from "../../src/rootfs/tar.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { rawTar } from "../helpers/raw-tar.ts";
import { scratchDir } from "../helpers/scratch.ts";

const LONG_DIR = "d".repeat(120);
const LONG_FILE = `${"n".repeat(150)}.txt`;
const LONG_TARGET = `/${"t".repeat(200)}`;
const MTIME = 1_600_000_000;

/** A tree with what the writer must handle: nested and long names, modes, an empty file, links. */
function makeTree(root: string): void {
  mkdirSync(join(root, "tree", LONG_DIR), { recursive: true });
  writeFileSync(join(root, "tree", LONG_DIR, LONG_FILE), "deep\n");
  writeFileSync(join(root, "tree", "exec.sh"), "#!/bin/sh\n");
  chmodSync(join(root, "tree", "exec.sh"), 0o755);
  writeFileSync(join(root, "tree", "secret"), "s");
  chmodSync(join(root, "tree", "secret"), 0o600);
  writeFileSync(join(root, "tree", "suid"), "x");
  chmodSync(join(root, "tree", "suid"), 0o4755);
  writeFileSync(join(root, "tree", "empty"), "");
  symlinkSync("exec.sh", join(root, "tree", "link"));
  symlinkSync(LONG_TARGET, join(root, "tree", "longlink"));
  linkSync(join(root, "tree", "secret"), join(root, "tree", "hard"));
  for (const p of ["exec.sh", "secret", "suid", "empty", `${LONG_DIR}/${LONG_FILE}`]) utimesSync(join(root, "tree", p), MTIME, MTIME);
  utimesSync(join(root, "tree", LONG_DIR), MTIME + 5, MTIME + 5);
}

async function* chunks(buf: Buffer, size = 700): AsyncGenerator<Buffer> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

async function collect(gen: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of gen) parts.push(c);
  return Buffer.concat(parts);
}

test("cp-tar: a planned tree round trips through the project's tar reader (names, modes, ids, mtimes, links)", async () => {
  const root = scratchDir("cp-tar-rt");
  makeTree(root);
  const plan = planHostTree(join(root, "tree"), "top", { owner: { uid: 0, gid: 0 } });
  const tar = await collect(writeTar(plan));
  assert.equal(tar.length % 512, 0);
  const seen = new Map<string, { type: string; mode: number; uid: number; mtime: number; linkpath: string; body: string }>();
  for await (const { entry, body } of readTar(chunks(tar), "t")) {
    seen.set(entry.path.replace(/\/$/, ""), { type: entry.type, mode: entry.mode, uid: entry.uid, mtime: entry.mtime, linkpath: entry.linkpath, body: (await collect(body())).toString() });
  }
  assert.equal(seen.get("top")?.type, "dir");
  assert.deepEqual(seen.get(`top/${LONG_DIR}/${LONG_FILE}`), { type: "file", mode: 0o644 & ~0, uid: 0, mtime: MTIME, linkpath: "", body: "deep\n" });
  assert.equal(seen.get(`top/${LONG_DIR}`)?.mtime, MTIME + 5);
  assert.equal(seen.get("top/exec.sh")?.mode, 0o755);
  assert.equal(seen.get("top/secret")?.mode, 0o600);
  assert.equal(seen.get("top/suid")?.mode, 0o4755);
  assert.equal(seen.get("top/empty")?.body, "");
  assert.deepEqual([seen.get("top/link")?.type, seen.get("top/link")?.linkpath], ["symlink", "exec.sh"]);
  assert.equal(seen.get("top/longlink")?.linkpath, LONG_TARGET);
  // The second name of a hard-linked file is a link to the first one written (byte order: hard < secret).
  assert.deepEqual([seen.get("top/secret")?.type, seen.get("top/secret")?.linkpath], ["hardlink", "top/hard"]);
  assert.equal(seen.get("top/hard")?.body, "s");
});

test("cp-tar: GNU tar lists and extracts the writer's archive exactly", async () => {
  const root = scratchDir("cp-tar-gnu");
  makeTree(root);
  const tar = await collect(writeTar(planHostTree(join(root, "tree"), "top", {}), { repeatDirs: true }));
  writeFileSync(join(root, "a.tar"), tar);
  const listing = execFileSync("tar", ["-tf", join(root, "a.tar")], { encoding: "utf8" }).split("\n").filter(Boolean);
  assert.ok(listing.includes(`top/${LONG_DIR}/${LONG_FILE}`), listing.join("\n"));
  mkdirSync(join(root, "out"));
  execFileSync("tar", ["-xpf", join(root, "a.tar"), "-C", join(root, "out")]);
  const out = join(root, "out", "top");
  assert.equal(readFileSync(join(out, LONG_DIR, LONG_FILE), "utf8"), "deep\n");
  assert.equal(statSync(join(out, LONG_DIR, LONG_FILE)).mtimeMs, MTIME * 1000);
  assert.equal(statSync(join(out, "exec.sh")).mode & 0o7777, 0o755);
  assert.equal(statSync(join(out, "secret")).mode & 0o7777, 0o600);
  assert.equal(statSync(join(out, "suid")).mode & 0o7777, 0o4755);
  assert.equal(readlinkSync(join(out, "longlink")), LONG_TARGET);
  assert.equal(statSync(join(out, "hard")).ino, statSync(join(out, "secret")).ino);
  assert.equal(statSync(join(out, LONG_DIR)).mtimeMs, (MTIME + 5) * 1000);
});

test("cp-tar: busybox tar (the guest's, with the guest's flags) extracts it with directory mtimes intact", async () => {
  const root = scratchDir("cp-tar-busybox");
  makeTree(root);
  const tar = await collect(writeTar(planHostTree(join(root, "tree"), "top", {}), { repeatDirs: true }));
  mkdirSync(join(root, "out"));
  execFileSync("/bin/busybox", ["tar", "-x", "-f", "-", "-C", join(root, "out")], { input: tar });
  const out = join(root, "out", "top");
  assert.equal(readFileSync(join(out, LONG_DIR, LONG_FILE), "utf8"), "deep\n");
  assert.equal(statSync(join(out, "exec.sh")).mode & 0o7777, 0o755);
  assert.equal(statSync(join(out, "secret")).mode & 0o7777, 0o600);
  assert.equal(statSync(join(out, "exec.sh")).mtimeMs, MTIME * 1000);
  assert.equal(statSync(join(out, LONG_DIR)).mtimeMs, (MTIME + 5) * 1000, "the repeated directory header restores the mtime its children changed");
  assert.equal(readlinkSync(join(out, "longlink")), LONG_TARGET);
});

test("cp-tar: PAX carries what ustar cannot: ids beyond 7 octal digits, pre-1970 mtimes, a 300-byte name", async () => {
  const name = `${"a/".repeat(140)}end`;
  const h = encodeHeader({ name, type: "file", mode: 0o640, uid: 3_000_000, gid: 4_000_000, size: 0, mtime: -5, linkpath: "" });
  const entries = [];
  for await (const { entry } of readTar(chunks(Buffer.concat([h, Buffer.alloc(1024)])), "t")) entries.push(entry);
  const [got] = entries;
  assert.equal(got?.path, name);
  assert.equal(got?.uid, 3_000_000);
  assert.equal(got?.gid, 4_000_000);
  assert.equal(got?.mtime, 0); // the reader clamps negative mtimes
  assert.equal(got?.mode, 0o640);
});

test("cp-tar: devices, FIFOs and sockets are refused while planning, naming the file", async () => {
  const root = scratchDir("cp-tar-special");
  mkdirSync(join(root, "d"));
  execFileSync("mkfifo", [join(root, "d", "pipe")]);
  assert.throws(() => planHostTree(join(root, "d"), "d"), (e: unknown) => isMicroagentError(e) && e.code === "CP_UNSUPPORTED_FILE_TYPE" && /pipe is a FIFO/.test(e.message));
  const sock = join(root, "s");
  mkdirSync(sock);
  const server = createServer();
  await new Promise<void>((r) => server.listen(join(sock, "sock"), r));
  try {
    assert.throws(() => planHostTree(sock, "s"), (e: unknown) => isMicroagentError(e) && e.code === "CP_UNSUPPORTED_FILE_TYPE" && /a socket/.test(e.message));
  } finally {
    server.close();
  }
  assert.throws(() => planHostTree(join(root, "missing"), "x"), (e: unknown) => isMicroagentError(e) && e.code === "CP_SOURCE_NOT_FOUND");
});

test("cp-extract: the writer's archive extracts with rename, modes, mtimes, links; setuid is dropped without --archive", async () => {
  const root = scratchDir("cp-extract-rt");
  makeTree(root);
  const tar = await collect(writeTar(planHostTree(join(root, "tree"), "tree", {})));
  mkdirSync(join(root, "dest"));
  const r = await extractTar(chunks(tar), { destDir: join(root, "dest"), rename: { from: "tree", to: "copy" }, preserveOwner: false, label: "t" });
  assert.equal(r.entries, 10);
  const out = join(root, "dest", "copy");
  assert.equal(readFileSync(join(out, LONG_DIR, LONG_FILE), "utf8"), "deep\n");
  assert.equal(statSync(join(out, "exec.sh")).mode & 0o7777, 0o755);
  assert.equal(statSync(join(out, "secret")).mode & 0o7777, 0o600);
  assert.equal(statSync(join(out, "suid")).mode & 0o7777, 0o755);
  assert.equal(statSync(join(out, "exec.sh")).mtimeMs, MTIME * 1000);
  assert.equal(statSync(join(out, LONG_DIR)).mtimeMs, (MTIME + 5) * 1000, "directory mtimes are applied after their children");
  assert.equal(readlinkSync(join(out, "link")), "exec.sh");
  assert.equal(statSync(join(out, "hard")).ino, statSync(join(out, "secret")).ino);
  assert.equal(existsSync(join(root, "dest", "tree")), false);
});

/** Extract `tar` into a fresh `dest` under root; returns the error. */
async function refused(tar: Buffer, root: string, rename?: { from: string; to: string }): Promise<{ code: string; message: string }> {
  try {
    await extractTar(chunks(tar), { destDir: join(root, "dest"), ...(rename ? { rename } : {}), preserveOwner: false, label: "ws:/x" });
  } catch (e) {
    assert.ok(isMicroagentError(e), String(e));
    return { code: e.code, message: e.message };
  }
  assert.fail("the archive was accepted");
}

test("cp-extract: hostile guest archives are refused and nothing lands outside the destination", async () => {
  const cases: Array<[string, Buffer, RegExp]> = [
    ["dotdot", rawTar([{ name: "x/../../escape", typeflag: "0", content: Buffer.from("pwned") }]), /contains '\.\.'/],
    ["absolute", rawTar([{ name: "/tmp/escape", typeflag: "0", content: Buffer.from("pwned") }]), /absolute/],
    [
      "symlink then through it",
      rawTar([
        { name: "x/", typeflag: "5", mode: 0o755 },
        { name: "x/out", typeflag: "2", linkname: "../../outside" },
        { name: "x/out/escape", typeflag: "0", content: Buffer.from("pwned") },
      ]),
      /through the symlink "x\/out"/,
    ],
    ["hard link out", rawTar([{ name: "x/h", typeflag: "1", linkname: "../outside/victim" }]), /contains '\.\.'/],
    ["hard link to a file it did not write", rawTar([{ name: "x/h", typeflag: "1", linkname: "x/preexisting" }]), /not a file this copy wrote/],
    ["outside the requested name", rawTar([{ name: "other/file", typeflag: "0", content: Buffer.from("pwned") }]), /outside the requested "x"/],
    ["device", rawTar([{ name: "x/null", typeflag: "3", devmajor: 1, devminor: 3 }]), /char device/],
  ];
  for (const [label, tar, why] of cases) {
    const root = scratchDir("cp-hostile");
    mkdirSync(join(root, "dest", "x"), { recursive: true });
    writeFileSync(join(root, "dest", "x", "preexisting"), "mine");
    mkdirSync(join(root, "outside"));
    writeFileSync(join(root, "outside", "victim"), "safe");
    const e = await refused(tar, root, { from: "x", to: "x" });
    assert.match(e.code, /^CP_(ARCHIVE_UNSAFE|UNSUPPORTED_FILE_TYPE)$/, `${label}: ${e.code} ${e.message}`);
    assert.match(e.message, why, label);
    assert.equal(readFileSync(join(root, "outside", "victim"), "utf8"), "safe", label);
    assert.equal(existsSync(join(root, "escape")), false, label);
    assert.equal(existsSync(join(root, "outside", "escape")), false, label);
    assert.equal(existsSync("/tmp/escape"), false, label);
  }
});

test("cp-extract: a symlink already in the host destination is replaced, never written through", async () => {
  const root = scratchDir("cp-hostlink");
  mkdirSync(join(root, "outside"));
  writeFileSync(join(root, "outside", "victim"), "safe");
  mkdirSync(join(root, "dest", "x"), { recursive: true });
  symlinkSync(join(root, "outside", "victim"), join(root, "dest", "x", "f"));
  symlinkSync(join(root, "outside"), join(root, "dest", "x", "d"));
  // A file over the symlink: the link is replaced by the file.
  await extractTar(chunks(rawTar([{ name: "x/f", typeflag: "0", content: Buffer.from("new") }])), { destDir: join(root, "dest"), preserveOwner: false, label: "t" });
  assert.equal(lstatSync(join(root, "dest", "x", "f")).isFile(), true);
  assert.equal(readFileSync(join(root, "dest", "x", "f"), "utf8"), "new");
  assert.equal(readFileSync(join(root, "outside", "victim"), "utf8"), "safe");
  // A file below the directory symlink: refused.
  const e = await refused(rawTar([{ name: "x/d/victim", typeflag: "0", content: Buffer.from("pwned") }]), root);
  assert.equal(e.code, "CP_ARCHIVE_UNSAFE");
  assert.equal(readFileSync(join(root, "outside", "victim"), "utf8"), "safe");
  // A directory over a file, and a file over a directory: conflicts, as in docker.
  assert.equal((await refused(rawTar([{ name: "x/f", typeflag: "5" }]), root)).code, "CP_TYPE_CONFLICT");
  mkdirSync(join(root, "dest", "x", "sub"));
  assert.equal((await refused(rawTar([{ name: "x/sub", typeflag: "0", content: Buffer.from("x") }]), root)).code, "CP_TYPE_CONFLICT");
  // A truncated stream is an invalid archive, not a short file.
  const whole = rawTar([{ name: "x/big", typeflag: "0", content: Buffer.alloc(4096, 1) }]);
  assert.equal((await refused(whole.subarray(0, 2048), root)).code, "CP_ARCHIVE_INVALID");
  assert.equal(readdirNames(join(root, "dest", "x")).some((n) => n.startsWith(".microagent-cp-")), false, "no temporary file is left behind");
});

function readdirNames(dir: string): string[] {
  return execFileSync("ls", ["-A", dir], { encoding: "utf8" }).split("\n").filter(Boolean);
}

test("cp: NAME:/path is a guest path; anything else (./a:b, /abs:x) is a host path", () => {
  assert.deepEqual(parseEndpoint("ws1:/root/x"), { kind: "guest", workspace: "ws1", path: "/root/x" });
  assert.deepEqual(parseEndpoint("./a:b"), { kind: "host", path: "./a:b" });
  assert.deepEqual(parseEndpoint("/abs:x"), { kind: "host", path: "/abs:x" });
  assert.deepEqual(parseEndpoint("Upper:/x"), { kind: "host", path: "Upper:/x" });
  assert.throws(() => parseEndpoint("ws1:relative"), (e: unknown) => isMicroagentError(e) && e.code === "CP_USAGE");
});

test("cp-tar: a file that shrinks or is swapped for a symlink after planning fails CP_SOURCE_CHANGED, never a short or followed read", async () => {
  const root = scratchDir("cp-tar-changed");
  mkdirSync(join(root, "d"));
  writeFileSync(join(root, "d", "f"), Buffer.alloc(200_000, 7));
  const plan = planHostTree(join(root, "d"), "d");
  writeFileSync(join(root, "d", "f"), Buffer.alloc(10, 7));
  await assert.rejects(collect(writeTar(plan)), (e: unknown) => isMicroagentError(e) && e.code === "CP_SOURCE_CHANGED" && /shrank/.test(e.message));
  const plan2 = planHostTree(join(root, "d"), "d");
  writeFileSync(join(root, "secret"), "host secret");
  execFileSync("rm", [join(root, "d", "f")]);
  symlinkSync(join(root, "secret"), join(root, "d", "f"));
  await assert.rejects(collect(writeTar(plan2)), (e: unknown) => isMicroagentError(e) && e.code === "CP_SOURCE_CHANGED" && /cannot be opened \(ELOOP\)/.test(e.message));
});

/**
 * Hostile layers through the real builder (staging, mke2fs, debugfs), from the reliability campaign:
 * D1 (an xattr name with a line break injected debugfs commands: `!cmd` ran on the host, `dump`
 * wrote host files), D14 (names starting with `-` were read by ea_set as options; a usage message on
 * stdout went unnoticed), D13 (whiteouts of "", ".", "..").
 */
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { rawTar, type RawEntry } from "../helpers/raw-tar.ts";
import { makeTar, type TarEntry } from "../helpers/oci-image.ts";
import { scratchDir } from "../helpers/scratch.ts";
import { buildExt4FromLayers, type LayerSource } from "../../src/rootfs/build.ts";
import { DebugfsStdoutCheck } from "../../src/rootfs/mkfs.ts";
import { resolveE2fsTools } from "../../src/rootfs/tools.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";

const execFileP = promisify(execFile);
let scratch: string;
let n = 0;

before(() => {
  scratch = scratchDir("rootfs-hostile");
});

function layer(tar: Buffer, label = `sha256:hostile${n}`): LayerSource {
  return {
    label,
    open: async function* () {
      yield tar;
    },
  };
}

async function build(tars: Buffer[]): Promise<{ out: string; error?: { code: string; message: string } }> {
  const id = ++n;
  const out = join(scratch, `img-${id}.ext4`);
  try {
    await buildExt4FromLayers({
      layers: tars.map((t, i) => layer(t, `sha256:layer${id}-${i}`)),
      out,
      seed: `sha256:${id}`,
      workDir: join(scratch, `work-${id}`),
      tools: resolveE2fsTools({}),
      toolTimeoutMs: 60_000,
    });
    return { out };
  } catch (e) {
    assert.ok(isMicroagentError(e), String(e));
    return { out, error: { code: e.code, message: e.message } };
  }
}

async function debugfs(image: string, cmd: string): Promise<string> {
  const { stdout } = await execFileP("debugfs", ["-R", cmd, image]);
  return stdout;
}

test("rootfs-hostile: an xattr name carrying debugfs commands is refused before anything runs; no host file appears (D1)", async () => {
  const canary = join(scratch, "canary-d1");
  mkdirSync(canary);
  const payloads: Array<[string, string]> = [
    [`SCHILY.xattr.user.x\n!touch ${canary}/shell #`, "v"],
    [`SCHILY.xattr.user.x\ndump /etc/passwd ${canary}/dumped\nea_set -f /dev/null / user.y`, "v"],
    [`LIBARCHIVE.xattr.user.x%0A!touch%20${encodeURIComponent(canary)}%2Fbsd`, "dg=="],
    [`SCHILY.xattr.user.x\r!touch ${canary}/cr`, "v"],
  ];
  for (const pax of payloads) {
    const entries: RawEntry[] = [
      { name: "etc/", typeflag: "5", mode: 0o755 },
      { name: "etc/passwd", typeflag: "0", content: Buffer.from("root:x:0:0::/root:/bin/sh\n") },
      { name: "x", typeflag: "0", content: Buffer.from("x\n"), pax: [pax] },
    ];
    const r = await build([rawTar(entries)]);
    assert.equal(r.error?.code, "ROOTFS_LAYER_UNSAFE", JSON.stringify(r));
    assert.match(r.error!.message, /entry "x": the extended attribute name/);
    assert.ok(!existsSync(r.out), "no image written");
  }
  assert.deepEqual(readdirSync(canary), [], "no injected command ran");
});

const DASH_AND_ODD = ["-f", "-fx", "-b", "-p", "-r", "<2>", "--", "-", "v\x0bt", "b\\s", "\x1b[2J", "sp ace", "\u2028", "#h", "!bang"];

test("rootfs-hostile: names starting with '-' (and other odd names) keep their xattrs; a '-' device node is made; the image passes e2fsck (D14)", async () => {
  const entries: TarEntry[] = [
    { path: "opt/", type: "dir" },
    ...DASH_AND_ODD.map(
      (name): TarEntry => ({ path: `opt/${name}`, type: "file", content: `${name}\n`, uid: 1000, pax: { "SCHILY.xattr.user.k": `v${name}` } }),
    ),
    { path: "opt/-node", type: "char", devmajor: 1, devminor: 3, mode: 0o620, uid: 7 },
    { path: "opt/-fifo", type: "fifo", mode: 0o600 },
  ];
  const r = await build([makeTar(entries)]);
  assert.equal(r.error, undefined, JSON.stringify(r.error));
  await execFileP("e2fsck", ["-fn", r.out]);
  for (const name of DASH_AND_ODD) {
    const list = await debugfs(r.out, `ea_list "/opt/${name}"`);
    assert.match(list, /user\.k \(\d+\) = /, `${JSON.stringify(name)}: ${list}`);
    const stat = await debugfs(r.out, `stat "/opt/${name}"`);
    assert.match(stat, /User:\s+1000/, name);
  }
  const node = await debugfs(r.out, 'stat "/opt/-node"');
  assert.match(node, /Type: character special/);
  assert.match(node, /Mode:\s+0620/);
  assert.match(node, /User:\s+7/);
  assert.match(node, /Device major\/minor number: 01:03/);
  assert.match(await debugfs(r.out, 'stat "/opt/-fifo"'), /Type: FIFO/);
  const ls = await debugfs(r.out, "ls -l /opt");
  assert.doesNotMatch(ls, /microagent-mknod/, "the temporary name is gone");
});

test("rootfs-hostile: debugfs's own usage message on stdout is caught by the stdout check (D14)", async () => {
  const dir = join(scratch, "usage");
  mkdirSync(join(dir, "tree"), { recursive: true });
  writeFileSync(join(dir, "tree", "-r"), "x");
  writeFileSync(join(dir, "v"), "v");
  const img = join(dir, "img");
  await execFileP("mke2fs", ["-q", "-F", "-t", "ext4", "-d", join(dir, "tree"), img, "8M"]);
  // The old script's form: a bare "-r" is an option to ea_set, which then prints its usage to stdout.
  const script = `ea_set -f "${join(dir, "v")}" "-r" "user.k"\n`;
  writeFileSync(join(dir, "s"), script);
  const { stdout, stderr } = await execFileP("debugfs", ["-w", "-f", join(dir, "s"), img]);
  assert.doesNotMatch(stderr.replace(/^debugfs \d.*\n/, ""), /\S/, "debugfs reports nothing on stderr");
  const check = new DebugfsStdoutCheck(script);
  check.feed(stdout);
  const unexpected = check.finish();
  assert.ok(unexpected.some((l) => /Usage/.test(l)), JSON.stringify({ stdout, unexpected }));
});

test("rootfs-hostile: whiteouts of '', '.' and '..' fail as unsafe and leave the work dir's parent alone (D13)", async () => {
  const lower = makeTar([{ path: "opt/", type: "dir" }, { path: "opt/keep", type: "file", content: "k\n" }]);
  for (const name of [".wh.", ".wh..", ".wh...", "opt/.wh..."]) {
    const before = readdirSync(scratch).filter((f) => !f.startsWith("img-")).sort();
    const r = await build([lower, makeTar([{ path: name, type: "file" }])]);
    assert.equal(r.error?.code, "ROOTFS_LAYER_UNSAFE", `${name}: ${JSON.stringify(r.error)}`);
    assert.match(r.error!.message, /names no file/);
    assert.deepEqual(readdirSync(scratch).filter((f) => !f.startsWith("img-")).sort(), before, "the failed build removed only its own work dir");
  }
});

/**
 * `image load` of hostile docker archives and the temp-dir sweep (reliability campaign D16): an
 * archive whose `layer.tar` is an absolute symlink failed with INTERNAL ENOTEMPTY (node-tar rejected
 * at its first warning while still writing, racing the cleanup) and left `images/tmp/load-*` behind,
 * which `image prune --delete` never removed (a non-recursive rm).
 */
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readdirSync, readFileSync, utimesSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { rawTar } from "../helpers/raw-tar.ts";
import { scratchDir } from "../helpers/scratch.ts";
import { runCli } from "../helpers/cli.ts";
import { loadImage } from "../../src/image/load.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";

let scratch: string;

before(() => {
  scratch = scratchDir("image-load-hostile");
});

function dockerArchiveWith(layerEntry: Parameters<typeof rawTar>[0][number]): string {
  const cfg = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
  const manifest = Buffer.from(JSON.stringify([{ Config: "cfg.json", RepoTags: ["localhost/da:1"], Layers: ["layer.tar"] }]));
  const path = join(scratch, `da-${readdirSync(scratch).length}.tar`);
  writeFileSync(
    path,
    rawTar([{ name: "cfg.json", typeflag: "0", content: cfg }, layerEntry, { name: "manifest.json", typeflag: "0", content: manifest }]),
  );
  return path;
}

test("image-load-hostile: a docker archive whose layer.tar is an absolute symlink is IMAGE_LOAD_INVALID every time, with no temp debris", async () => {
  const stateDir = join(scratch, "state-symlink");
  const archives = [
    dockerArchiveWith({ name: "layer.tar", typeflag: "2", linkname: "/etc/hostname" }),
    dockerArchiveWith({ name: "layer.tar", typeflag: "2", linkname: "../../../../etc/hostname" }),
    dockerArchiveWith({ name: "layer.tar", typeflag: "1", linkname: "/etc/hostname" }),
  ];
  for (let i = 0; i < 8; i++) {
    const archive = archives[i % archives.length]!;
    try {
      await loadImage(archive, { stateDir });
      assert.fail("the archive should have been refused");
    } catch (e) {
      assert.ok(isMicroagentError(e), String(e));
      assert.equal(e.code, "IMAGE_LOAD_INVALID", `attempt ${i}: ${e.code}: ${e.message}`);
      assert.match(e.message, new RegExp(archive.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")));
    }
    assert.deepEqual(readdirSync(join(stateDir, "images", "tmp")), [], `attempt ${i} left temp dirs`);
  }
  // the CLI says the same, exit 1
  const r = await runCli(["--json", "--state-dir", stateDir, "image", "load", archives[0]!]);
  assert.equal(r.code, 1, r.out + r.err);
  const body = JSON.parse(r.out || r.err) as { error: { code: string } };
  assert.equal(body.error.code, "IMAGE_LOAD_INVALID");
  assert.deepEqual(readdirSync(join(stateDir, "images", "tmp")), []);
});

test("image-load-hostile: image prune --delete sweeps dead loads' temp dirs recursively, never a live one's", async () => {
  const stateDir = join(scratch, "state-prune");
  const tmp = join(stateDir, "images", "tmp");
  mkdirSync(tmp, { recursive: true });
  const make = (name: string, old = false) => {
    mkdirSync(join(tmp, name, "blobs", "sha256"), { recursive: true });
    writeFileSync(join(tmp, name, "blobs", "sha256", "x"), "x");
    if (old) {
      const t = new Date(Date.now() - 2 * 3600_000);
      utimesSync(join(tmp, name), t, t);
    }
  };
  const deadPid = 2 ** 22 + 12345; // above pid_max's default ceiling: never a live process
  make(`load-${deadPid}-AbC123`);
  make(`load-${process.pid}-live01`); // a load in progress (this process is alive)
  make("load-OldOne", true); // an older version's name, two hours old
  make("load-NewOne"); // the same, fresh: maybe in flight
  writeFileSync(join(tmp, `${deadPid}-0123456789ab.partial`), "partial");
  const r = await runCli(["--json", "--state-dir", stateDir, "image", "prune", "--delete"]);
  assert.equal(r.code, 0, r.out + r.err);
  assert.deepEqual(readdirSync(tmp).sort(), ["load-NewOne", `load-${process.pid}-live01`].sort());
  assert.ok(existsSync(join(tmp, `load-${process.pid}-live01`, "blobs", "sha256", "x")), "the live load's files are intact");
});

test("image-load-hostile: archive names are resolved inside the archive: `../` entries, missing files and link loops are refused; docker's relative layer links load", async () => {
  const { createHash } = await import("node:crypto");
  const stateDir = join(scratch, "state-names");
  const layer = rawTar([{ name: "hello", typeflag: "0", content: Buffer.from("hi\n") }]);
  const diffId = `sha256:${createHash("sha256").update(layer).digest("hex")}`;
  const archiveOf = (entries: Parameters<typeof rawTar>[0], layers: string[]) => {
    const cfg = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: layers.map(() => diffId) } }));
    const manifest = Buffer.from(JSON.stringify([{ Config: "cfg.json", RepoTags: ["localhost/names:1"], Layers: layers }]));
    const path = join(scratch, `names-${readdirSync(scratch).length}.tar`);
    writeFileSync(path, rawTar([{ name: "cfg.json", typeflag: "0", content: cfg }, ...entries, { name: "manifest.json", typeflag: "0", content: manifest }]));
    return path;
  };
  const refused = async (archive: string, why: RegExp) => {
    try {
      await loadImage(archive, { stateDir });
      assert.fail("the archive should have been refused");
    } catch (e) {
      assert.ok(isMicroagentError(e), String(e));
      assert.equal(e.code, "IMAGE_LOAD_INVALID", e.message);
      assert.ok(e.message.includes(archive), e.message);
      assert.match(e.message, why);
    }
    assert.deepEqual(readdirSync(join(stateDir, "images", "tmp")), []);
  };
  await refused(archiveOf([{ name: "../evil", typeflag: "0", content: Buffer.from("x") }, { name: "a/layer.tar", typeflag: "0", content: layer }], ["a/layer.tar"]), /leads outside the archive/);
  await refused(archiveOf([{ name: "a/layer.tar", typeflag: "0", content: layer }], ["b/layer.tar"]), /does not contain/);
  await refused(archiveOf([{ name: "a", typeflag: "2", linkname: "b" }, { name: "b", typeflag: "2", linkname: "a" }], ["a/layer.tar"]), /loop/);
  await refused(archiveOf([{ name: "a/layer.tar", typeflag: "2", linkname: "../../x/layer.tar" }], ["a/layer.tar"]), /points outside the image/);
  await refused(archiveOf([{ name: "a/layer.tar", typeflag: "5" }], ["a/layer.tar"]), /as a regular file/);
  // A truncated archive: the tar reader's refusal, as a load refusal naming the archive.
  const whole = readFileSync(archiveOf([{ name: "a/layer.tar", typeflag: "0", content: layer }], ["a/layer.tar"]));
  const cut = join(scratch, "cut.tar");
  writeFileSync(cut, whole.subarray(0, 1024 + 700));
  await refused(cut, /not a readable tar archive: .*truncated/);
  assert.deepEqual(readdirSync(join(stateDir, "images", "blobs", "sha256")), [], "no blob of a refused archive was kept");

  // docker save links a repeated layer to its first copy, relative to the link's own directory.
  const ok = archiveOf(
    [
      { name: "a/", typeflag: "5" },
      { name: "a/layer.tar", typeflag: "0", content: layer },
      { name: "b/", typeflag: "5" },
      { name: "b/layer.tar", typeflag: "2", linkname: "../a/layer.tar" },
      { name: "./c/layer.tar", typeflag: "1", linkname: "a/layer.tar" },
    ],
    ["a/layer.tar", "b/layer.tar", "c/layer.tar"],
  );
  const img = await loadImage(ok, { stateDir });
  assert.equal(img.layers.length, 3);
  assert.deepEqual(img.diffIds, [diffId, diffId, diffId]);
  const blob = readFileSync(join(stateDir, "images", "blobs", "sha256", diffId.slice(7)));
  assert.ok(blob.equals(layer), "the stored layer is the archive's bytes");
  assert.deepEqual(readdirSync(join(stateDir, "images", "tmp")), []);
});

/**
 * `image load` of hostile docker archives and the temp-dir sweep (reliability campaign D16): an
 * archive whose `layer.tar` is an absolute symlink failed with INTERNAL ENOTEMPTY (node-tar rejected
 * at its first warning while still writing, racing the cleanup) and left `images/tmp/load-*` behind,
 * which `image prune --delete` never removed (a non-recursive rm).
 */
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readdirSync, utimesSync, writeFileSync, existsSync } from "node:fs";
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

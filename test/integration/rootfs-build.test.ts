/**
 * `microagent rootfs build` end to end: a real registry (docker-registry on loopback), an image built
 * with umoci and pushed with skopeo, then the CLI (in process, through `main`) pulls it, builds the ext4
 * and writes `--out`. Covers the mutable-tag refusal (seed wording), digest refs, `--allow-mutable`, the
 * cache hit on a second build, a missing mke2fs (seed wording and fix), a too-small `--size-mib`, and
 * the built image passing `e2fsck` with the image's files inside.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { buildBusyboxImage, pushImage, type OciImage, type PushedImage } from "../helpers/oci-image.ts";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { scratchDir } from "../helpers/scratch.ts";
import { runCli, type CliResult } from "../helpers/cli.ts";

const execFileP = promisify(execFile);

function cli(...argv: string[]): Promise<CliResult> {
  return runCli(argv);
}

const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");

let registry: TestRegistry;
let image: OciImage;
let pushed: PushedImage;
let scratch: string;
let stateDir: string;
let digestRef: string;

before(async () => {
  scratch = scratchDir("rootfs-build");
  stateDir = join(scratch, "state");
  registry = await startRegistry();
  image = await buildBusyboxImage({ files: { "/etc/motd": "built by the rootfs test\n", "/opt/tool": { content: "#!/bin/sh\n", mode: 0o4750 } } });
  pushed = await pushImage(image, registry, "rootfs/demo:1");
  digestRef = `${registry.host}/rootfs/demo@${pushed.digest}`;
});

after(async () => {
  await registry?.stop();
  await image?.cleanup();
});

test("rootfs-build: a tag is refused with the seed's message and the pin-by-digest fix", async () => {
  const out = join(scratch, "tag.ext4");
  const r = await cli("--json", "--state-dir", stateDir, "rootfs", "build", "--image", pushed.ref, "--out", out);
  assert.equal(r.code, 1, r.out + r.err);
  const err = JSON.parse(r.out || r.err) as { error?: { code: string; message: string; remediation: string } } & { code?: string; message?: string; remediation?: string };
  const e = err.error ?? (err as { code: string; message: string; remediation: string });
  assert.equal(e.code, "ROOTFS_REF_MUTABLE");
  assert.match(e.message, /image reference is mutable, pass --allow-mutable to override/);
  assert.match(e.remediation, /digest/);
  assert.ok(!existsSync(out), "nothing written");
});

test("rootfs-build: a digest reference pulls, builds, writes --out; the second build is a cache hit", async () => {
  const out = join(scratch, "digest.ext4");
  const r = await cli("--json", "--state-dir", stateDir, "rootfs", "build", "--image", digestRef, "--out", out);
  assert.equal(r.code, 0, r.out + r.err);
  const first = JSON.parse(r.out) as { out: string; sha256: string; sizeMib: number; cacheHit: boolean; manifestDigest: string; basePath: string };
  assert.equal(first.out, out);
  assert.equal(first.cacheHit, false);
  assert.equal(first.manifestDigest, pushed.digest);
  assert.equal(first.sha256, sha256(out));
  assert.equal(statSync(out).size, first.sizeMib * 1024 * 1024);
  assert.ok(first.sizeMib >= 64, `default sizing leaves headroom (${first.sizeMib} MiB)`);
  // --out keeps the image's holes (the headroom is unallocated), as the cached base does
  const outStat = statSync(out);
  assert.ok(outStat.blocks * 512 < outStat.size / 2, `--out allocates ${outStat.blocks * 512} of ${outStat.size} bytes`);
  await execFileP("e2fsck", ["-fn", out]);
  const { stdout: motd } = await execFileP("debugfs", ["-R", "cat /etc/motd", out]);
  assert.equal(motd, "built by the rootfs test\n");
  const { stdout: stat } = await execFileP("debugfs", ["-R", "stat /opt/tool", out]);
  assert.match(stat, /Mode:\s+04750/);

  const again = await cli("--json", "--state-dir", stateDir, "rootfs", "build", "--image", digestRef, "--out", join(scratch, "again.ext4"));
  assert.equal(again.code, 0, again.out + again.err);
  const second = JSON.parse(again.out) as { sha256: string; cacheHit: boolean; elapsedMs: number };
  assert.equal(second.cacheHit, true);
  assert.equal(second.sha256, first.sha256);
  assert.equal(sha256(join(scratch, "again.ext4")), first.sha256);

  // --allow-mutable accepts the tag; it resolves to the same digest, so it is the same cached base
  const tagged = await cli("--json", "--state-dir", stateDir, "rootfs", "build", "--image", pushed.ref, "--allow-mutable", "--out", join(scratch, "tag-ok.ext4"));
  assert.equal(tagged.code, 0, tagged.out + tagged.err);
  assert.equal((JSON.parse(tagged.out) as { sha256: string }).sha256, first.sha256);

  // text mode says what it did
  const text = await cli("--state-dir", stateDir, "rootfs", "build", "--image", digestRef, "--out", join(scratch, "text.ext4"));
  assert.equal(text.code, 0, text.err);
  assert.match(text.out, /wrote .*text\.ext4 \(\d+ MiB ext4, from the cache\)/);
});

test("rootfs-build: a missing mke2fs gives the seed's message and fix", async () => {
  const r = await cli("--json", "--state-dir", join(scratch, "state-nomkfs"), "rootfs", "build", "--image", digestRef, "--out", join(scratch, "x.ext4"), "--mke2fs", "/nonexistent/mke2fs");
  assert.equal(r.code, 1);
  const body = JSON.parse(r.out || r.err) as Record<string, unknown>;
  const e = (body.error ?? body) as { code: string; message: string; remediation: string; kind: string };
  assert.equal(e.code, "ROOTFS_MKE2FS_MISSING");
  assert.equal(e.kind, "unsupported");
  assert.match(e.message, /mke2fs not found/);
  assert.match(e.remediation, /e2fsprogs/);
  assert.match(e.remediation, /--mke2fs PATH/);
  assert.ok(!existsSync(join(scratch, "x.ext4")));
});

test("rootfs-build: --size-mib too small names the size needed; nothing is left behind", async () => {
  const sd = join(scratch, "state-small");
  const out = join(scratch, "small.ext4");
  const r = await cli("--json", "--state-dir", sd, "rootfs", "build", "--image", digestRef, "--out", out, "--size-mib", "3");
  assert.equal(r.code, 1, r.out);
  const body = JSON.parse(r.out || r.err) as Record<string, unknown>;
  const e = (body.error ?? body) as { code: string; message: string; remediation: string };
  assert.equal(e.code, "ROOTFS_TOO_SMALL");
  const needed = /needs at least (\d+) MiB/.exec(e.message);
  assert.ok(needed, e.message);
  assert.match(e.remediation, new RegExp(`--size-mib ${needed[1]}`));
  assert.ok(!existsSync(out));
  // and the size it names works
  const ok = await cli("--json", "--state-dir", sd, "rootfs", "build", "--image", digestRef, "--out", out, "--size-mib", needed[1]!);
  assert.equal(ok.code, 0, ok.out + ok.err);
  assert.equal(statSync(out).size, Number(needed[1]) * 1024 * 1024);
  await execFileP("e2fsck", ["-fn", out]);
});

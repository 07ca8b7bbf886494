import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { mkdir, mkdtemp, rm, truncate, utimes, writeFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { createWorkspace, type CreateProviders } from "../../src/workspace/create.ts";
import { deleteWorkspace } from "../../src/workspace/delete.ts";
import { listWorkspaces, psWorkspaces } from "../../src/workspace/list.ts";
import { overlayInfo } from "../../src/workspace/overlay.ts";
import { workspacePaths, workspacesRoot } from "../../src/workspace/paths.ts";
import { readEventsFile } from "../../src/workspace/events.ts";
import { workspaceStatus } from "../../src/workspace/status.ts";

const sha = (s: string) => createHash("sha256").update(s).digest("hex");

/** Small stand-ins for the image, kernel and rootfs areas: real files, real qemu-img overlay. */
async function fakeProviders(dir: string, fail?: "image" | "rootfs"): Promise<CreateProviders> {
  await writeFile(join(dir, "vmlinuz"), "kernel");
  await writeFile(join(dir, "initramfs"), "initramfs");
  const base = join(dir, "base.ext4");
  await writeFile(base, "");
  await truncate(base, 8 * 1024 * 1024);
  const digest = `sha256:${"b".repeat(64)}`;
  return {
    async resolveImage(ref) {
      if (fail === "image") throw new Error("registry said 404");
      return { image: { ref }, info: { ref, resolvedRef: `${ref.split(":")[0]}@${digest}`, manifestDigest: digest, config: { Cmd: ["/bin/true"], Env: ["A=1"] } } };
    },
    async ensureKernel() {
      return { kernel: { path: join(dir, "vmlinuz"), sha256: sha("kernel") }, initramfs: { path: join(dir, "initramfs"), sha256: sha("initramfs") } };
    },
    async ensureBaseRootfs() {
      if (fail === "rootfs") throw new Error("mke2fs exploded");
      return { path: base, sha256: createHash("sha256").update(Buffer.alloc(8 * 1024 * 1024)).digest("hex"), sizeMib: 8, cacheHit: true };
    },
  };
}

test("workspace: create writes manifest, boot config, overlay and the first event; status verifies; list shows it", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-create-"));
  try {
    const providers = await fakeProviders(dir);
    const r = await createWorkspace({ name: "one", image: "reg/img:1", stateDir: join(dir, "state"), providers, profile: "tiny" });
    assert.equal(r.state.state, "prepared");
    assert.equal(r.manifest.image.digest, `sha256:${"b".repeat(64)}`);
    assert.deepEqual(r.manifest.boot.argv, [], "a persistent workspace boots idle unless asked for the image's command");
    const withCmd = await createWorkspace({ name: "two", image: "reg/img:1", stateDir: join(dir, "state"), providers, profile: "tiny", imageCommand: true });
    assert.deepEqual(withCmd.manifest.boot.argv, ["/bin/true"]);
    await deleteWorkspace("two", { stateDir: join(dir, "state") });
    const info = await overlayInfo(r.paths.disk);
    assert.equal(info.format, "qcow2");
    assert.equal(info["backing-filename"], join(dir, "base.ext4"));
    assert.equal(info["virtual-size"], 512 * 1024 * 1024);
    assert.deepEqual((await readEventsFile(r.paths.events)).map((e) => e.state), ["prepared"]);
    const s = await workspaceStatus("one", { stateDir: join(dir, "state") });
    assert.equal(s.verification?.ok, true, JSON.stringify(s.verification?.divergence));
    assert.deepEqual((await listWorkspaces({ stateDir: join(dir, "state") })).map((w) => [w.name, w.state, w.profile]), [["one", "prepared", "tiny"]]);
    assert.deepEqual(await psWorkspaces({ stateDir: join(dir, "state") }), []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: a failing step leaves nothing behind", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-create-"));
  try {
    for (const fail of ["image", "rootfs"] as const) {
      const providers = await fakeProviders(dir, fail);
      await assert.rejects(createWorkspace({ name: "broken", image: "reg/img:1", stateDir: join(dir, "state"), providers }), fail === "image" ? /404/ : /mke2fs/);
      assert.equal(existsSync(workspacePaths(join(dir, "state"), "broken").dir), false, fail);
    }
    assert.deepEqual(readdirSync(workspacesRoot(join(dir, "state"))), []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: concurrent creates of one name: exactly one wins, the other is WORKSPACE_EXISTS", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-create-"));
  try {
    const providers = await fakeProviders(dir);
    const stateDir = join(dir, "state");
    const results = await Promise.allSettled([1, 2, 3].map(() => createWorkspace({ name: "race", image: "reg/img:1", stateDir, providers })));
    const ok = results.filter((r) => r.status === "fulfilled");
    const bad = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    assert.equal(ok.length, 1);
    for (const b of bad) assert.ok(isMicroagentError(b.reason) && b.reason.code === "WORKSPACE_EXISTS", String(b.reason));
    assert.equal((await readEventsFile(workspacePaths(stateDir, "race").events)).length, 1);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: the debris of a crashed create (no manifest, no live lock) is moved aside", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-create-"));
  try {
    const stateDir = join(dir, "state");
    const paths = workspacePaths(stateDir, "again");
    await mkdir(paths.dir, { recursive: true });
    await writeFile(paths.lock, JSON.stringify({ pid: 999999, purpose: "create", acquiredAt: "x" }));
    await writeFile(paths.disk, "half");
    const providers = await fakeProviders(dir);
    const r = await createWorkspace({ name: "again", image: "reg/img:1", stateDir, providers });
    assert.equal(r.state.state, "prepared");
    // No lock at all: a fresh directory may be a create that just began (refused); an old one is debris.
    const young = workspacePaths(stateDir, "young");
    await mkdir(young.dir, { recursive: true });
    await assert.rejects(createWorkspace({ name: "young", image: "reg/img:1", stateDir, providers }), /being created right now/);
    const old = new Date(Date.now() - 60_000);
    await utimes(young.dir, old, old);
    assert.equal((await createWorkspace({ name: "young", image: "reg/img:1", stateDir, providers })).state.state, "prepared");
    await deleteWorkspace("young", { stateDir });
    const del = await deleteWorkspace("again", { stateDir });
    assert.deepEqual(del, { name: "again", deleted: true, killed: false, previousState: "prepared" });
    assert.deepEqual(await deleteWorkspace("again", { stateDir }), { name: "again", deleted: false, killed: false });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

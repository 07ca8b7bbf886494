import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, statSync } from "node:fs";
import { mkdir, mkdtemp, rm, truncate, utimes, writeFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { createWorkspace, type CreateProviders } from "../../src/workspace/create.ts";
import type { DiskCapability, DiskRequest } from "../../src/workspace/providers.ts";
import { deleteWorkspace } from "../../src/workspace/delete.ts";
import { listWorkspaces, psWorkspaces } from "../../src/workspace/list.ts";
import { qemuImgInfo as overlayInfo } from "../../src/backend/qemu-img.ts";
import { workspacePaths, workspacesRoot } from "../../src/workspace/paths.ts";
import { readEventsFile } from "../../src/workspace/events.ts";
import { workspaceStatus } from "../../src/workspace/status.ts";
import { MAX_BOOT_CONFIG_BYTES, MAX_BOOT_FILES_BYTES } from "../../src/workspace/boot-spec.ts";
import { assertBootArtifactsVerified } from "../../src/workspace/verify.ts";
import { createText } from "../../src/cli/commands/create.ts";
import { createJson } from "../../src/api/results.ts";

const sha = (s: string) => createHash("sha256").update(s).digest("hex");

/** Small stand-ins for the image, kernel and rootfs areas: real files, real qemu-img overlay. */
async function fakeProviders(dir: string, fail?: "image" | "rootfs", baseMib = 8): Promise<CreateProviders> {
  await writeFile(join(dir, "vmlinuz"), "kernel");
  await writeFile(join(dir, "initramfs"), "initramfs");
  const base = join(dir, "base.ext4");
  await writeFile(base, "");
  await truncate(base, baseMib * 1024 * 1024);
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
      return { path: base, sha256: createHash("sha256").update(Buffer.alloc(baseMib * 1024 * 1024)).digest("hex"), sizeMib: baseMib, cacheHit: true };
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

test("workspace: a disk size below the image's root filesystem is raised to it and reported as raised", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-create-"));
  try {
    const stateDir = join(dir, "state");
    const providers = await fakeProviders(dir, undefined, 70);
    const r = await createWorkspace({ name: "small", image: "reg/img:1", stateDir, providers, sizeMib: 64 });
    assert.equal(r.manifest.resources.sizeMib, 70, "the real size, not the one asked for");
    assert.equal(r.manifest.resources.requestedSizeMib, 64);
    assert.equal((await overlayInfo(r.paths.disk))["virtual-size"], 70 * 1024 * 1024);
    assert.match(createText(r), /70 MiB disk \(raised from the 64 MiB asked for: the image's root filesystem needs 70 MiB\)/);
    assert.equal(createJson(r).resources.requestedSizeMib, 64);
    const s = await workspaceStatus("small", { stateDir });
    assert.equal(s.workspace.resources.sizeMib, 70);
    // Asking for more than the base: exactly that, and nothing says "raised".
    const big = await createWorkspace({ name: "big", image: "reg/img:1", stateDir, providers, sizeMib: 2048 });
    assert.equal(big.manifest.resources.sizeMib, 2048);
    assert.equal(big.manifest.resources.requestedSizeMib, undefined);
    assert.equal((await overlayInfo(big.paths.disk))["virtual-size"], 2048 * 1024 * 1024);
    assert.doesNotMatch(createText(big), /raised/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: the boot config's total size is bounded at create: big env, setup or files are SPEC_INVALID, nothing left behind", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-create-"));
  try {
    const stateDir = join(dir, "state");
    const providers = await fakeProviders(dir);
    // Every value is within its own limit (128 KiB); together they are 4.8 MB.
    const env = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`K${i}`, "e".repeat(120_000)]));
    const setup = Array.from({ length: 40 }, (_, i) => `echo ${i} ${"s".repeat(120_000)}`);
    for (const [what, opts] of [
      ["env", { env }],
      ["setup", { setup }],
    ] as const) {
      await assert.rejects(createWorkspace({ name: "big", image: "reg/img:1", stateDir, providers, ...opts }), (e: unknown) => {
        assert.ok(isMicroagentError(e));
        assert.equal(e.code, "SPEC_INVALID", e.message);
        assert.match(e.message, new RegExp(`the boot config is \\d+ bytes, over the limit of ${MAX_BOOT_CONFIG_BYTES} bytes \\(${what} \\d+`));
        return true;
      });
    }
    // files: a 4,000,000-byte file (under the old 4 MiB raw cap, 5.3 MB once base64'd) is refused at create.
    await writeFile(join(dir, "f4m"), Buffer.alloc(4_000_000, 7));
    await writeFile(join(dir, "spec.yaml"), "files:\n  - source: f4m\n    target: /root/f4m\n");
    await assert.rejects(createWorkspace({ name: "big", image: "reg/img:1", stateDir, providers, specFile: join(dir, "spec.yaml") }), (e: unknown) => {
      assert.ok(isMicroagentError(e));
      assert.equal(e.code, "SPEC_INVALID", e.message);
      assert.match(e.message, new RegExp(`files: together they are 4000000 bytes .* over the ${MAX_BOOT_FILES_BYTES}-byte limit`));
      return true;
    });
    assert.deepEqual(readdirSync(workspacesRoot(stateDir)), []);
    // What fits is accepted, and the written boot config is within the bound.
    await writeFile(join(dir, "f1m"), Buffer.alloc(MAX_BOOT_FILES_BYTES - 64 * 1024, 7));
    await writeFile(join(dir, "ok.yaml"), "files:\n  - source: f1m\n    target: /root/f1m\n");
    const ok = await createWorkspace({ name: "fits", image: "reg/img:1", stateDir, providers, specFile: join(dir, "ok.yaml") });
    assert.ok(statSync(ok.paths.bootConfig).size <= MAX_BOOT_CONFIG_BYTES);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: start re-checks the boot config size of an existing workspace (not overridable by --force)", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-create-"));
  try {
    const stateDir = join(dir, "state");
    const r = await createWorkspace({ name: "old", image: "reg/img:1", stateDir, providers: await fakeProviders(dir) });
    // As an older microagent (no total limit) would have written it.
    await writeFile(r.paths.bootConfig, JSON.stringify({ env: Array.from({ length: 40 }, (_, i) => `K${i}=${"e".repeat(120_000)}`) }));
    for (const force of [false, true]) {
      await assert.rejects(assertBootArtifactsVerified("old", r.manifest, "prepared", { force }), (e: unknown) => {
        assert.ok(isMicroagentError(e));
        assert.equal(e.code, "SPEC_INVALID");
        assert.match(e.message, new RegExp(`the boot config is 48\\d{5} bytes, over the limit of ${MAX_BOOT_CONFIG_BYTES} bytes`));
        return true;
      });
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: qemu-img running out of space is DISK_FULL, not WORKSPACE_CREATE_FAILED", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-create-"));
  const saved = process.env.MICROAGENT_QEMU_IMG;
  try {
    const stateDir = join(dir, "state");
    // What qemu-img prints when the state dir's filesystem is full (seen on a 300 MiB tmpfs).
    const fake = join(dir, "qemu-img");
    await writeFile(fake, `#!/bin/sh\necho "qemu-img: $9: Could not write qcow2 header: No space left on device" >&2\nexit 1\n`, { mode: 0o755 });
    process.env.MICROAGENT_QEMU_IMG = fake;
    await assert.rejects(createWorkspace({ name: "full", image: "reg/img:1", stateDir, providers: await fakeProviders(dir) }), (e: unknown) => {
      assert.ok(isMicroagentError(e));
      assert.equal(e.code, "DISK_FULL", e.message);
      assert.equal(e.kind, "resource_exhausted");
      assert.match(e.message, /No space left on device/);
      return true;
    });
    assert.deepEqual(readdirSync(workspacesRoot(stateDir)), []);
  } finally {
    if (saved === undefined) delete process.env.MICROAGENT_QEMU_IMG;
    else process.env.MICROAGENT_QEMU_IMG = saved;
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: the disk comes from the backend's disk capability, and the manifest records the format it chose", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-create-"));
  try {
    const stateDir = join(dir, "state");
    const asked: DiskRequest[] = [];
    // A raw-disk backend's capability (what Firecracker will need): a sparse file of the asked size.
    const rawDisk: DiskCapability = {
      formats: ["raw"],
      async createDisk(req) {
        asked.push(req);
        await writeFile(req.path, "");
        await truncate(req.path, req.sizeMib * 1024 * 1024);
        return { path: req.path, format: "raw" };
      },
    };
    const providers = { ...(await fakeProviders(dir)), disk: rawDisk };
    const r = await createWorkspace({ name: "raw", image: "reg/img:1", stateDir, providers, sizeMib: 100 });
    assert.deepEqual(asked, [{ base: join(dir, "base.ext4"), baseFormat: "raw", path: r.paths.disk, sizeMib: 100 }]);
    assert.deepEqual(r.manifest.artifacts.disk, { path: r.paths.disk, format: "raw" });
    assert.equal(statSync(r.paths.disk).size, 100 * 1024 * 1024);
    const s = await workspaceStatus("raw", { stateDir });
    assert.equal(s.verification?.ok, true, JSON.stringify(s.verification?.divergence));
    // Without a disk provider, linux-qemu's own capability makes a qcow2 overlay (first test); a
    // backend this build does not implement is refused before anything is written.
    await assert.rejects(createWorkspace({ name: "fc", image: "reg/img:1", stateDir, providers: await fakeProviders(dir), backend: "linux-kvm" }), (e: unknown) => {
      assert.ok(isMicroagentError(e));
      assert.equal(e.code, "WORKSPACE_UNSUPPORTED");
      assert.match(e.message, /backend linux-kvm cannot run workspaces yet/);
      return true;
    });
    assert.deepEqual(readdirSync(workspacesRoot(stateDir)), ["raw"]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: create sweeps .trash-* debris that crashed deletes left", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-create-"));
  try {
    const stateDir = join(dir, "state");
    const trash = join(workspacesRoot(stateDir), ".trash-gone-0badf00d");
    await mkdir(join(trash, "sub"), { recursive: true });
    await writeFile(join(trash, "sub", "disk.qcow2"), "x");
    await createWorkspace({ name: "fresh", image: "reg/img:1", stateDir, providers: await fakeProviders(dir) });
    assert.deepEqual(readdirSync(workspacesRoot(stateDir)), ["fresh"]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

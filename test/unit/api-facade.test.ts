/**
 * The public facade without a VM: requests are validated at the boundary (INVALID_ARGUMENT naming
 * the field), a workspace is addressed by name, and calls that need a running VM say so by name
 * (NOT_RUNNING) rather than failing on a socket. The VM-backed half (exec, files, run) is in
 * test/integration/workspace-lifecycle.test.ts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Workspace, run, WorkspaceRequestSchema } from "../../src/index.ts";
import type { CreateProviders } from "../../src/workspace/create.ts";

const sha = (s: string) => createHash("sha256").update(s).digest("hex");

async function providersIn(dir: string): Promise<CreateProviders> {
  await writeFile(join(dir, "vmlinuz"), "kernel");
  await writeFile(join(dir, "initramfs"), "initramfs");
  const base = join(dir, "base.ext4");
  await writeFile(base, "");
  await truncate(base, 8 * 1024 * 1024);
  const digest = `sha256:${"d".repeat(64)}`;
  return {
    async resolveImage(ref) {
      return { image: { ref }, info: { ref, resolvedRef: `${ref.split(":")[0]}@${digest}`, manifestDigest: digest, config: { Cmd: ["/bin/true"] } } };
    },
    async ensureKernel() {
      return { kernel: { path: join(dir, "vmlinuz"), sha256: sha("kernel") }, initramfs: { path: join(dir, "initramfs"), sha256: sha("initramfs") } };
    },
    async ensureBaseRootfs() {
      return { path: base, sha256: createHash("sha256").update(Buffer.alloc(8 * 1024 * 1024)).digest("hex"), sizeMib: 8, cacheHit: true };
    },
  };
}

const code = (c: string, re?: RegExp) => (e: Error & { code?: string }) => e.code === c && (!re || re.test(e.message));

test("api-facade: create/get/list/status/delete by name; NOT_RUNNING for calls that need a VM", async () => {
  const dir = await mkdtemp(join(tmpdir(), "api-facade-"));
  const host = { stateDir: join(dir, "state"), providers: await providersIn(dir) };
  try {
    const ws = await Workspace.create("fa", { image: "reg/img:1", env: { A: "1" }, resources: { profile: "tiny", cpus: 2 } }, host);
    assert.equal(ws.created.resources.cpus, 2);
    assert.deepEqual((await Workspace.list(host)).map((w) => [w.name, w.state]), [["fa", "prepared"]]);
    const got = await Workspace.get("fa", host);
    const s = await got.status();
    assert.equal(s.event.state, "prepared");
    assert.equal(s.readiness.ready, false);
    assert.match(s.readiness.reason ?? "", /prepared/);
    await assert.rejects(got.exec(["true"]).result, code("NOT_RUNNING", /fa is prepared/));
    await assert.rejects(got.files.read("/etc/hostname"), code("NOT_RUNNING"));
    await assert.rejects(got.ping(), code("NOT_RUNNING"));
    assert.deepEqual(await got.halt(), { workspace: "fa", state: "prepared", previousState: "prepared", changed: false });
    assert.deepEqual(await got.delete(), { name: "fa", deleted: true, killed: false, previousState: "prepared" });
    await assert.rejects(Workspace.get("fa", host), code("WORKSPACE_NOT_FOUND"));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("api-facade: requests are validated at the boundary and host-only fields are refused", async () => {
  const host = { stateDir: join(tmpdir(), "api-facade-never-created") };
  await assert.rejects(Workspace.create("x", { image: "a", resources: { cpus: 0 } }, host), code("INVALID_ARGUMENT", /resources\.cpus/));
  await assert.rejects(Workspace.create("x", { image: "a", env: { "BAD-KEY": "v" } }, host), code("INVALID_ARGUMENT", /env/));
  // A remote caller cannot smuggle host options in through the request.
  for (const hostField of ["stateDir", "mke2fs", "supervisorPath", "specFile", "providers"]) {
    assert.equal(WorkspaceRequestSchema.safeParse({ image: "a", [hostField]: "/x" }).success, false, hostField);
    await assert.rejects(Workspace.create("x", { image: "a", [hostField]: "/x" } as never, host), code("INVALID_ARGUMENT"), hostField);
  }
  await assert.rejects(run({ image: "a", timeoutMs: 0 }, host), code("INVALID_ARGUMENT", /timeoutMs/));
  await assert.rejects(run({ image: "a", stateDir: "/x" } as never, host), code("INVALID_ARGUMENT"));
});

test("api-facade: networkOptions take the CLI flags' spellings and land in the manifest; a bad one is INVALID_ARGUMENT naming it", async () => {
  const dir = await mkdtemp(join(tmpdir(), "api-facade-net-"));
  const host = { stateDir: join(dir, "state"), providers: await providersIn(dir) };
  try {
    const ws = await Workspace.create(
      "netopts",
      {
        image: "reg/img:1",
        networkOptions: { publish: ["8080:80"], addHosts: ["db.test:10.0.0.5"], dns: "127.0.0.1:5353", egress: "strict", egressAllow: ["db.test", ".example.test"], egressPassthrough: ["pinned.example.test"] },
      },
      host,
    );
    const { readManifest } = await import("../../src/workspace/manifest.ts");
    const { workspacePaths } = await import("../../src/workspace/paths.ts");
    const m = await readManifest(workspacePaths(host.stateDir, ws.name));
    assert.equal(m.network.mode, "user");
    assert.deepEqual(m.network.forwards, [{ hostIp: "127.0.0.1", hostPort: 8080, guestPort: 80, proto: "tcp" }]);
    assert.deepEqual(m.network.addHosts, [{ name: "db.test", ip: "10.0.0.5" }]);
    assert.deepEqual(m.network.dns, { ip: "127.0.0.1", port: 5353 });
    assert.deepEqual(m.network.egressAllow, ["db.test", ".example.test"]);
    assert.equal(m.network.egress?.mode, "strict");
    assert.deepEqual(m.network.egress?.passthrough, ["pinned.example.test"]);
    await assert.rejects(Workspace.create("bad", { image: "reg/img:1", networkOptions: { publish: ["nope"] } }, host), code("INVALID_ARGUMENT", /--publish 'nope'/));
    await assert.rejects(Workspace.create("bad", { image: "reg/img:1", networkOptions: { upstreamCa: ["/etc/x.pem"] } as never }, host), code("INVALID_ARGUMENT", /upstreamCa/));
    await assert.rejects(Workspace.create("bad", { image: "reg/img:1", network: "isolated", networkOptions: { addHosts: ["a.test:10.0.0.1"] } }, host), code("INVALID_ARGUMENT", /--add-host/));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

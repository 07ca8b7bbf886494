import { test } from "node:test";
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { BACKENDS } from "../../src/contract/backend.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { BackendRegistry, getBackend, listBackends, lookupBackend } from "../../src/backend/registry.ts";
import { capabilitiesOf, capabilityTable } from "../../src/backend/capabilities.ts";
import { linuxQemuBackend } from "../../src/backend/linux-qemu.ts";
import type { Backend, RunningVm } from "../../src/backend/types.ts";

/** A backend with nothing but lifecycle: what a new VMM starts as. */
const bare = (name: Backend["name"]): Backend => ({ name, lifecycle: { launch: async () => ({}) as RunningVm } });

/** A Firecracker-shaped backend: vsock channel, raw disks, snapshots, no pause. */
const fcLike: Backend = {
  name: "linux-kvm",
  lifecycle: { launch: async () => ({}) as RunningVm },
  channel: { transport: "vsock", openChannel: async () => new PassThrough() },
  disk: { formats: ["raw"], createDisk: async (r) => ({ path: r.path, format: "raw" }) },
  snapshot: { freezeDisk: async () => ({ path: "", format: "raw", virtualSizeBytes: 1 }), saveState: async () => ({ bytes: 0, ms: 0 }), layersOf: async (p) => [p], overlayOn: async (_l, path) => ({ path, format: "raw" }), restore: async () => ({ vm: {} as RunningVm, loadMs: 0 }) },
};

test("backend registry: register, lookup, list in order; the default and unknown names", () => {
  const r = new BackendRegistry([linuxQemuBackend]);
  assert.equal(r.lookup("linux-qemu"), linuxQemuBackend);
  assert.equal(r.lookup("apple-vf"), undefined);
  assert.equal(r.get(undefined), linuxQemuBackend, "no --backend means linux-qemu");
  r.register(fcLike);
  assert.deepEqual(r.list().map((b) => b.name), ["linux-qemu", "linux-kvm"]);
  assert.equal(r.get("linux-kvm"), fcLike);
  assert.throws(() => r.register(bare("linux-kvm")), (e: unknown) => isMicroagentError(e) && e.code === "BACKEND_ALREADY_REGISTERED" && e.kind === "conflict");
});

test("backend registry: an unimplemented backend is BACKEND_UNSUPPORTED naming the implemented ones", () => {
  const r = new BackendRegistry([linuxQemuBackend, fcLike]);
  assert.throws(
    () => r.get("apple-vf"),
    (e: unknown) => {
      assert.ok(isMicroagentError(e));
      assert.equal(e.code, "BACKEND_UNSUPPORTED");
      assert.equal(e.kind, "unsupported");
      assert.match(e.message, /backend apple-vf is not implemented yet; this build runs workspaces with linux-qemu, linux-kvm/);
      assert.match(e.remediation, /`--backend linux-qemu` or `--backend linux-kvm`/);
      assert.deepEqual(e.details, { backend: "apple-vf", implemented: ["linux-qemu", "linux-kvm"] });
      return true;
    },
  );
});

test("backend registry: the process-wide registry holds linux-qemu only, and getBackend goes through it", () => {
  assert.deepEqual(listBackends().map((b) => b.name), ["linux-qemu"]);
  assert.equal(lookupBackend("linux-qemu"), linuxQemuBackend);
  assert.equal(getBackend("linux-qemu"), linuxQemuBackend);
  for (const name of ["linux-kvm", "apple-vf", "windows-hyperv"] as const) {
    assert.throws(() => getBackend(name), (e: unknown) => isMicroagentError(e) && e.code === "BACKEND_UNSUPPORTED" && JSON.stringify(e.details) === JSON.stringify({ backend: name, implemented: ["linux-qemu"] }));
  }
});

test("backend capabilities: derived from which capability objects exist, nothing else", () => {
  assert.deepEqual(capabilitiesOf(bare("apple-vf")), {
    backend: "apple-vf",
    implemented: true,
    lifecycle: true,
    channel: null,
    exec: false,
    console: false,
    diskFormats: [],
    networkAttachments: [],
    isolated: true,
    pause: false,
    snapshot: false,
  });
  const fc = capabilitiesOf(fcLike);
  assert.equal(fc.channel, "vsock");
  assert.equal(fc.exec, true);
  assert.deepEqual(fc.diskFormats, ["raw"]);
  assert.equal(fc.pause, false);
  assert.equal(fc.snapshot, true);
  // Adding an object is all it takes to report a capability.
  const paused = capabilitiesOf({ ...fcLike, pause: { pause: async () => {}, resume: async () => {} } });
  assert.equal(paused.pause, true);
});

test("backend capabilities: linux-qemu reports what its objects implement", () => {
  assert.deepEqual(capabilitiesOf(linuxQemuBackend), {
    backend: "linux-qemu",
    implemented: true,
    lifecycle: true,
    channel: "virtio-serial",
    exec: true,
    console: true,
    diskFormats: ["qcow2", "raw"],
    networkAttachments: ["stream"],
    isolated: true,
    pause: true,
    snapshot: true,
  });
});

test("backend capabilities: the table has every contract backend in order; unregistered ones are not implemented", () => {
  const t = capabilityTable([fcLike, linuxQemuBackend]);
  assert.deepEqual(t.map((r) => [r.backend, r.implemented]), BACKENDS.map((n) => [n, n === "linux-qemu" || n === "linux-kvm"]));
  assert.deepEqual(t.find((r) => r.backend === "apple-vf"), { backend: "apple-vf", implemented: false });
});

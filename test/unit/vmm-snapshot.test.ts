/**
 * The pure parts of the snapshot primitives: the restore launch spec, `-incoming defer`, the shell
 * quoting of `exec:` URIs (QEMU hands them to /bin/sh, so a path must reach it as one word), and the
 * refusals that need no VM. The QEMU behaviour itself is proven in test/integration/vmm-snapshot.test.ts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildQemuArgs, type QemuSpec } from "../../src/vmm/qemu/args.ts";
import { createOverlayImage, hostFilename, restoreLaunchSpec, restoreVmState, shellQuote } from "../../src/vmm/qemu/snapshot.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";
import type { QmpClient } from "../../src/vmm/qemu/qmp.ts";

const spec: QemuSpec = {
  accel: "tcg",
  memoryMib: 512,
  cpus: 1,
  kernelPath: "/k/vmlinuz",
  initramfsPath: "/k/initramfs.cpio",
  rootDisk: { path: "/ws/a/disk.qcow2", format: "qcow2", id: "disk0" },
  channel: { socketPath: "/run/a/ch.sock" },
  serial: { kind: "file", path: "/ws/a/serial.log" },
  qmpSocketPath: "/run/a/qmp.sock",
};

test("vmm snapshot: the restore spec keeps the machine, swaps paths and waits for incoming state", () => {
  const r = restoreLaunchSpec(spec, {
    rootDisk: { ...spec.rootDisk!, path: "/ws/b/disk.qcow2" },
    channel: { socketPath: "/run/b/ch.sock" },
    serial: { kind: "file", path: "/ws/b/serial.log" },
    qmpSocketPath: "/run/b/qmp.sock",
  });
  const a = buildQemuArgs(spec);
  const b = buildQemuArgs(r);
  assert.deepEqual(b.slice(-2), ["-incoming", "defer"]);
  assert.ok(!a.includes("-incoming"));
  // Everything but the paths and the trailing -incoming is the same argv.
  const normalize = (args: string[]) => args.map((x) => x.replaceAll("/a/", "/X/").replaceAll("/b/", "/X/"));
  assert.deepEqual(normalize(b.slice(0, -2)), normalize(a));
});

test("vmm snapshot: shellQuote gives /bin/sh one word back, whatever the path holds", () => {
  for (const word of ["/plain/path", "/with space/x", "/it's/here", "/$(touch /tmp/nope)/`x`", "/semi;colon&&amp|pipe>gt", "/new\nline", "'", "''"]) {
    assert.equal(execFileSync("/bin/sh", ["-c", `printf %s ${shellQuote(word)}`]).toString(), word);
  }
});

test("vmm snapshot: a missing state file is refused before QEMU is asked", async () => {
  const qmp = { execute: () => assert.fail("QEMU must not be asked"), queryStatus: () => assert.fail("QEMU must not be asked") } as unknown as QmpClient;
  const e = await restoreVmState(qmp, "/nonexistent/state").catch((x: unknown) => x);
  assert.ok(isMicroagentError(e) && e.code === "SNAPSHOT_STATE_MISSING" && e.kind === "not_found", String(e));
  assert.match((e as Error).message, /\/nonexistent\/state/);
});

test("vmm snapshot: createOverlayImage makes a 0600 qcow2 over a backing it does not open, never over an existing file", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vmm-snapshot-unit-"));
  try {
    const overlay = join(dir, "fork.qcow2");
    // The backing does not even exist: -u records the name without opening it.
    await createOverlayImage(overlay, { backingFile: "../snap/disk.qcow2", backingFormat: "qcow2", virtualSizeBytes: 64 * 1024 * 1024 });
    assert.equal(statSync(overlay).mode & 0o777, 0o600);
    const info = JSON.parse(execFileSync("qemu-img", ["info", "-U", "--output=json", overlay]).toString()) as Record<string, unknown>;
    assert.equal(info["backing-filename"], "../snap/disk.qcow2");
    assert.equal(info["backing-filename-format"], "qcow2");
    assert.equal(info["virtual-size"], 64 * 1024 * 1024);
    // Never over an existing disk: the overlay is left as it was.
    const again = await createOverlayImage(overlay, { backingFile: "x", backingFormat: "qcow2", virtualSizeBytes: 1 }).catch((x: unknown) => x);
    assert.ok(isMicroagentError(again) && again.code === "SNAPSHOT_DISK_FREEZE_FAILED" && /already exists/.test(again.message), String(again));
    assert.equal((JSON.parse(execFileSync("qemu-img", ["info", "-U", "--output=json", overlay]).toString()) as Record<string, unknown>)["backing-filename"], "../snap/disk.qcow2");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("vmm snapshot: hostFilename reads the file out of QEMU's json: node names", () => {
  assert.equal(hostFilename("/ws/disk.qcow2"), "/ws/disk.qcow2");
  // As QEMU 7.2 reports the top node after blockdev-snapshot-sync mode existing.
  const reported = 'json:{"backing": {"driver": "qcow2", "file": {"driver": "file", "filename": "/ws/disk.qcow2"}}, "driver": "qcow2", "file": {"driver": "file", "filename": "/ws/disk-1.qcow2"}}';
  assert.equal(hostFilename(reported), "/ws/disk-1.qcow2");
  assert.equal(hostFilename('json:{"driver": "qcow2", "file": "/ws/x.qcow2"}'), "/ws/x.qcow2");
  assert.equal(hostFilename("json:{not json"), "json:{not json");
});

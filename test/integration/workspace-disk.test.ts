/**
 * The workspace disk reaches the guest (D6): the root ext4 is grown online at boot to the size the
 * disk was created with (`--size-mib`, the profile), once; later boots find it already grown and
 * skip the ioctl. Also: a boot config near its 2 MiB total limit boots (the supervisor's small heap
 * copes with what create accepts).
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { workspaceFixture, realProviders, type WorkspaceFixture } from "../helpers/workspace.ts";
import { reapVmProcesses } from "../helpers/global-setup.ts";
import { createWorkspace } from "../../src/workspace/create.ts";
import { deleteWorkspace } from "../../src/workspace/delete.ts";
import { workspacePaths } from "../../src/workspace/paths.ts";
import { Workspace } from "../../src/api/workspace.ts";
import { startWorkspace, stopWorkspace } from "../../src/api/lifecycle.ts";
import { MAX_BOOT_CONFIG_BYTES } from "../../src/workspace/boot-spec.ts";
import { runCli } from "../helpers/cli.ts";

let fx: WorkspaceFixture;
let imageRef: string;

before(async () => {
  fx = await workspaceFixture("disk");
  imageRef = await fx.image("disk/busybox:1");
  process.env.MICROAGENT_INSECURE_REGISTRIES = fx.registry.host;
  process.env.MICROAGENT_KERNEL_CACHE ??= join(tmpdir(), "microagent-test-kernel-cache");
});

after(async () => {
  const left = await reapVmProcesses(fx.stateDir);
  await fx.cleanup();
  assert.deepEqual(left, [], "a qemu or supervisor process survived the suite");
});

/** Size of the guest's root filesystem in MiB, as `df` reports it (total 1K blocks / 1024). */
async function guestRootMib(name: string): Promise<{ totalMib: number; deviceMib: number }> {
  const ws = await Workspace.connect(name, { stateDir: fx.stateDir });
  const r = await ws.exec(["sh", "-c", "df -k / | tail -n 1; cat /sys/block/vda/size"]);
  assert.equal(r.exitCode, 0, r.stderr.toString());
  const [dfLine = "", sectors = ""] = r.stdout.toString().trim().split("\n");
  const kb = Number(dfLine.trim().split(/\s+/)[1]);
  assert.ok(kb > 0, `df said: ${dfLine}`);
  return { totalMib: kb / 1024, deviceMib: (Number(sectors) * 512) / 1048576 };
}

/** Seconds since boot from the init's "modules loaded" line to its "root filesystem mounted" line. */
function mountPhaseMs(name: string): number {
  const log = readFileSync(workspacePaths(fx.stateDir, name).serialLog, "utf8");
  const at = (re: RegExp) => Number(new RegExp(`\\[\\s*([0-9.]+)\\]\\s*${re.source}`).exec(log)?.[1]);
  return Math.round((at(/root filesystem mounted/) - at(/loaded \d+ kernel modules/)) * 1000);
}

function growLines(name: string): string[] {
  return readFileSync(workspacePaths(fx.stateDir, name).serialLog, "utf8")
    .split("\n")
    .filter((l) => /grew the root filesystem|root resize/.test(l));
}

test("workspace: --size-mib 2048 gives the guest a ~2 GiB root filesystem, grown once; a near-limit boot config boots", { timeout: 600_000 }, async () => {
  const name = "sized";
  // ~1.9 MB of env in values under the per-entry limit: within the total create allows.
  const env = Object.fromEntries(Array.from({ length: 15 }, (_, i) => [`BIG${i}`, String(i % 10).repeat(120_000)]));
  const created = await createWorkspace({ name, stateDir: fx.stateDir, image: imageRef, providers: realProviders(), sizeMib: 2048, env });
  assert.equal(created.manifest.resources.sizeMib, 2048);
  try {
    const bootCfg = readFileSync(workspacePaths(fx.stateDir, name).bootConfig);
    assert.ok(bootCfg.length > 1_800_000 && bootCfg.length <= MAX_BOOT_CONFIG_BYTES, String(bootCfg.length));

    await startWorkspace(name, { stateDir: fx.stateDir });
    const first = await guestRootMib(name);
    assert.equal(first.deviceMib, 2048);
    // ext4 metadata (journal, inode tables) takes a few percent of the device.
    assert.ok(first.totalMib > 1900 && first.totalMib <= 2048, `root fs is ${first.totalMib} MiB on a 2048 MiB disk`);
    const grown = growLines(name);
    assert.equal(grown.length, 1, grown.join("\n"));
    const m = /grew the root filesystem from (\d+) to (\d+) MiB in (\d+) ms/.exec(grown[0] ?? "");
    assert.ok(m, grown[0]);
    assert.equal(Number(m[2]), 2048);
    process.stderr.write(`# online grow ${m[1]} -> ${m[2]} MiB took ${m[3]} ms (TCG)\n`);
    const firstMountMs = mountPhaseMs(name);
    const ws = await Workspace.connect(name, { stateDir: fx.stateDir });
    const envCheck = await ws.exec(["sh", "-c", 'printf %s "$BIG14" | wc -c']);
    assert.equal(envCheck.stdout.toString().trim(), "120000");
    // The space is really usable: write 600 MiB (more than the base image's whole filesystem).
    const fill = await ws.exec(["sh", "-c", "dd if=/dev/zero of=/root/fill bs=1M count=600 2>/dev/null && sync && ls -l /root/fill | awk '{print $5}'"]);
    assert.equal(fill.exitCode, 0, fill.stderr.toString());
    assert.equal(fill.stdout.toString().trim(), String(600 * 1048576));

    // Second boot: already grown; the init skips the resize (no new line) and the size is the same.
    assert.equal((await stopWorkspace(name, "halt", { stateDir: fx.stateDir })).state, "halted");
    await startWorkspace(name, { stateDir: fx.stateDir });
    assert.equal((await guestRootMib(name)).totalMib, first.totalMib);
    // serial.log holds this boot only: it reached the init's mount step, and no resize happened.
    assert.match(readFileSync(workspacePaths(fx.stateDir, name).serialLog, "utf8"), /root filesystem mounted/);
    assert.deepEqual(growLines(name), [], "the second boot resized again");
    process.stderr.write(`# init mount phase (wait for vda, mount, grow, switch root): first boot ${firstMountMs} ms, second boot ${mountPhaseMs(name)} ms\n`);
    await stopWorkspace(name, "kill", { stateDir: fx.stateDir });
  } finally {
    await deleteWorkspace(name, { stateDir: fx.stateDir, force: true, kill: async () => void (await stopWorkspace(name, "kill", { stateDir: fx.stateDir })) });
  }
});

test("workspace: the default profile's disk (1024 MiB) is what the guest sees; status reports it", { timeout: 600_000 }, async () => {
  const name = "dflt";
  const created = await runCli(["--json", "--state-dir", fx.stateDir, "create", name, "--image", imageRef]);
  assert.equal(created.code, 0, created.out + created.err);
  assert.equal(JSON.parse(created.out).resources.sizeMib, 1024);
  try {
    await startWorkspace(name, { stateDir: fx.stateDir });
    const seen = await guestRootMib(name);
    assert.equal(seen.deviceMib, 1024);
    assert.ok(seen.totalMib > 950 && seen.totalMib <= 1024, `root fs is ${seen.totalMib} MiB on the small profile's 1024 MiB disk`);
    const st = await runCli(["--json", "--state-dir", fx.stateDir, "status", name]);
    assert.equal(JSON.parse(st.out).workspace.resources.sizeMib, 1024, st.out);
    await stopWorkspace(name, "kill", { stateDir: fx.stateDir });
  } finally {
    await deleteWorkspace(name, { stateDir: fx.stateDir, force: true, kill: async () => void (await stopWorkspace(name, "kill", { stateDir: fx.stateDir })) });
  }
});

test("workspace: the large profile's 16 GiB disk is grown to in one boot step", { timeout: 600_000 }, async () => {
  const name = "large";
  // The large profile's disk on the tiny profile's memory (the host is shared).
  await createWorkspace({ name, stateDir: fx.stateDir, image: imageRef, providers: realProviders(), profile: "tiny", sizeMib: 16384 });
  try {
    await startWorkspace(name, { stateDir: fx.stateDir });
    const seen = await guestRootMib(name);
    assert.equal(seen.deviceMib, 16384);
    assert.ok(seen.totalMib > 15_500 && seen.totalMib <= 16384, `root fs is ${seen.totalMib} MiB on a 16 GiB disk`);
    const m = /grew the root filesystem from (\d+) to (\d+) MiB in (\d+) ms/.exec(growLines(name)[0] ?? "");
    assert.ok(m, growLines(name).join("\n"));
    process.stderr.write(`# online grow ${m[1]} -> ${m[2]} MiB took ${m[3]} ms (TCG)\n`);
    await stopWorkspace(name, "kill", { stateDir: fx.stateDir });
  } finally {
    await deleteWorkspace(name, { stateDir: fx.stateDir, force: true, kill: async () => void (await stopWorkspace(name, "kill", { stateDir: fx.stateDir })) });
  }
});

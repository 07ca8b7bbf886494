/**
 * The kernel area end to end: a real `microagent kernel install` from the host's apt into a temp state
 * dir, idempotence, the initramfs rebuilt when the guest init changes (byte-identical when it changes
 * back), custom sources with --sha256 (file, real HTTP server), verify and tamper detection, and one
 * real QEMU (TCG) boot of the installed kernel + initramfs proving microagent-init started.
 *
 * Downloaded .debs are cached in $MICROAGENT_KERNEL_CACHE (default: <tmp>/microagent-kernel-cache)
 * so reruns do not download again.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, readFileSync, readdirSync, writeFileSync, appendFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureKernel, installKernel } from "../../src/kernel/install.ts";
import { kernelStatus } from "../../src/kernel/status.ts";
import { readManifest, kernelDir } from "../../src/kernel/manifest.ts";
import { resolveGuestInit } from "../../src/kernel/guest-init.ts";
import { sha256File } from "../../src/util/hash.ts";
import { launchQemu, QmpClient, tscKhz, waitForSerial } from "../../src/vmm/qemu/index.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { scratchDir } from "../helpers/scratch.ts";
import { runCli, type CliResult } from "../helpers/cli.ts";

const cacheDir = process.env.MICROAGENT_KERNEL_CACHE || join(tmpdir(), "microagent-kernel-cache");
process.env.MICROAGENT_KERNEL_CACHE = cacheDir;

function cli(...argv: string[]): Promise<CliResult> {
  return runCli(argv);
}

/** Extract one member of a cpio archive with the cpio tool. */
function cpioMember(archive: string, member: string): Buffer {
  const r = spawnSync("cpio", ["-i", "--to-stdout", "--quiet", member], { input: readFileSync(archive), maxBuffer: 64 * 1024 * 1024 });
  assert.equal(r.status, 0, r.stderr.toString());
  return r.stdout;
}

test("kernel install: real apt install, idempotent, init-driven rebuild, verify, custom sources, and a TCG boot", { timeout: 15 * 60_000 }, async (t) => {
  const stateDir = scratchDir("kernel-state");
  const init = resolveGuestInit();
  const dir = kernelDir(stateDir, "linux-qemu", "amd64");

  // 1. Install from the host's package manager.
  const first = await cli("--json", "--state-dir", stateDir, "kernel", "install");
  assert.equal(first.code, 0, first.out + first.err);
  const installed = JSON.parse(first.out) as { action: string; path: string; sha256: string; initramfsPath: string; initramfsSha256: string; version: string; modules: string[]; source: { kind: string; package: string } };
  assert.equal(installed.action, "installed");
  assert.equal(installed.source.kind, "apt");
  assert.match(installed.source.package, /^linux-image-/);
  assert.equal(installed.path, join(dir, "vmlinuz"));
  assert.equal(await sha256File(installed.path), installed.sha256);
  assert.equal(await sha256File(installed.initramfsPath), installed.initramfsSha256);
  const names = installed.modules.map((m) => m.slice(m.lastIndexOf("/") + 1));
  for (const m of ["virtio_mmio.ko", "virtio_blk.ko", "virtio_console.ko", "virtio_net.ko"]) assert.ok(names.includes(m), `${m} in the initramfs`);
  // The initramfs holds the real init and the load order, as microagent-init expects.
  assert.deepEqual(cpioMember(installed.initramfsPath, "init"), readFileSync(init));
  assert.equal(cpioMember(installed.initramfsPath, "lib/modules/load-order").toString(), installed.modules.map((m) => `${m}\n`).join(""));
  const manifest = await readManifest(dir);
  assert.ok(manifest);
  assert.equal(manifest.init.sha256, await sha256File(init));
  // No leftovers next to the install (staging dirs, old trees).
  assert.deepEqual(readdirSync(join(stateDir, "kernels", "linux-qemu")), ["amd64"]);

  // 2. Idempotent.
  const again = await cli("--state-dir", stateDir, "kernel", "install");
  assert.equal(again.code, 0, again.err);
  assert.match(again.out, /already installed/);
  assert.equal((await readManifest(dir))?.installedAt, manifest.installedAt);
  const ensured = await ensureKernel({ stateDir });
  assert.equal(ensured.action, "already-installed");

  // 3. A changed init rebuilds only the initramfs; changing it back gives the same bytes (deterministic).
  const otherInit = join(scratchDir("kernel-init"), "microagent-init");
  copyFileSync(init, otherInit);
  appendFileSync(otherInit, "padding that changes the hash");
  const rebuilt = await installKernel({ stateDir, initPath: otherInit });
  assert.equal(rebuilt.action, "initramfs-rebuilt");
  assert.notEqual(rebuilt.manifest.initramfs.sha256, installed.initramfsSha256);
  assert.equal(rebuilt.manifest.kernel.sha256, installed.sha256);
  const back = await ensureKernel({ stateDir });
  assert.equal(back.action, "initramfs-rebuilt");
  assert.equal(back.manifest.initramfs.sha256, installed.initramfsSha256, "same inputs, same initramfs sha256");

  // 4. Boot it under TCG: microagent-init must start (no root disk here, so it stops at waiting for /dev/vda).
  await t.test("boots under QEMU TCG and microagent-init starts", async () => {
    const run = scratchDir("kernel-boot");
    const serial = join(run, "serial.log");
    const qmpPath = join(run, "qmp.sock");
    const started = Date.now();
    const vm = await launchQemu(
      {
        accel: "tcg",
        memoryMib: 256,
        cpus: 1,
        kernelPath: installed.path,
        initramfsPath: installed.initramfsPath,
        tscKhz: tscKhz(),
        serial: { kind: "file", path: serial },
        qmpSocketPath: qmpPath,
        channel: { socketPath: join(run, "ch.sock") },
      },
      { timeoutMs: 30_000, maxLifetimeMs: 180_000 },
    );
    try {
      const qmp = await QmpClient.connect(qmpPath, { timeoutMs: 10_000 });
      try {
        assert.equal((await qmp.queryStatus()).running, true);
        await waitForSerial(serial, /microagent-init: /, { timeoutMs: 120_000, qemu: vm });
        t.diagnostic(`launch to first microagent-init line: ${Date.now() - started} ms`);
        const log = readFileSync(serial, "utf8");
        assert.doesNotMatch(log, /Kernel panic/);
        await qmp.quit();
      } finally {
        qmp.close();
      }
      const exit = await Promise.race([vm.exited, new Promise<never>((_, rej) => setTimeout(() => rej(new Error("QEMU did not exit after quit")), 15_000))]);
      assert.equal(exit.code, 0);
    } finally {
      await vm.kill();
    }
  });

  // 5. verify: right and wrong sha256, then a tampered kernel.
  const ok = await cli("--state-dir", stateDir, "kernel", "verify", "--sha256", installed.sha256);
  assert.equal(ok.code, 0, ok.err);
  assert.ok(ok.out.startsWith(installed.sha256));
  const wrong = await cli("--state-dir", stateDir, "kernel", "verify", "--sha256", "0".repeat(64));
  assert.equal(wrong.code, 1);
  assert.match(wrong.err, /does not match its expected SHA-256/);
  writeFileSync(installed.path, Buffer.concat([readFileSync(installed.path), Buffer.from("tampered")]));
  const tampered = await cli("--json", "--state-dir", stateDir, "kernel", "verify");
  assert.equal(tampered.code, 1);
  assert.equal((JSON.parse(tampered.out) as { error: { code: string } }).error.code, "KERNEL_SHA256_MISMATCH");
  // A reinstall repairs it (the tampered kernel no longer matches the manifest, so it is not "already installed").
  const repaired = await installKernel({ stateDir });
  assert.equal(repaired.action, "installed");
  assert.equal(await sha256File(installed.path), installed.sha256);
  assert.equal((await kernelStatus({ stateDir })).status, "installed");

  // 6. Custom sources require and check --sha256; a mismatch installs nothing.
  const deb = readdirSync(cacheDir).find((f) => /^linux-image-[0-9].*\.deb$/.test(f));
  assert.ok(deb, `a cached kernel .deb in ${cacheDir}`);
  const customState = scratchDir("kernel-custom");
  const noSha = await cli("--state-dir", customState, "kernel", "install", "--from", join(cacheDir, deb));
  assert.equal(noSha.code, 1);
  assert.match(noSha.err, /needs --sha256/);
  const badSha = await cli("--state-dir", customState, "kernel", "install", "--from", join(cacheDir, deb), "--sha256", "1".repeat(64));
  assert.equal(badSha.code, 1);
  assert.match(badSha.err, /does not match the expected SHA-256/);
  assert.ok(!existsSync(kernelDir(customState, "linux-qemu", "amd64")), "nothing installed");
  // The same .deb via --from, with an empty cache so it is really unpacked (dpkg-deb, depmod, module
  // closure): the result is byte-identical to the apt install.
  const fromDeb = await installKernel({ stateDir: scratchDir("kernel-fromdeb"), from: join(cacheDir, deb), sha256: await sha256File(join(cacheDir, deb)), cacheDir: scratchDir("kernel-emptycache") });
  assert.equal(fromDeb.action, "installed");
  assert.equal(fromDeb.manifest.source.kind, "file");
  assert.equal(fromDeb.manifest.kernel.sha256, installed.sha256);
  assert.deepEqual(fromDeb.manifest.modules.map((m) => m.path), installed.modules);
  assert.equal(fromDeb.manifest.initramfs.sha256, installed.initramfsSha256, "same kernel + init, same initramfs bytes");

  // A bare kernel image, from a real HTTP server.
  const kernelBytes = readFileSync(installed.path);
  const kernelSha = installed.sha256;
  const server = createServer((req, res) => {
    if (req.url === "/vmlinuz") res.end(kernelBytes);
    else res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    // An empty cache makes this run really download (URL downloads and unpacked kernels are cached by content).
    let requests = 0;
    server.on("request", () => requests++);
    const urlCache = scratchDir("kernel-urlcache");
    process.env.MICROAGENT_KERNEL_CACHE = urlCache;
    let fromUrl: Awaited<ReturnType<typeof cli>>;
    try {
      fromUrl = await cli("--json", "--state-dir", customState, "kernel", "install", "--url", `${base}/vmlinuz`, "--sha256", kernelSha);
    } finally {
      process.env.MICROAGENT_KERNEL_CACHE = cacheDir;
    }
    assert.equal(requests, 1);
    assert.equal(await sha256File(join(urlCache, `url-${kernelSha}`)), kernelSha);
    assert.equal(fromUrl.code, 0, fromUrl.out + fromUrl.err);
    const u = JSON.parse(fromUrl.out) as { action: string; version: string; modules: string[]; source: { kind: string; url: string } };
    assert.equal(u.action, "installed");
    assert.equal(u.source.kind, "url");
    assert.equal(u.version, installed.version, "version read from the bzImage header");
    assert.deepEqual(u.modules, [], "a bare image brings no modules");
    const urlAgain = await cli("--state-dir", customState, "kernel", "install", "--url", `${base}/vmlinuz`, "--sha256", kernelSha);
    assert.match(urlAgain.out, /already installed/);
    // (A different sha256: downloads are cached by content, so a known sha256 would not hit the server.)
    const missing = await installKernel({ stateDir: scratchDir("kernel-404"), url: `${base}/nope`, sha256: "2".repeat(64) }).catch((e: unknown) => e);
    assert.ok(isMicroagentError(missing) && missing.code === "KERNEL_DOWNLOAD_FAILED" && /HTTP 404/.test(missing.message));
    const wrongUrlSha = await installKernel({ stateDir: scratchDir("kernel-urlsha"), url: `${base}/vmlinuz`, sha256: "3".repeat(64) }).catch((e: unknown) => e);
    assert.ok(isMicroagentError(wrongUrlSha) && wrongUrlSha.code === "KERNEL_SHA256_MISMATCH", String(wrongUrlSha));
    assert.ok(!readdirSync(cacheDir).some((f) => f.startsWith(".dl-") || f === `url-${"3".repeat(64)}`), "a mismatching download leaves nothing in the cache");
  } finally {
    server.close();
  }

  // 7. Firecracker (linux-kvm) gets the ELF vmlinux out of the same package; list shows both backends.
  const kvm = await cli("--json", "--state-dir", stateDir, "--backend", "linux-kvm", "kernel", "install");
  assert.equal(kvm.code, 0, kvm.out + kvm.err);
  const k = JSON.parse(kvm.out) as { path: string; sha256: string; version: string };
  assert.equal(k.path, join(kernelDir(stateDir, "linux-kvm", "amd64"), "vmlinux"));
  assert.equal(readFileSync(k.path).subarray(0, 4).toString("latin1"), "\x7fELF");
  assert.equal(k.version, installed.version);
  const list = await cli("--json", "--state-dir", stateDir, "kernel", "list");
  assert.deepEqual(
    (JSON.parse(list.out) as { kernels: { backend: string; status: string }[] }).kernels.map((x) => `${x.backend}:${x.status}`),
    ["linux-kvm:installed", "linux-qemu:installed"],
  );
});

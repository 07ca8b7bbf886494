import { test } from "node:test";
import assert from "node:assert/strict";
import { packageFromRecord, parseControlRecord, parseDepends, metaPackageCandidates } from "../../src/kernel/apt.ts";
import { spawnSync } from "node:child_process";
import { gzipSync, zstdCompressSync } from "node:zlib";
import { bzImageVersion, extractVmlinux, sniffKernelFile } from "../../src/kernel/source.ts";
import { resolveInstallKernelOptions, defaultKernelCacheDir } from "../../src/kernel/install.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";

// Recorded `apt-cache show --no-all-versions linux-image-cloud-amd64` on Debian 12 (trimmed).
const META = `Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Architecture: amd64
Provides: linux-latest-modules-6.1.0-56-cloud-amd64, virtualbox-guest-modules, wireguard-modules (= 1.0.0)
Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)
Description: Linux for x86-64 cloud (meta-package)
 This package depends on the latest Linux kernel
 and modules for use on cloud platforms.
Filename: pool/updates/main/l/linux-signed-amd64/linux-image-cloud-amd64_6.1.192-2_amd64.deb
Size: 1504
SHA256: 00be21c0c17f08ddf26e82d3b53fe7a41efa4a288938da6bb69e89c4b25c281d

`;

test("kernel apt: control records and Depends parse", () => {
  const f = parseControlRecord(META);
  assert.equal(f.get("Package"), "linux-image-cloud-amd64");
  assert.match(f.get("Description") ?? "", /\nThis package depends/);
  const pkg = packageFromRecord(META);
  assert.deepEqual(pkg, {
    name: "linux-image-cloud-amd64",
    version: "6.1.192-2",
    sha256: "00be21c0c17f08ddf26e82d3b53fe7a41efa4a288938da6bb69e89c4b25c281d",
    fileName: "linux-image-cloud-amd64_6.1.192-2_amd64.deb",
    depends: ["linux-image-6.1.0-56-cloud-amd64"],
  });
  assert.deepEqual(parseDepends("kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool"), ["kmod", "linux-base", "initramfs-tools", "linux-initramfs-tool"]);
  assert.equal(packageFromRecord("Package: x\n"), undefined);
  assert.deepEqual(metaPackageCandidates("amd64")[0], "linux-image-cloud-amd64");
});

test("kernel source: sniffing .deb, bzImage (with its version) and arm64 Image", () => {
  assert.equal(sniffKernelFile(Buffer.from("!<arch>\ndebian-binary   ")), "deb");
  const bz = Buffer.alloc(0x1000);
  bz.write("HdrS", 0x202, "latin1");
  bz.writeUInt16LE(0x800, 0x20e);
  bz.write("6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP\0", 0x800 + 0x200, "latin1");
  assert.equal(sniffKernelFile(bz), "bzimage");
  assert.equal(bzImageVersion(bz), "6.1.0-56-cloud-amd64");
  const arm = Buffer.alloc(64);
  arm.write("ARM\x64", 56, "latin1");
  assert.equal(sniffKernelFile(arm), "arm64-image");
  assert.equal(sniffKernelFile(Buffer.from("hello world")), "unknown");
  assert.equal(bzImageVersion(Buffer.from("nope")), undefined);
});

test("kernel install options: custom sources need a valid --sha256; defaults resolved", () => {
  const env = { MICROAGENT_GUEST_INIT: process.execPath } as NodeJS.ProcessEnv;
  const code = (f: () => unknown) => {
    try {
      f();
      return "none";
    } catch (e) {
      assert.ok(isMicroagentError(e));
      return e.code;
    }
  };
  assert.equal(code(() => resolveInstallKernelOptions({ stateDir: "/s", from: "/k.deb", env })), "KERNEL_SHA256_REQUIRED");
  assert.equal(code(() => resolveInstallKernelOptions({ stateDir: "/s", url: "https://x.test/k", env })), "KERNEL_SHA256_REQUIRED");
  assert.equal(code(() => resolveInstallKernelOptions({ stateDir: "/s", from: "/k", sha256: "nothex", env })), "INVALID_ARGUMENT");
  assert.equal(code(() => resolveInstallKernelOptions({ stateDir: "/s", url: "ftp://x/k", sha256: "a".repeat(64), env })), "INVALID_ARGUMENT");
  assert.equal(code(() => resolveInstallKernelOptions({ stateDir: "/s", from: "/k", url: "https://x.test/k", sha256: "a".repeat(64), env })), "USAGE");
  assert.equal(code(() => resolveInstallKernelOptions({ stateDir: "/s", sha256: "a".repeat(64), env })), "USAGE");
  assert.equal(code(() => resolveInstallKernelOptions({ stateDir: "/s", env: { MICROAGENT_GUEST_INIT: "/nonexistent/init" } })), "GUEST_INIT_MISSING");
  const r = resolveInstallKernelOptions({ stateDir: "/s", from: "k.deb", sha256: `SHA256:${"A".repeat(64)}`, env });
  assert.deepEqual(r.source, { kind: "file", path: `${process.cwd()}/k.deb`, sha256: "a".repeat(64) });
  assert.equal(r.backend, "linux-qemu");
  assert.equal(r.cacheDir, "/s/kernels/.cache");
  assert.equal(defaultKernelCacheDir("/s", { MICROAGENT_KERNEL_CACHE: "/c" }), "/c");
});

/** A minimal bzImage around `payload` (protocol 2.15, 1 setup sector), with the kernel's size trailer. */
function fakeBzImage(compressed: Buffer, uncompressedSize: number, withTrailer: boolean): Buffer {
  const setup = Buffer.alloc(2 * 512);
  setup[0x1f1] = 1;
  setup.write("HdrS", 0x202, "latin1");
  setup.writeUInt16LE(0x020f, 0x206);
  const trailer = Buffer.alloc(4);
  trailer.writeUInt32LE(uncompressedSize);
  const payload = withTrailer ? Buffer.concat([compressed, trailer]) : compressed;
  setup.writeUInt32LE(16, 0x248); // payload_offset, after 16 bytes of "decompressor"
  setup.writeUInt32LE(payload.length, 0x24c);
  return Buffer.concat([setup, Buffer.alloc(16, 0x90), payload, Buffer.alloc(64)]);
}

test("kernel source: vmlinux extraction from gzip, zstd and lz4 payloads, size-checked", async () => {
  const elf = Buffer.concat([Buffer.from("\x7fELF", "latin1"), Buffer.alloc(5000, 0x41)]);
  const gz = gzipSync(elf);
  assert.deepEqual(await extractVmlinux(fakeBzImage(gz, elf.length, false)), elf, "gzip carries its own size trailer");
  assert.deepEqual(await extractVmlinux(fakeBzImage(zstdCompressSync(elf), elf.length, true)), elf);
  const lz4 = spawnSync("lz4", ["-l", "-c"], { input: elf });
  assert.equal(lz4.status, 0, lz4.stderr.toString());
  assert.deepEqual(await extractVmlinux(fakeBzImage(lz4.stdout, elf.length, true)), elf);
  await assert.rejects(extractVmlinux(fakeBzImage(lz4.stdout, elf.length + 1, true)), (e: unknown) => isMicroagentError(e) && e.code === "KERNEL_SOURCE_INVALID");
  await assert.rejects(extractVmlinux(fakeBzImage(Buffer.from("notcompressed"), 13, true)), /unknown payload compression/);
  const notElf = Buffer.alloc(100, 1);
  await assert.rejects(extractVmlinux(fakeBzImage(gzipSync(notElf), notElf.length, false)), /not an ELF kernel/);
  await assert.rejects(extractVmlinux(Buffer.from("nope")), /not a bzImage/);
});

import { test } from "node:test";
import assert from "node:assert/strict";
import { packageFromRecord, parseControlRecord, parseDepends, metaPackageCandidates } from "../../src/kernel/apt.ts";
import { bzImageVersion, sniffKernelFile } from "../../src/kernel/source.ts";
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

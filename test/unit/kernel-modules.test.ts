import { test } from "node:test";
import assert from "node:assert/strict";
import { GUEST_MODULES, ModuleResolutionError, moduleName, parseModulesDep, resolveModules, uncompressedPath } from "../../src/kernel/modules.ts";

// Recorded from Debian 12's linux-image-6.1.0-56-cloud-amd64 (after depmod), the lines the guest needs
// plus unrelated neighbours.
const DEBIAN_DEP = `kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/net/vmw_vsock/vsock.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/drivers/acpi/button.ko:
kernel/drivers/input/evdev.ko:
`;
const DEBIAN_BUILTIN = "kernel/fs/ext4/ext4.ko\nkernel/fs/jbd2/jbd2.ko\nkernel/crypto/crc32c_generic.ko\n";

test("kernel modules: Debian cloud kernel closure in load order", () => {
  const r = resolveModules(DEBIAN_DEP, DEBIAN_BUILTIN);
  assert.deepEqual(r.load, [
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_mmio.ko",
    "kernel/drivers/block/virtio_blk.ko",
    "kernel/drivers/char/virtio_console.ko",
    "kernel/net/core/failover.ko",
    "kernel/drivers/net/net_failover.ko",
    "kernel/drivers/net/virtio_net.ko",
    "kernel/drivers/char/hw_random/virtio-rng.ko",
    "kernel/net/vmw_vsock/vsock.ko",
    "kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko",
    "kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko",
    "kernel/drivers/acpi/button.ko",
    "kernel/drivers/input/evdev.ko",
  ]);
  assert.deepEqual(r.builtin, ["ext4"]);
  assert.deepEqual(r.unavailable, []);
  // Property: each module comes after all of its dependencies.
  const deps = parseModulesDep(DEBIAN_DEP);
  r.load.forEach((m, i) => {
    for (const d of deps.get(m) ?? []) assert.ok(r.load.indexOf(d) >= 0 && r.load.indexOf(d) < i, `${d} must load before ${m}`);
  });
  assert.ok(!r.load.some((p) => p.includes("virtio_pci")), "nothing unrequested is pulled in");
});

test("kernel modules: compressed modules, modular ext4, and names with dashes", () => {
  const dep = `kernel/fs/ext4/ext4.ko.zst: kernel/lib/crc16.ko.zst kernel/fs/mbcache.ko.zst kernel/fs/jbd2/jbd2.ko.zst
kernel/lib/crc16.ko.zst:
kernel/fs/mbcache.ko.zst:
kernel/fs/jbd2/jbd2.ko.zst:
kernel/drivers/virtio/virtio_mmio.ko.xz:
kernel/drivers/block/virtio_blk.ko.xz:
kernel/drivers/char/virtio_console.ko.xz:
kernel/drivers/net/virtio_net.ko.xz:
kernel/drivers/char/hw_random/virtio-rng.ko.xz:
`;
  const r = resolveModules(dep, "");
  assert.deepEqual(r.load, [
    "kernel/drivers/virtio/virtio_mmio.ko.xz",
    "kernel/drivers/block/virtio_blk.ko.xz",
    "kernel/drivers/char/virtio_console.ko.xz",
    // modprobe order: the dependency list read from its end.
    "kernel/fs/jbd2/jbd2.ko.zst",
    "kernel/fs/mbcache.ko.zst",
    "kernel/lib/crc16.ko.zst",
    "kernel/fs/ext4/ext4.ko.zst",
    "kernel/drivers/net/virtio_net.ko.xz",
    "kernel/drivers/char/hw_random/virtio-rng.ko.xz",
  ]);
  assert.ok(r.load.includes("kernel/drivers/char/hw_random/virtio-rng.ko.xz"), "virtio_rng matches virtio-rng.ko");
  assert.deepEqual(r.unavailable, ["vmw_vsock_virtio_transport", "button", "evdev"]);
  assert.equal(uncompressedPath("kernel/fs/ext4/ext4.ko.zst"), "kernel/fs/ext4/ext4.ko");
  assert.equal(uncompressedPath("a/b.ko.xz"), "a/b.ko");
  assert.equal(moduleName("kernel/drivers/char/hw_random/virtio-rng.ko.xz"), "virtio_rng");
});

test("kernel modules: a missing required module names every gap", () => {
  const dep = "kernel/drivers/virtio/virtio_mmio.ko:\n";
  assert.throws(
    () => resolveModules(dep, ""),
    (e: unknown) => e instanceof ModuleResolutionError && e.missing.join(",") === "virtio_blk,virtio_console,ext4,virtio_net",
  );
  assert.ok(GUEST_MODULES.filter((m) => m.required).every((m) => m.purpose.length > 0));
});

test("kernel modules: malformed modules.dep, dangling dependency and cycles are errors", () => {
  assert.throws(() => parseModulesDep("no colon here\n"), /malformed/);
  const req = [{ name: "a", required: true, purpose: "t" }];
  assert.throws(() => resolveModules("kernel/a.ko: kernel/b.ko\n", "", req), /no line for it/);
  assert.throws(() => resolveModules("kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n", "", req), /cycle/);
});

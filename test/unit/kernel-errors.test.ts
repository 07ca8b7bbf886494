import { test } from "node:test";
import assert from "node:assert/strict";
import { KernelErrors } from "../../src/kernel/errors.ts";
import { VmmErrors } from "../../src/vmm/errors.ts";

test("kernel/vmm errors: codes, kinds and retryability are stable", () => {
  const table: Array<[(init: { message: string }) => { code: string; kind: string; retryable: boolean; remediation: string }, string, string, boolean]> = [
    [KernelErrors.KERNEL_NOT_INSTALLED, "KERNEL_NOT_INSTALLED", "not_found", false],
    [KernelErrors.KERNEL_SHA256_MISMATCH, "KERNEL_SHA256_MISMATCH", "policy_denied", false],
    [KernelErrors.KERNEL_SHA256_REQUIRED, "KERNEL_SHA256_REQUIRED", "permanent", false],
    [KernelErrors.KERNEL_SOURCE_INVALID, "KERNEL_SOURCE_INVALID", "permanent", false],
    [KernelErrors.KERNEL_PACKAGE_UNAVAILABLE, "KERNEL_PACKAGE_UNAVAILABLE", "unsupported", false],
    [KernelErrors.KERNEL_DOWNLOAD_FAILED, "KERNEL_DOWNLOAD_FAILED", "transient", true],
    [KernelErrors.KERNEL_MODULES_MISSING, "KERNEL_MODULES_MISSING", "unsupported", false],
    [KernelErrors.GUEST_INIT_MISSING, "GUEST_INIT_MISSING", "not_found", false],
    [KernelErrors.KERNEL_MANIFEST_INVALID, "KERNEL_MANIFEST_INVALID", "permanent", false],
    [KernelErrors.KERNEL_INSTALL_LOCKED, "KERNEL_INSTALL_LOCKED", "conflict", true],
    [KernelErrors.KERNEL_ARCH_UNSUPPORTED, "KERNEL_ARCH_UNSUPPORTED", "unsupported", false],
    [VmmErrors.QEMU_NOT_FOUND, "QEMU_NOT_FOUND", "unsupported", false],
    [VmmErrors.QEMU_START_FAILED, "QEMU_START_FAILED", "permanent", false],
    [VmmErrors.QEMU_EXITED, "QEMU_EXITED", "permanent", false],
    [VmmErrors.QEMU_BOOT_TIMEOUT, "QEMU_BOOT_TIMEOUT", "transient", true],
    [VmmErrors.INVALID_VM_SPEC, "INVALID_VM_SPEC", "permanent", false],
    [VmmErrors.SOCKET_PATH_TOO_LONG, "SOCKET_PATH_TOO_LONG", "permanent", false],
    [VmmErrors.QMP_CONNECT_FAILED, "QMP_CONNECT_FAILED", "transient", true],
    [VmmErrors.QMP_PROTOCOL, "QMP_PROTOCOL", "permanent", false],
    [VmmErrors.QMP_COMMAND_FAILED, "QMP_COMMAND_FAILED", "permanent", false],
    [VmmErrors.QMP_TIMEOUT, "QMP_TIMEOUT", "transient", true],
    [VmmErrors.QMP_CLOSED, "QMP_CLOSED", "transient", true],
    [VmmErrors.SNAPSHOT_VM_NOT_PAUSED, "SNAPSHOT_VM_NOT_PAUSED", "conflict", false],
    [VmmErrors.SNAPSHOT_MIGRATION_BUSY, "SNAPSHOT_MIGRATION_BUSY", "conflict", true],
    [VmmErrors.SNAPSHOT_SAVE_FAILED, "SNAPSHOT_SAVE_FAILED", "permanent", false],
    [VmmErrors.SNAPSHOT_SAVE_TIMEOUT, "SNAPSHOT_SAVE_TIMEOUT", "transient", true],
    [VmmErrors.SNAPSHOT_DISK_FREEZE_FAILED, "SNAPSHOT_DISK_FREEZE_FAILED", "permanent", false],
    [VmmErrors.SNAPSHOT_STATE_MISSING, "SNAPSHOT_STATE_MISSING", "not_found", false],
    [VmmErrors.SNAPSHOT_NOT_INCOMING, "SNAPSHOT_NOT_INCOMING", "conflict", false],
    [VmmErrors.SNAPSHOT_RESTORE_FAILED, "SNAPSHOT_RESTORE_FAILED", "permanent", false],
    [VmmErrors.SNAPSHOT_RESTORE_TIMEOUT, "SNAPSHOT_RESTORE_TIMEOUT", "transient", true],
  ];
  assert.equal(table.length, Object.keys(KernelErrors).length + Object.keys(VmmErrors).length, "every code is in the table");
  for (const [make, code, kind, retryable] of table) {
    const e = make({ message: "m" });
    assert.equal(e.code, code);
    assert.equal(e.kind, kind, code);
    assert.equal(e.retryable, retryable, code);
  }
  assert.match(KernelErrors.GUEST_INIT_MISSING({ message: "m" }).remediation, /scripts\/setup/);
  assert.match(VmmErrors.QEMU_NOT_FOUND({ message: "m" }).remediation, /apt install qemu-system-x86/);
  assert.match(KernelErrors.KERNEL_SHA256_MISMATCH({ message: "m" }).remediation, /microagent kernel install/);
});

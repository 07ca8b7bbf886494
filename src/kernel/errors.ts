/** Error codes of the kernel area (install, verify, initramfs assembly). */
import { defineErrors } from "../contract/errors.ts";

export const KernelErrors = defineErrors({
  KERNEL_NOT_INSTALLED: {
    kind: "not_found",
    remediation: "Run `microagent kernel install` (the first `microagent run` also installs the default kernel).",
  },
  KERNEL_SHA256_MISMATCH: {
    kind: "policy_denied",
    remediation:
      "Do not boot it: reinstall from the trusted source with `microagent kernel install`; for a custom kernel pass the expected --sha256 with --from or --url.",
  },
  KERNEL_SHA256_REQUIRED: {
    kind: "permanent",
    remediation: "Pass the expected SHA-256 of the file with --sha256 (e.g. the checksum published next to the download).",
  },
  KERNEL_SOURCE_INVALID: {
    kind: "permanent",
    remediation: "Pass a Debian/Ubuntu linux-image .deb or a bare bzImage kernel with --from, or a URL to one with --url.",
  },
  KERNEL_PACKAGE_UNAVAILABLE: {
    kind: "unsupported",
    remediation:
      "Make sure the host's package manager can download kernels (`apt-get update`; Debian needs linux-image-cloud-amd64 in its sources), or install a kernel with --from PATH --sha256 S.",
  },
  KERNEL_DOWNLOAD_FAILED: {
    kind: "transient",
    retryable: true,
    remediation: "Check network access to the package mirror or URL and retry.",
  },
  KERNEL_MODULES_MISSING: {
    kind: "unsupported",
    remediation: "Use a kernel that has virtio-mmio, virtio-blk, virtio-console, virtio-net and ext4 (built in or as modules), such as Debian's linux-image-cloud-amd64.",
  },
  GUEST_INIT_MISSING: {
    kind: "not_found",
    remediation: "Build the guest init: run scripts/setup (it runs `make -C guest`), or set MICROAGENT_GUEST_INIT to a built microagent-init.",
  },
  KERNEL_MANIFEST_INVALID: {
    kind: "permanent",
    remediation: "The kernel manifest is damaged: reinstall with `microagent kernel install`.",
  },
  KERNEL_INSTALL_LOCKED: {
    kind: "conflict",
    retryable: true,
    remediation: "Another microagent process is installing this kernel; wait for it to finish and retry.",
  },
  KERNEL_ARCH_UNSUPPORTED: {
    kind: "unsupported",
    remediation: "Install a kernel for an architecture this host's package manager knows (amd64 here), or pass --from/--url with a kernel for the target architecture.",
  },
});

/** Error codes of the rootfs area (layers -> staging tree -> ext4, base cache, `rootfs build`). */
import { defineErrors } from "../contract/errors.ts";

export const RootfsErrors = defineErrors({
  /** A layer tar is malformed: bad header checksum, bad number field, truncated data. */
  ROOTFS_LAYER_INVALID: {
    kind: "permanent",
    remediation: "The layer is corrupt or not a tar archive: pull the image again, or rebuild it with a standard tool.",
  },
  /** A layer tries to write outside the root, through a symlink, or otherwise escape. */
  ROOTFS_LAYER_UNSAFE: {
    kind: "policy_denied",
    remediation: "The image contains an unsafe layer entry and was refused; rebuild the image without it or use a trusted image.",
  },
  /** A layer uses a tar feature microagent does not apply (sparse files, non-UTF-8 names ...). */
  ROOTFS_LAYER_UNSUPPORTED: {
    kind: "unsupported",
    remediation: "Rebuild the image with a standard tool (docker, buildah, umoci) that writes plain POSIX/PAX tar layers.",
  },
  /** A layer decompresses to more than the per-image total or the per-layer expansion ratio allows (a decompression bomb, or a huge image). */
  ROOTFS_LAYER_TOO_LARGE: {
    kind: "resource_exhausted",
    remediation:
      "If the image is trusted and really this large, raise the limit: `rootfs build --max-uncompressed-gib N` / `--max-expansion-ratio N`, the MICROAGENT_MAX_UNCOMPRESSED_GIB / MICROAGENT_MAX_EXPANSION_RATIO environment variables (create, run), or the maxUncompressedBytes / maxExpansionRatio build options.",
  },
  /** The requested (or computed) filesystem size cannot hold the content. */
  ROOTFS_TOO_SMALL: {
    kind: "resource_exhausted",
    remediation: "Pass a larger --size-mib (at least the size named in the message), or omit it to size automatically.",
  },
  /** mke2fs is not installed / not at the given path. */
  ROOTFS_MKE2FS_MISSING: {
    kind: "unsupported",
    remediation:
      "Install e2fsprogs (`apt install e2fsprogs`, `dnf install e2fsprogs`, `brew install e2fsprogs`) or pass --mke2fs PATH (e.g. --mke2fs /opt/homebrew/opt/e2fsprogs/sbin/mke2fs).",
  },
  /** debugfs is not installed / not at the given path. */
  ROOTFS_DEBUGFS_MISSING: {
    kind: "unsupported",
    remediation: "Install e2fsprogs (it ships debugfs next to mke2fs), or pass --debugfs PATH.",
  },
  /** mke2fs or debugfs ran and failed. */
  ROOTFS_MKFS_FAILED: {
    kind: "permanent",
    remediation: "Check free disk space under the state directory and the e2fsprogs version (1.45 or newer); the tool's output is in the details.",
  },
  /** `rootfs build` was given a tag where a digest is required. */
  ROOTFS_REF_MUTABLE: {
    kind: "policy_denied",
    remediation: "Pin the image by digest (e.g. docker.io/library/ubuntu@sha256:...), or pass --allow-mutable (development only).",
  },
  /** Waited too long for another process building the same base. */
  ROOTFS_CACHE_BUSY: {
    kind: "transient",
    retryable: true,
    remediation: "Another microagent process is building the same root filesystem; wait for it and retry.",
  },
});

/**
 * Error codes of the backend layer: launching and supervising a VMM and talking to its guest.
 * Foreign errors (a QEMU exit, a QMP failure, a channel that never came up) are translated here.
 */
import { defineErrors } from "../contract/errors.ts";

export const BackendErrors = defineErrors({
  BACKEND_UNSUPPORTED: {
    kind: "unsupported",
    remediation: "Use `--backend linux-qemu` (the backend this build implements), or run `microagent doctor` to see what this host supports.",
  },
  BACKEND_ALREADY_REGISTERED: {
    kind: "conflict",
    remediation: "Register each backend once: a backend name maps to one implementation (see src/backend/registry.ts).",
  },
  DISK_CREATE_FAILED: {
    kind: "permanent",
    remediation: "Read the disk tool's error above (qemu-img for linux-qemu); check that the base rootfs exists and the state dir is writable, then create the workspace again.",
  },
  CAPABILITY_UNSUPPORTED: {
    kind: "unsupported",
    remediation: "This backend does not implement that operation yet; see docs/backends.md for what each backend supports.",
  },
  VMM_START_FAILED: {
    kind: "permanent",
    remediation: "Read the QEMU error above; run `microagent doctor` to check the host, and `microagent logs <name>` for the guest's serial output.",
  },
  VMM_EXITED: {
    kind: "permanent",
    remediation: "The VM process ended; read `microagent logs <name>` for what the guest printed before it stopped, then `microagent start <name>` again.",
  },
  BOOT_TIMEOUT: {
    kind: "transient",
    retryable: true,
    remediation:
      "The guest did not come up within the boot bound. Read `microagent logs <name>` for where it stopped; on a slow or busy host (TCG emulation) retry, give it longer with `start --timeout` (or MICROAGENT_BOOT_TIMEOUT_MS), or use fewer vCPUs or less memory.",
  },
  GUEST_CHANNEL_FAILED: {
    kind: "permanent",
    remediation: "The guest never answered on its channel: check `microagent logs <name>` for microagent-init errors, and rebuild the initramfs with `microagent kernel install`.",
  },
  BOOT_CONFIG_REJECTED: {
    kind: "permanent",
    remediation: "The guest refused the boot configuration (for example a failing `setup` step); read `microagent logs <name>` for its output and fix the spec.",
  },
});

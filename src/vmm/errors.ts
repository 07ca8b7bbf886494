/**
 * Error codes of the VMM layer (QEMU process, QMP control socket). Foreign failures (spawn errors,
 * QMP `error` replies, socket errors) are translated here and nowhere else.
 */
import { defineErrors } from "../contract/errors.ts";

export const VmmErrors = defineErrors({
  QEMU_NOT_FOUND: {
    kind: "unsupported",
    remediation: "Install QEMU (`apt install qemu-system-x86`), put qemu-system-x86_64 on PATH, or set MICROAGENT_QEMU to its path.",
  },
  QEMU_START_FAILED: {
    kind: "permanent",
    remediation: "Read the QEMU error output in the message; run `microagent doctor` to check the host.",
  },
  QEMU_EXITED: {
    kind: "permanent",
    remediation: "The VM process ended: read `microagent logs` (serial log) and the QEMU error output for the cause.",
  },
  QEMU_BOOT_TIMEOUT: {
    kind: "transient",
    retryable: true,
    remediation: "The guest did not come up in time; read the serial log tail, and retry (TCG boots are slow on a busy host).",
  },
  INVALID_VM_SPEC: {
    kind: "permanent",
    remediation: "Fix the named VM setting (memory, cpus, disk, socket path).",
  },
  SOCKET_PATH_TOO_LONG: {
    kind: "permanent",
    remediation: "Unix socket paths must be shorter than 108 bytes: use a shorter runtime directory (e.g. set XDG_RUNTIME_DIR or a shorter --state-dir).",
  },
  QMP_CONNECT_FAILED: {
    kind: "transient",
    retryable: true,
    remediation: "QEMU's control socket did not answer; check that the VM process is still running (`microagent status`).",
  },
  QMP_PROTOCOL: {
    kind: "permanent",
    remediation: "QEMU sent something the QMP client did not expect; this is a bug or an unsupported QEMU version: report it with the QEMU version.",
  },
  QMP_COMMAND_FAILED: {
    kind: "permanent",
    remediation: "QEMU refused the control command; the message carries QEMU's reason.",
  },
  QMP_TIMEOUT: {
    kind: "transient",
    retryable: true,
    remediation: "QEMU did not answer the control command in time; the host may be overloaded: retry.",
  },
  QMP_CLOSED: {
    kind: "transient",
    retryable: true,
    remediation: "The QEMU control connection closed (the VM probably exited); check `microagent status`.",
  },
});

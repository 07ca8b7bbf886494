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
  // Snapshots (src/vmm/qemu/snapshot.ts): pause, memory + device state to a file, the frozen disk layer, restore.
  SNAPSHOT_VM_NOT_PAUSED: {
    kind: "conflict",
    remediation: "Pause the VM (QMP stop) before freezing its disk or saving its state; a running guest would change memory and disk under the capture.",
  },
  SNAPSHOT_MIGRATION_BUSY: {
    kind: "conflict",
    retryable: true,
    remediation: "Another save or restore of this VM is still running; wait for it to finish (or cancel it) and retry.",
  },
  SNAPSHOT_SAVE_FAILED: {
    kind: "permanent",
    remediation: "QEMU could not write the VM state; the message carries its reason (often a full disk or an unwritable snapshot directory). Nothing was kept.",
  },
  SNAPSHOT_SAVE_TIMEOUT: {
    kind: "transient",
    retryable: true,
    remediation: "Writing the VM state took longer than allowed (a slow or busy disk); the save was cancelled and nothing kept: retry, or allow more time.",
  },
  SNAPSHOT_DISK_FREEZE_FAILED: {
    kind: "permanent",
    remediation: "QEMU could not switch the disk to a new overlay; the message carries its reason. The VM keeps writing to its old disk, which is not frozen.",
  },
  SNAPSHOT_STATE_MISSING: {
    kind: "not_found",
    remediation: "The snapshot's state file is gone or unreadable: delete the snapshot and take a new one.",
  },
  SNAPSHOT_NOT_INCOMING: {
    kind: "conflict",
    remediation: "A restore needs a QEMU started to receive state (`incoming: \"defer\"`, i.e. `-incoming defer`) that has not received any yet: launch a fresh one.",
  },
  SNAPSHOT_RESTORE_FAILED: {
    kind: "permanent",
    remediation: "QEMU refused the saved state: the restoring VM must have the same memory size, CPUs, devices and disk layout as the saved one, and the file must be complete. Delete the snapshot if it is damaged.",
  },
  SNAPSHOT_RESTORE_TIMEOUT: {
    kind: "transient",
    retryable: true,
    remediation: "Loading the VM state took longer than allowed (a slow disk or an overloaded host); kill this QEMU and retry with more time.",
  },
});

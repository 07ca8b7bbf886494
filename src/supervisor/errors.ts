/**
 * Error codes of the supervisor and its control socket. Requests in flight when the VM dies fail
 * with VM_DIED, carrying the exit status and the serial log's tail.
 */
import { defineErrors } from "../contract/errors.ts";

export const SupervisorErrors = defineErrors({
  SUPERVISOR_UNREACHABLE: {
    kind: "transient",
    retryable: true,
    remediation: "Check `microagent status <name>`: if the workspace is not running, start it with `microagent start <name>`.",
  },
  SUPERVISOR_START_FAILED: {
    kind: "permanent",
    remediation: "Read <state-dir>/workspaces/<name>/supervisor.log and `microagent logs <name>`; run `microagent doctor` to check the host.",
  },
  SUPERVISOR_PROTOCOL: {
    kind: "permanent",
    remediation: "The CLI and the running supervisor disagree on the control protocol; halt the workspace and start it again with this microagent version.",
  },
  SUPERVISOR_CLIENT_STALLED: {
    kind: "resource_exhausted",
    remediation:
      "Keep the reading side draining: do not suspend it (Ctrl-Z) or block its stdout, or redirect the output to a file. The workspace itself is unaffected.",
  },
  NOT_RUNNING: {
    kind: "conflict",
    remediation: "Start the workspace first: `microagent start <name>`.",
  },
  CONSOLE_UNAVAILABLE: {
    kind: "conflict",
    remediation: "Start the workspace (`microagent start <name>`) and wait for it to be running, then connect again.",
  },
  PAUSE_UNSUPPORTED: {
    kind: "unsupported",
    remediation: "This backend cannot freeze a VM's vCPUs; use `microagent halt <name>` and `start` instead, or a backend with the pause capability (linux-qemu).",
  },
  QUARANTINED: {
    kind: "policy_denied",
    remediation: "The workspace is quarantined: every host path into the guest is severed. Run `microagent halt <name>` (or stop / kill), then `microagent start <name>`.",
  },
  VM_DIED: {
    kind: "permanent",
    remediation: "Read `microagent logs <name>` for what the guest printed before it stopped, then `microagent start <name>` again.",
  },
  BOOT_FAILED: {
    kind: "permanent",
    remediation: "Read `microagent logs <name>` for the guest's serial output; `microagent doctor` checks the host.",
  },
  SHUTDOWN_TIMEOUT: {
    kind: "transient",
    retryable: true,
    remediation: "The guest did not power off in time; run `microagent kill <name>` to terminate it.",
  },
  HALT_NOT_CLEAN: {
    kind: "conflict",
    remediation: "The VM ended (for example a concurrent `microagent kill`) before the guest flushed its disks and powered off: check the workspace's files before relying on its disk, then `microagent start <name>` and halt it again.",
  },
  WAIT_TIMEOUT: {
    kind: "transient",
    retryable: true,
    remediation: "Wait longer (raise --timeout), or check `microagent status <name>`.",
  },
  SUPERVISOR_INVARIANT: {
    kind: "permanent",
    remediation: "A bug in the supervisor's phase handling: report it with supervisor.log; `microagent kill <name>` ends the workspace.",
  },
  SERVICE_FAILED: {
    kind: "permanent",
    remediation: "A supervisor service (network, egress, ...) could not start for this VM: read supervisor.log for its error, fix its cause, then `microagent start <name>` again.",
  },
  EXEC_UNAVAILABLE: {
    kind: "transient",
    retryable: true,
    remediation: "The guest's exec service is not answering yet; retry in a moment or check `microagent logs <name>`.",
  },
  NETWORK_LINK_FAILED: {
    kind: "permanent",
    remediation:
      "The VM's NIC never connected to (or lost) the supervisor's network stack; the workspace was not started without it. Read supervisor.log and `microagent logs <name>`, check `microagent doctor`, or create the workspace with --network isolated if it needs no network.",
  },
  NETWORK_PORT_IN_USE: {
    kind: "conflict",
    remediation: "Another process holds that host port: pick another with -p HOST_PORT:GUEST_PORT (recreate the workspace), or stop the process using it (`ss -ltnp`).",
  },
  NETWORK_SETUP_FAILED: {
    kind: "permanent",
    remediation: "The workspace's network could not be set up, so it was not started (fail closed). Read supervisor.log; check the --dns / --add-host / --egress-allow values recorded in the manifest.",
  },
});

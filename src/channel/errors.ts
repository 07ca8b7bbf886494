/**
 * Error codes of the host<->guest channel. Every failure of the channel (the guest went away, it broke
 * the protocol, it speaks another version, a phase timed out) surfaces as one of these.
 */
import { defineErrors } from "../contract/errors.ts";

export const ChannelErrors = defineErrors({
  CHANNEL_PEER_CLOSED: {
    kind: "transient",
    retryable: true,
    remediation: "The guest closed the channel (the VM stopped or crashed): read `microagent logs NAME` for the serial log, then start the workspace again.",
  },
  CHANNEL_PROTOCOL_VIOLATION: {
    kind: "permanent",
    remediation: "The guest sent data that breaks the microagent protocol; the session was closed. Reinstall the kernel/initramfs with `microagent kernel install` so the guest runs a matching microagent-init, and quarantine the workspace if it keeps happening.",
  },
  CHANNEL_INCOMPATIBLE_VERSION: {
    kind: "unsupported",
    remediation: "Rebuild the initramfs with this microagent's guest init: `microagent kernel install`.",
  },
  CHANNEL_TIMEOUT: {
    kind: "transient",
    retryable: true,
    remediation: "The guest did not answer in time (a slow TCG boot or a hung guest): retry with a longer timeout, and read `microagent logs NAME`.",
  },
  CHANNEL_CLOSED: {
    kind: "conflict",
    remediation: "The channel was already closed by this process; connect again.",
  },
  CHANNEL_CONNECT_FAILED: {
    kind: "transient",
    retryable: true,
    remediation: "Check that the workspace is running (`microagent status NAME`) and that its channel socket exists.",
  },
  CHANNEL_BOOT_FAILED: {
    kind: "permanent",
    remediation: "Fix the failing setup step or file in the workspace spec; the serial log (`microagent logs NAME`) has its output.",
  },
  CHANNEL_GUEST_ERROR: {
    kind: "permanent",
    remediation: "The guest ended the session with an error; read `microagent logs NAME` for its side of the story.",
  },
  CHANNEL_TOO_MANY_STREAMS: {
    // It clears as soon as other sessions end: worth a retry.
    kind: "transient",
    retryable: true,
    remediation: "Wait for running exec or console sessions to finish, or close them.",
  },
});

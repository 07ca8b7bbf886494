/**
 * Error codes of the userspace network stack. The stack itself never throws at a guest frame (bad frames
 * are dropped and counted); these codes are for the link (framing), for host-side callers
 * (`connectToGuest`, configuration) and for flows the stack cuts.
 */
import { defineErrors } from "../contract/errors.ts";

export const NetErrors = defineErrors({
  NET_FRAME_TOO_LARGE: {
    kind: "permanent",
    remediation:
      "The VMM sent a netdev frame longer than any Ethernet frame the stack accepts; the link was closed. Restart the workspace, and report it if it repeats (it means QEMU and microagent disagree on the framing).",
  },
  NET_LINK_CLOSED: {
    kind: "conflict",
    remediation: "The network stack was severed or closed (quarantine, halt or a failed supervisor); start the workspace again to get a new link.",
  },
  NET_INVALID_CONFIG: {
    kind: "permanent",
    remediation: "Fix the network settings (addresses, prefix length, MTU, caps) named in the message.",
  },
  NET_CAP_EXCEEDED: {
    kind: "resource_exhausted",
    remediation: "Too many flows or too much buffered data in this workspace: close idle connections in the guest, or raise the cap in the workspace's network settings.",
  },
  NET_CONNECTION_REFUSED: {
    kind: "transient",
    retryable: true,
    remediation: "Nothing in the guest accepted the connection on that port: start the server in the workspace, or check the published port's guest side.",
  },
  NET_CONNECTION_RESET: {
    kind: "transient",
    retryable: true,
    remediation: "The other side reset the connection (the guest program closed it abruptly or the stack cut it); retry the request.",
  },
  NET_TIMEOUT: {
    kind: "transient",
    retryable: true,
    remediation: "The peer stopped answering (handshake, retransmission or idle timeout); check that the guest is running and retry.",
  },
});

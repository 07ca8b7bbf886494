/**
 * Adapter from the guest channel library (src/channel) to the supervisor's GuestLink.
 * Placeholder until src/channel lands.
 */
import type { Duplex } from "node:stream";
import { SupervisorErrors } from "./errors.ts";
import type { GuestLink } from "./guest-link.ts";

export async function connectChannelLink(_stream: Duplex, _opts: { timeoutMs: number }): Promise<GuestLink> {
  throw SupervisorErrors.BOOT_FAILED({ message: "the guest channel is not available in this build" });
}

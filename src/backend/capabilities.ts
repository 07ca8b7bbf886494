/**
 * What a backend can do, derived from which capability objects it has. There is no flag table to
 * keep in step: a backend that gains `pause` reports pause everywhere (`host`, `doctor`, docs tests)
 * the moment the object exists. Pure; imports types only.
 */
import { BACKENDS, type BackendName, type DiskFormat } from "../contract/backend.ts";
import type { Backend, ChannelTransport, NetworkAttachmentKind } from "./types.ts";

export interface BackendCapabilities {
  backend: BackendName;
  implemented: true;
  /** Launch, terminate, kill: always. */
  lifecycle: true;
  /** The guest channel's transport, or null without one. */
  channel: ChannelTransport | null;
  /** exec and the interactive console both ride the guest channel. */
  exec: boolean;
  console: boolean;
  /** Disk formats the backend boots from (empty: it cannot make a workspace disk). */
  diskFormats: readonly DiskFormat[];
  /** NIC attachments; `isolated` (no NIC) needs none and is always possible. */
  networkAttachments: readonly NetworkAttachmentKind[];
  isolated: true;
  pause: boolean;
  snapshot: boolean;
}

/** A backend this build names but does not implement. */
export interface UnimplementedBackend {
  backend: BackendName;
  implemented: false;
}

export type BackendCapabilityRow = BackendCapabilities | UnimplementedBackend;

export function capabilitiesOf(b: Backend): BackendCapabilities {
  return {
    backend: b.name,
    implemented: true,
    lifecycle: true,
    channel: b.channel?.transport ?? null,
    exec: b.channel !== undefined,
    console: b.channel !== undefined,
    diskFormats: b.disk?.formats ?? [],
    networkAttachments: b.network?.attachments ?? [],
    isolated: true,
    pause: b.pause !== undefined,
    snapshot: b.snapshot !== undefined,
  };
}

/** One row per backend name the contract knows, in its order: implemented ones from their objects. */
export function capabilityTable(implemented: readonly Backend[]): BackendCapabilityRow[] {
  return BACKENDS.map((name) => {
    const b = implemented.find((x) => x.name === name);
    return b ? capabilitiesOf(b) : { backend: name, implemented: false };
  });
}

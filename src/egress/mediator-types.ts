/** Small shared types of the mediator modules. */
import type { SecureContext } from "node:tls";
import type { EgressRecord } from "./audit.ts";
import type { LeafIssuer } from "./ca.ts";
import type { SwapSecret } from "../secrets/placeholder.ts";
import type { ByteStream, ByteStreamHandlers, HostConnector, TcpTarget } from "../net/types.ts";

/** Where records go: `EgressAuditLog` in production, an array in tests. */
export interface AuditSink {
  write(r: Omit<EgressRecord, "time" | "workspace"> & { time?: string; workspace?: string }): void;
}

/** What the TLS interception needs of a mediated flow and its mediator (mediator.ts implements it). */
export interface MitmFlow {
  readonly m: {
    readonly issuer: LeafIssuer | null;
    readonly upstream: HostConnector;
    readonly upstreamCa: readonly string[];
    readonly upstreamTimeoutMs: number;
    readonly swap: readonly SwapSecret[];
    readonly contexts: WeakMap<object, SecureContext>;
    readonly stats: { upstreamErrors: number; handshakeErrors: number };
    record(r: Omit<EgressRecord, "time" | "workspace">): void;
    capRecord(proto: "tcp" | "udp", dst: string, reason: string, limit: number, flowId?: string): void;
  };
  readonly dst: string;
  readonly id: string;
  readonly target: TcpTarget;
  readonly gh: ByteStreamHandlers;
  onAbort(f: (e?: Error) => void): void;
  abort(error: Error): void;
  handOver(inner: ByteStream): void;
}

/** Small shared types of the mediator modules. */
import type { EgressRecord } from "./audit.ts";

/** Where records go: `EgressAuditLog` in production, an array in tests. */
export interface AuditSink {
  write(r: Omit<EgressRecord, "time" | "workspace"> & { time?: string; workspace?: string }): void;
}

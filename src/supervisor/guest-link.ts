/**
 * What the supervisor needs from the guest channel, as one small interface. The adapter over the
 * channel library lives in channel-link.ts; tests drive the supervisor with a fake link.
 */
import type { ConsoleOpenOptions, ExecRequest, ExecResult, WorkloadResult } from "./protocol.ts";
import type { ConsoleSession, ExecIo, OutputSink, OutputStream } from "./server.ts";

export interface GuestHello {
  protocolVersion: number;
  initVersion?: string;
  bootId?: string;
  capabilities?: string[];
  /** Where the guest's boot is (`awaiting-config` for a fresh boot, `running` for a restored one). */
  state?: string;
}

/** What the guest applied after a restore (the channel's `resumed`). */
export interface ResumeReport {
  entropyBytes: number;
  clockStepMs: number;
  hostnameSet: boolean;
  networkSet: boolean;
  error?: string;
}

export interface GuestLink {
  /** The guest's hello (the handshake is done when the link exists). */
  readonly hello: GuestHello;
  /** Send the per-boot configuration; resolves when the guest accepted it (setup done or started). */
  sendBootConfig(config: unknown): Promise<void>;
  /** After a restore: fresh entropy, the host's time, a new identity (absent on links that cannot). */
  resume?(msg: { entropyBase64: string; timeUnixMs: number; hostname?: string; network?: Record<string, unknown> }, timeoutMs: number): Promise<ResumeReport>;
  /** Before a snapshot: /run/secrets zeroed, removed and unmounted (absent on links that cannot). */
  wipeSecrets?(timeoutMs: number): Promise<{ count: number; error?: string }>;
  /** After a capture or a restore: this boot's secrets again, a fork's new trust files rewritten in place. */
  refresh?(
    msg: { secrets?: Array<{ name: string; contentBase64: string }>; trust?: Array<{ path: string; contentBase64: string }> },
    timeoutMs: number,
  ): Promise<{ secrets: number; trustFiles: number; error?: string }>;
  /** Round trip through the guest's event loop, in ms. */
  ping(timeoutMs: number): Promise<number>;
  /**
   * Run a command; aborting `signal` (the client went away) kills it in the guest. With `onOutput`,
   * the next chunk is taken from the guest (and credited back) only after its promise resolves.
   */
  exec(req: ExecRequest, onOutput: OutputSink | undefined, signal?: AbortSignal, io?: ExecIo): Promise<ExecResult>;
  openConsole(opts: ConsoleOpenOptions): Promise<ConsoleSession>;
  /** Workload stdout/stderr as the guest streams it; a returned promise defers the guest's credit until it settles. */
  onWorkloadOutput(cb: (stream: OutputStream, data: Buffer) => unknown): void;
  /** Resolves when the workload exits (never, for an idle boot). */
  workloadResult(): Promise<WorkloadResult>;
  /** Ask init to stop the workload, sync and power off. Resolves when the request is acknowledged. */
  shutdown(timeoutMs: number): Promise<void>;
  /** Sever the link (quarantine, VM exit). */
  close(): void;
  /** Resolves when the link is gone, with the reason. */
  readonly closed: Promise<Error | undefined>;
}

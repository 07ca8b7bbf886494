/**
 * Supervisor services: per-VM components that live inside the supervisor next to the VM (the
 * userspace network stack, the egress mediator, port forwards, secret delivery, snapshots) and
 * plug into its lifecycle at fixed points instead of being threaded through `Supervisor` by hand.
 *
 * The supervisor calls each hook on every service in registration order (the reverse order for
 * `stop`), awaiting each one:
 *
 *   beforeLaunch(spec) -> spec   before the VMM starts: add a NIC attachment, open listeners the VMM
 *                                connects to. A throw fails the boot closed (the error is recorded).
 *   afterLaunch(ctx)             the VMM process exists (QMP is up): wait for what the VMM reports
 *                                (e.g. NETDEV_STREAM_CONNECTED), still inside the boot deadline.
 *   bootConfig(config) -> config before the boot config goes to the guest: add per-boot settings the
 *                                guest applies (eth0 address, resolv.conf, CA bundle, secrets).
 *   onRunning(ctx)               the guest is up and the workspace is recorded `running`.
 *   sever(reason)                quarantine: cut every host path at once, synchronously; later input
 *                                from the guest is dropped. Must not throw.
 *   stop()                       the VM is gone (or going): release sockets, timers and files.
 *
 * A service reports what it knows for `status`/`network` through `describe()`; readiness problems go
 * through `readiness()` (e.g. a required mediation target that does not answer).
 */
import type { RunningVm, VmLaunchSpec } from "../backend/types.ts";

export interface ServiceContext {
  /** The launched VM (QMP, pid). */
  readonly vm: RunningVm;
  /** The launch spec as the services left it. */
  readonly launch: VmLaunchSpec;
  /** Milliseconds left of the boot deadline (afterLaunch only; 0 elsewhere). */
  remainingMs(): number;
  log(message: string): void;
}

/** A readiness probe a service contributes, named as it appears in `status` (e.g. `mediationReady`). */
export interface ServiceReadiness {
  name: string;
  ready: boolean;
  detail: string;
  /** Stable error code when not ready (e.g. MEDIATION_UNREACHABLE). */
  code?: string;
}

export interface SupervisorService {
  /** Short name for logs and `status` (e.g. "network"). */
  readonly name: string;
  beforeLaunch?(spec: VmLaunchSpec): Promise<VmLaunchSpec> | VmLaunchSpec;
  afterLaunch?(ctx: ServiceContext): Promise<void>;
  bootConfig?(config: Record<string, unknown>): Promise<Record<string, unknown>> | Record<string, unknown>;
  onRunning?(ctx: ServiceContext): Promise<void> | void;
  sever?(reason: string): void;
  stop?(): Promise<void> | void;
  /** What `status` and `network` show for this service (JSON-serialisable). */
  describe?(): Record<string, unknown>;
  readiness?(): Promise<ServiceReadiness[]> | ServiceReadiness[];
}

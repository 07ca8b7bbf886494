/**
 * Supervisor services: per-VM components that live inside the supervisor next to the VM (the
 * userspace network stack, the egress mediator, port forwards, secret delivery, snapshots) and
 * plug into its lifecycle at fixed points instead of being threaded through `Supervisor` by hand.
 *
 * Services come from `servicesFor()` (services.ts) and reach the supervisor as `SupervisorDeps.services`.
 * The supervisor calls each hook on every service in registration order (the reverse order for
 * `stop`), awaiting each one:
 *
 *   beforeLaunch(spec) -> spec   before the VMM starts: add a NIC attachment, open listeners the VMM
 *                                connects to. A throw fails the boot closed: no VMM is started, the
 *                                workspace is recorded `failed` with the service's error.
 *   afterLaunch(ctx)             the VMM process exists (QMP is up): wait for what the VMM reports
 *                                (e.g. NETDEV_STREAM_CONNECTED), inside the boot deadline. A throw
 *                                (or the VM dying meanwhile) fails the boot closed.
 *   bootConfig(config) -> config before the boot config goes to the guest: add per-boot settings the
 *                                guest applies (eth0 address, resolv.conf, CA bundle, secrets). A
 *                                throw fails the boot closed.
 *   onRunning(ctx)               the guest is up and the workspace is recorded `running`; `start`
 *                                returns after every onRunning settled. A throw is logged, not fatal.
 *   sever(reason)                quarantine: cut every host path at once, synchronously, before the
 *                                VM is frozen; later input from the guest is dropped. A throw is
 *                                logged and the next service is severed anyway.
 *   stop()                       the VM is gone (exit, kill, halt, boot failure: every path): release
 *                                sockets, timers and files. Called once, in reverse order, on every
 *                                service whose beforeLaunch was called (the one that threw included),
 *                                before the supervisor reports its final state as done. Bounded (5 s
 *                                each); a throw is logged.
 *
 * Every hook of a boot step is bounded by what is left of the boot deadline. A service reports what
 * it knows for `status`/`network` through `describe()` (served by the `services` control op as
 * `{[name]: describe()}`); readiness problems go through `readiness()` (e.g. a required mediation
 * target that does not answer), merged into the readiness report under each probe's name.
 */
import type { RunningVm, VmLaunchSpec } from "../backend/types.ts";

export interface ServiceContext {
  /** The workspace's name. */
  readonly workspace: string;
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

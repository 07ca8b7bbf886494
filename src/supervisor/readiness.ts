/**
 * The readiness prober behind `readiness` (and so `status`): each probe is a real round trip, and a
 * probe reports ready only for what it saw work.
 *
 *   guestReady   the handshake is done and the supervisor is running
 *   execReady    the guest's event loop answered a ping AND a no-op exec actually ran a process
 *                (`true`; for an image without it, the shell probe's process counts). An exec that
 *                came back `failed_to_start` proves the round trip but not that exec can run anything,
 *                so it is not ready, and the error says what failed to start.
 *   shellReady   `<shell> -c 'exit 0'` exited 0
 *   resultReady  the workload reported a result
 *
 * plus one probe per name a supervisor service reports (`ServiceReadiness`).
 */
import type { MicroagentError } from "../contract/errors.ts";
import type { GuestLink } from "./guest-link.ts";
import type { ExecResult, Readiness, ReadinessProbe, WorkloadResult } from "./protocol.ts";
import type { SupervisorService } from "./service.ts";

export const DEFAULT_PROBE_TIMEOUT_MS = 5000;

export interface ReadinessInput {
  /** The guest link, when the handshake is done and the phase lets the host reach the guest. */
  link: GuestLink | undefined;
  /** Why the guest is not reachable (e.g. `phase booting`), when `link` is absent. */
  unreachable?: string;
  /** When the handshake completed (ISO). */
  guestReadyAt?: string;
  /** Set while the VMM paused the VM on a failed disk write: nothing in the guest can answer. */
  ioPaused?: MicroagentError;
  workload: WorkloadResult | undefined;
  shell: string;
  services: readonly SupervisorService[];
  /** Bound of each probe (default 5 s). */
  timeoutMs?: number;
  log?(message: string): void;
}

const BUILT_IN = new Set(["guestReady", "execReady", "shellReady", "resultReady"]);

function probe(ready: boolean, detail?: string, error?: string): ReadinessProbe {
  return { ready, observedAt: new Date().toISOString(), ...(detail ? { detail } : {}), ...(error ? { error } : {}) };
}

function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_r, rej) => {
    timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** A process ran: it exited (any code), was signalled or timed out. */
function ran(r: ExecResult): boolean {
  return r.status !== "failed_to_start";
}

export function describeResult(r: WorkloadResult): string {
  if (!r.ran) return "no workload";
  if (r.startError) return `failed to start: ${r.startError}`;
  if (r.signal) return `killed by ${r.signal}`;
  return `exited with code ${r.exitCode}`;
}

export async function probeReadiness(input: ReadinessInput): Promise<Readiness> {
  const limit = input.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS;
  const resultReady = input.workload ? probe(true, describeResult(input.workload)) : probe(false, "no workload result yet");
  const services = await serviceProbes(input.services, limit, input.log);
  if (input.ioPaused) {
    // Paused by the VMM on a failed disk write: nothing in the guest can answer; say why.
    const why = input.ioPaused;
    const paused = probe(false, undefined, `${why.code}: ${why.message}. ${why.remediation}`);
    return { ...services, guestReady: paused, execReady: paused, shellReady: paused, resultReady };
  }
  const link = input.link;
  if (!link) {
    const down = probe(false, "guest not running");
    return { ...services, guestReady: probe(false, input.unreachable ?? "guest not running"), execReady: down, shellReady: down, resultReady };
  }
  const guestReady = probe(true, `handshake at ${input.guestReadyAt ?? "?"}`);
  let pingMs: number;
  try {
    pingMs = await bounded(link.ping(limit), limit, "a ping round trip");
  } catch (e) {
    const err = (e as Error).message;
    return { ...services, guestReady, execReady: probe(false, undefined, `ping: ${err}`), shellReady: probe(false, undefined, `ping: ${err}`), resultReady };
  }
  const started = Date.now();
  let noop: ExecResult | Error;
  try {
    noop = await bounded(link.exec({ argv: ["true"], timeoutMs: limit }, undefined), limit, "a no-op exec");
  } catch (e) {
    noop = e as Error;
  }
  const noopMs = Date.now() - started;
  let shellReady: ReadinessProbe;
  let shellRan = false;
  try {
    const r = await bounded(link.exec({ argv: [input.shell, "-c", "exit 0"], timeoutMs: limit }, undefined), limit, "a shell");
    shellRan = ran(r);
    shellReady = r.status === "exited" && r.exitCode === 0 ? probe(true, `${input.shell} answered`) : probe(false, `${input.shell}: ${r.status}${r.error ? ` ${r.error}` : ""}`);
  } catch (e) {
    shellReady = probe(false, undefined, (e as Error).message);
  }
  let execReady: ReadinessProbe;
  if (noop instanceof Error) execReady = probe(false, `ping ${pingMs.toFixed(1)} ms`, `no-op exec: ${noop.message}`);
  else if (ran(noop)) execReady = probe(true, `ping ${pingMs.toFixed(1)} ms; no-op exec ${noop.status} in ${noopMs} ms`);
  else if (shellRan) execReady = probe(true, `ping ${pingMs.toFixed(1)} ms; no-op exec \`true\` failed to start (${noop.error ?? "no reason"}), ${input.shell} ran`);
  else execReady = probe(false, `ping ${pingMs.toFixed(1)} ms, but no process could be started`, `no-op exec failed_to_start: ${noop.error ?? "no reason given"}`);
  return { ...services, guestReady, execReady, shellReady, resultReady };
}

/** Each service's probes, under their own names; a service that throws reports one failed probe under its name. */
async function serviceProbes(services: readonly SupervisorService[], limit: number, log?: (m: string) => void): Promise<Record<string, ReadinessProbe>> {
  const out: Record<string, ReadinessProbe> = {};
  for (const s of services) {
    if (!s.readiness) continue;
    try {
      for (const r of await bounded(Promise.resolve(s.readiness()), limit, `service ${s.name}'s readiness`)) {
        if (BUILT_IN.has(r.name) || r.name in out) {
          log?.(`service ${s.name}: readiness name ${r.name} is taken; dropped`);
          continue;
        }
        out[r.name] = probe(r.ready, r.detail, r.ready ? undefined : `${r.code ?? "SERVICE_NOT_READY"}: ${r.detail}`);
      }
    } catch (e) {
      out[`${s.name}Ready`] = probe(false, undefined, `service ${s.name}: ${(e as Error).message}`);
    }
  }
  return out;
}

/**
 * Option parsers shared by the workspace commands (create, run, start, wait, ...). Each throws
 * commander's InvalidArgumentError echoing the bad value, so a bad flag is a usage error (exit 2)
 * raised while commander parses, before the command does anything (no probe, no note, no file).
 */
import { InvalidArgumentError, type Command } from "commander";
import { parseDurationMs } from "../duration.ts";
import { PROFILE_NAMES, RESOURCE_LIMITS, type ProfileName } from "../../workspace/profiles.ts";
import { suggest } from "../globals.ts";
import { parseSecretRef, type SecretRef } from "../../secrets/ref.ts";
import { parseAddHost, parseDnsUpstream, parseEgressAllow, parsePublish, type AddHost, type DnsUpstream, type NetworkMode, type PortForward } from "../../workspace/network.ts";

export function parseWholeNumber(what: string, min: number, max: number): (value: string) => number {
  return (value: string) => {
    if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`'${value}' is not a whole number (${what})`);
    const n = Number(value);
    if (n < min || n > max) throw new InvalidArgumentError(`'${value}' is out of range for ${what} (${min}-${max})`);
    return n;
  };
}

export const parseMemoryMib = parseWholeNumber("memory in MiB", RESOURCE_LIMITS.memoryMib.min, RESOURCE_LIMITS.memoryMib.max);
export const parseCpus = parseWholeNumber("vCPUs", RESOURCE_LIMITS.cpus.min, RESOURCE_LIMITS.cpus.max);
export const parseSizeMib = parseWholeNumber("disk size in MiB", RESOURCE_LIMITS.sizeMib.min, RESOURCE_LIMITS.sizeMib.max);

/** Longest duration a flag may name: Node timers overflow past 2^31-1 ms (and then fire at once). */
export const MAX_DURATION_MS = 2 ** 31 - 1;

/**
 * A duration flag (`30` seconds, `500ms`, `30s`, `5m`, `1h`) in milliseconds. `allowZero` is for
 * flags where 0 means "no limit" (`wait --timeout 0`); elsewhere 0 would be a timeout that has
 * already expired.
 */
export function parseDurationFlag(what: string, options: { allowZero?: boolean } = {}): (value: string) => number {
  return (value: string) => {
    let ms: number;
    try {
      ms = parseDurationMs(value, what);
    } catch {
      throw new InvalidArgumentError(`'${value}' is not a duration (${what}): expected a number of seconds or a value like 500ms, 30s, 5m, 1h`);
    }
    if (ms === 0 && !options.allowZero) throw new InvalidArgumentError(`'${value}' is not a usable ${what}: it must be more than 0`);
    if (ms > MAX_DURATION_MS) throw new InvalidArgumentError(`'${value}' is too long for ${what} (at most ${Math.floor(MAX_DURATION_MS / 3_600_000)}h)`);
    return ms;
  };
}

/** A duration in milliseconds as a user would write it back: 500ms, 30s, 5m, 1.5h. */
export function formatDurationMs(ms: number): string {
  if (ms < 1000 || ms % 1000 !== 0) return `${ms}ms`;
  const s = ms / 1000;
  if (s < 60 || s % 60 !== 0) return `${s}s`;
  const m = s / 60;
  return m < 60 || m % 60 !== 0 ? `${m}m` : `${m / 60}h`;
}

export function parseProfile(value: string): ProfileName {
  if (!(PROFILE_NAMES as readonly string[]).includes(value)) {
    throw new InvalidArgumentError(`'${value}' is not a profile${suggest(value, PROFILE_NAMES)}; expected one of ${PROFILE_NAMES.join(", ")}`);
  }
  return value as ProfileName;
}

/** Repeatable `-e KEY=VALUE`: accumulates into a map (later wins). */
export function collectEnv(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const eq = value.indexOf("=");
  if (eq <= 0) throw new InvalidArgumentError(`'${value}' is not KEY=VALUE`);
  const key = value.slice(0, eq);
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new InvalidArgumentError(`'${key}' is not a valid environment variable name`);
  return { ...previous, [key]: value.slice(eq + 1) };
}

/**
 * Repeatable `--secret NAME=SOURCE[@HOST,...]`, `file:` paths against the cwd; a later flag of
 * the same name replaces the earlier one (as `-e` does). A malformed one throws our USAGE error
 * rather than commander's InvalidArgumentError: commander's message would echo the argument, and
 * a value typed where a source belongs (`--secret TOKEN=sk-...`) must not be printed back.
 */
export function collectSecret(value: string, previous: SecretRef[] = []): SecretRef[] {
  const ref = parseSecretRef(value, { baseDir: process.cwd(), what: "--secret" });
  return [...previous.filter((r) => r.name !== ref.name), ref];
}

/** Repeatable string flag (e.g. `--setup CMD`), in order. */
export function collectList(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function parseNetworkMode(value: string): "isolated" | "user" {
  if (value !== "isolated" && value !== "user") throw new InvalidArgumentError(`'${value}' is not a network mode; expected user (the default: a NIC through the supervisor's network stack) or isolated (no NIC)`);
  return value;
}

/** The library's parser as a commander one: a bad value is a usage error echoing it. */
function usage<T>(parse: (v: string) => T): (v: string) => T {
  return (v) => {
    try {
      return parse(v);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
  };
}

function collectWith<T>(parse: (v: string) => T): (v: string, previous?: T[]) => T[] {
  const p = usage(parse);
  return (v, previous = []) => [...previous, p(v)];
}

/** The network flags `create` and `run` share. */
export interface NetworkFlags {
  network?: NetworkMode;
  addHost?: AddHost[];
  dns?: DnsUpstream;
  egressAllow?: string[];
  publish?: PortForward[];
}

export function addNetworkOptions(cmd: Command): Command {
  return cmd
    .option("--network <mode>", "network mode: user (default: a NIC behind the supervisor's userspace network stack) or isolated (no NIC)", parseNetworkMode)
    .option("--add-host <NAME:IP>", "resolve NAME to IP in the guest (repeatable); also allows that address", collectWith(parseAddHost))
    .option("--dns <IP[:PORT]>", "upstream resolver the workspace's DNS forwards to (default: the host's resolvers)", usage(parseDnsUpstream))
    .option("--egress-allow <ADDR[:PORT]|CIDR|host.microagent.internal:PORT>", "allow an inside destination (private, loopback, link-local; repeatable); host.microagent.internal:PORT reaches the host's 127.0.0.1:PORT", collectWith(parseEgressAllow))
    .option("-p, --publish <[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp]>", "publish a guest TCP port on the host (repeatable; default bind 127.0.0.1)", collectWith(parsePublish));
}

/** NetworkFlags as the library's option names, omitting what was not given. */
export function networkOptions(o: NetworkFlags): { network?: NetworkMode; addHosts?: AddHost[]; dns?: DnsUpstream; egressAllow?: string[]; forwards?: PortForward[] } {
  return {
    ...(o.network !== undefined ? { network: o.network } : {}),
    ...(o.addHost !== undefined ? { addHosts: o.addHost } : {}),
    ...(o.dns !== undefined ? { dns: o.dns } : {}),
    ...(o.egressAllow !== undefined ? { egressAllow: o.egressAllow } : {}),
    ...(o.publish !== undefined ? { forwards: o.publish } : {}),
  };
}

/** The resource and rootfs-build flags `create` and `run` share. */
export interface ResourceFlags {
  profile?: ProfileName;
  memory?: number;
  cpus?: number;
  sizeMib?: number;
  mke2fs?: string;
  debugfs?: string;
}

export function addResourceOptions(cmd: Command): Command {
  return cmd
    .option("--profile <name>", "resources: tiny, small (default), medium, large", parseProfile)
    .option("--memory <mib>", "guest memory in MiB (overrides the profile)", parseMemoryMib)
    .option("--cpus <n>", "vCPUs (overrides the profile)", parseCpus)
    .option("--size-mib <mib>", "disk size in MiB (overrides the profile)", parseSizeMib)
    .option("--mke2fs <path>", "mke2fs to build the image's root filesystem with (when it is not cached yet)")
    .option("--debugfs <path>", "debugfs for the same build");
}

/** ResourceFlags as the library's option names, omitting what was not given. */
export function resourceOptions(o: ResourceFlags): { profile?: ProfileName; memoryMib?: number; cpus?: number; sizeMib?: number; mke2fs?: string; debugfs?: string } {
  return {
    ...(o.profile !== undefined ? { profile: o.profile } : {}),
    ...(o.memory !== undefined ? { memoryMib: o.memory } : {}),
    ...(o.cpus !== undefined ? { cpus: o.cpus } : {}),
    ...(o.sizeMib !== undefined ? { sizeMib: o.sizeMib } : {}),
    ...(o.mke2fs !== undefined ? { mke2fs: o.mke2fs } : {}),
    ...(o.debugfs !== undefined ? { debugfs: o.debugfs } : {}),
  };
}

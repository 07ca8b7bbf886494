/**
 * Option parsers shared by the workspace commands (create, run, start, wait, ...). Each throws
 * commander's InvalidArgumentError echoing the bad value, so a bad flag is a usage error (exit 2)
 * raised while commander parses, before the command does anything (no probe, no note, no file).
 */
import { readFileSync } from "node:fs";
import { InvalidArgumentError, Option, type Command } from "commander";
import { CommonErrors } from "../../contract/errors.ts";
import { parseDurationMs } from "../duration.ts";
import { PROFILE_NAMES, RESOURCE_LIMITS, type ProfileName } from "../../workspace/profiles.ts";
import { suggest } from "../globals.ts";
import { parseSecretRef, type SecretRef } from "../../secrets/ref.ts";
import { resolve } from "node:path";
import { parseAddHost, parseDnsUpstream, parseEgressAllow, parseEgressPassthrough, parsePublish, type AddHost, type DnsUpstream, type EgressInputs, type NetworkMode, type PortForward } from "../../workspace/network.ts";
import { parseByteSize, parseEgressMode, parseMediation, parsePositiveInt } from "../../egress/flags.ts";
import type { EgressMode } from "../../egress/policy.ts";

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
  if (value === "host" || value === "bridge" || value === "none" || value.startsWith("container:")) {
    throw new InvalidArgumentError(
      `--network ${value} is docker's; a workspace is a VM with its own network stack: use user (a NIC behind the supervisor's stack; publish ports with -p) or isolated (no NIC, docker's none)`,
    );
  }
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
  egress?: EgressMode;
  egressPassthrough?: string[];
  egressUpstreamCa?: string[];
  egressMaxConns?: number;
  egressMaxTotalBytes?: number;
  mediation?: string[];
  mediationOptional?: boolean;
}

export function addNetworkOptions(cmd: Command): Command {
  return cmd
    .option("--network <mode>", "network mode: user (default: a NIC behind the supervisor's userspace network stack) or isolated (no NIC)", parseNetworkMode)
    .option("--add-host <NAME:IP>", "resolve NAME to IP in the guest (repeatable); also allows that address", collectWith(parseAddHost))
    .option("--dns <IP[:PORT]>", "upstream resolver the workspace's DNS forwards to (default: the host's resolvers)", usage(parseDnsUpstream))
    .option("--egress <mode>", "egress mediation: guarded (default: public allowed, TLS intercepted with the workspace CA, every flow audited), strict (only --egress-allow destinations) or off (plain NAT, no CA, no audit)", usage(parseEgressMode))
    .option(
      "--egress-allow <HOST|.SUFFIX|ADDR[:PORT]|CIDR>",
      "allow a destination (repeatable): names and suffixes for strict, addresses and CIDRs for inside destinations (denied otherwise); host.microagent.internal:PORT reaches the host's 127.0.0.1:PORT",
      collectWith(parseEgressAllow),
    )
    .option("--egress-passthrough <HOST|.SUFFIX>", "forward TLS to HOST untouched after the SNI check (pinned clients, mutual TLS; repeatable): audited, not intercepted", collectWith(parseEgressPassthrough))
    .option("--egress-upstream-ca <FILE>", "PEM CA the mediator also trusts for upstream TLS (private or corporate servers; repeatable; read at every start)", collectWith((v) => resolve(v)))
    .option("--egress-max-conns <n>", "concurrent mediated TCP connections (default 256)", usage((v) => parsePositiveInt("--egress-max-conns", v)))
    .option("--egress-max-total-bytes <size>", "bytes both ways over the workspace's life, e.g. 500M or 50GiB (default: no cap)", usage((v) => parseByteSize("--egress-max-total-bytes", v)))
    .option("--mediation <GUEST_PORT=HOST:PORT>", "relay the guest's connections to GUEST_PORT on mediation.microagent.internal to the host listener HOST:PORT (repeatable; required: readiness reports mediationReady)", collectWith((v) => parseMediation(v).source))
    .option("--mediation-optional", "let the workspace run without its mediation listener (development only: the channel is fail-closed for a reason)")
    .option("-p, --publish <[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp]>", "publish a guest TCP port on the host (repeatable; default bind 127.0.0.1)", collectWith(parsePublish));
}

/** The egress flags as the library's `egress` option (undefined when none was given). */
export function egressInputs(o: NetworkFlags): EgressInputs | undefined {
  const e: EgressInputs = {
    ...(o.egress !== undefined ? { mode: o.egress } : {}),
    ...(o.egressPassthrough !== undefined ? { passthrough: o.egressPassthrough } : {}),
    ...(o.egressUpstreamCa !== undefined ? { upstreamCa: o.egressUpstreamCa } : {}),
    ...(o.egressMaxConns !== undefined ? { maxConns: o.egressMaxConns } : {}),
    ...(o.egressMaxTotalBytes !== undefined ? { maxTotalBytes: o.egressMaxTotalBytes } : {}),
    ...(o.mediation !== undefined ? { mediation: o.mediation } : {}),
    ...(o.mediationOptional ? { mediationOptional: true } : {}),
  };
  return Object.keys(e).length ? e : undefined;
}

/** NetworkFlags as the library's option names, omitting what was not given. */
export function networkOptions(o: NetworkFlags): { network?: NetworkMode; addHosts?: AddHost[]; dns?: DnsUpstream; egressAllow?: string[]; forwards?: PortForward[]; egress?: EgressInputs } {
  const egress = egressInputs(o);
  return {
    ...(egress !== undefined ? { egress } : {}),
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

/**
 * Repeatable `--env-file FILE`, in docker's format: one `KEY=VALUE` per line, taken verbatim (no
 * quote or escape processing, trailing spaces kept); `KEY` alone takes the host's value and is left
 * out when the host has none; blank lines and lines starting with `#` are skipped. Files are read in
 * order, a later one winning; `-e` flags win over every file (the command merges them last).
 */
export function collectEnvFile(path: string, previous: Record<string, string> = {}): Record<string, string> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new InvalidArgumentError(`'${path}' cannot be read (${code === "ENOENT" ? "no such file" : (code ?? (e as Error).message)})`);
  }
  return { ...previous, ...parseEnvFile(text, path) };
}

/** The body of an env file (see collectEnvFile); `where` names it in errors. Pure, but for the host's env. */
export function parseEnvFile(text: string, where: string, hostEnv: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const env: Record<string, string> = {};
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.replace(/^\s+/, "");
    if (line === "" || line.startsWith("#")) return;
    const eq = line.indexOf("=");
    const key = eq < 0 ? line.replace(/\s+$/, "") : line.slice(0, eq);
    if (key === "") throw new InvalidArgumentError(`${where} line ${i + 1}: no variable name before '='`);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new InvalidArgumentError(`${where} line ${i + 1}: '${key}' is not a valid environment variable name`);
    if (eq >= 0) env[key] = line.slice(eq + 1);
    else if (hostEnv[key] !== undefined) env[key] = hostEnv[key] as string;
  });
  return env;
}

/** Docker flags a workspace cannot honour, and the sentence saying why and what to use instead. */
export const REFUSED_DOCKER_FLAGS: ReadonlyArray<{ flags: string; key: string; why: string }> = [
  { flags: "--privileged", key: "privileged", why: "a workspace is a VM whose guest already runs as root inside its own kernel; there is no host privilege to grant, and the isolation is the point" },
  { flags: "--pid <mode>", key: "pid", why: "the guest has its own kernel, so it cannot share the host's (or another workspace's) process table" },
  { flags: "--ipc <mode>", key: "ipc", why: "the guest has its own kernel, so there is no host IPC namespace to join" },
  { flags: "--uts <mode>", key: "uts", why: "the guest has its own kernel; set its hostname with --hostname on create or hostname: in the spec" },
  { flags: "--userns <mode>", key: "userns", why: "the guest has its own kernel and user database; pick the guest user with -u/--user" },
  { flags: "--device <dev>", key: "device", why: "host devices are not passed into workspaces (the VM sees only its disk, console and channel)" },
  { flags: "--gpus <gpus>", key: "gpus", why: "GPUs are not passed into workspaces" },
  { flags: "--cap-add <cap>", key: "capAdd", why: "capabilities are the guest kernel's business: the command already runs as the guest user you choose with -u (root by default)" },
  { flags: "--cap-drop <cap>", key: "capDrop", why: "capabilities are the guest kernel's business; run the command as an unprivileged guest user with -u instead" },
  { flags: "--security-opt <opt>", key: "securityOpt", why: "host security profiles (seccomp, AppArmor, SELinux) do not apply inside a VM; the VM boundary is the isolation" },
  { flags: "-v, --volume <spec>", key: "volume", why: "host directories are not mounted into workspaces; copy files in with files: in the spec file (microagent.yaml) instead" },
  { flags: "--mount <spec>", key: "mount", why: "host directories are not mounted into workspaces; copy files in with files: in the spec file (microagent.yaml) instead" },
  { flags: "--restart <policy>", key: "restart", why: "workspaces are not restarted on their own; start one again with `microagent start NAME`" },
];

/** Register the refused docker flags (hidden from help): accepted by the parser so refuseDockerFlags can say why. */
export function addRefusedDockerFlags(cmd: Command): Command {
  for (const f of REFUSED_DOCKER_FLAGS) cmd.addOption(new Option(f.flags).hideHelp());
  return cmd;
}

/** A usage error naming the first refused docker flag that was given, with why and what instead. */
export function refuseDockerFlags(command: string, opts: Record<string, unknown>): void {
  for (const f of REFUSED_DOCKER_FLAGS) {
    if (opts[f.key] === undefined) continue;
    const flag = f.flags.replace(/ <.*$/, "").replace(", ", "/");
    throw CommonErrors.USAGE({ message: `${command} does not take docker's ${flag}: ${f.why}`, remediation: `Drop ${flag}; \`microagent ${command} --help\` lists what ${command} takes.` });
  }
}

/**
 * Secret references: `NAME=SOURCE[@HOST[,HOST...]]`, from `--secret` or the spec's `secrets:`.
 * A reference says where a value comes from and how the guest gets it; it never holds the value.
 * The manifest keeps references (SecretRefSchema); values are resolved at every start
 * (resolve.ts) and live only in memory.
 *
 * Grammar:
 *   NAME    an environment-variable-like identifier, [A-Za-z_][A-Za-z0-9_]*, at most 64 characters
 *           (it becomes /run/secrets/NAME and, for swap delivery, the variable NAME in the guest)
 *   SOURCE  env:VAR | file:PATH | cmd:COMMAND
 *   @HOSTS  swap delivery bound to these hosts (comma-separated). The LAST '@' of the reference
 *           starts the host list, always: a path or command that itself contains '@' is written with
 *           a trailing '@' and no hosts (`file:./a@b@`), which means file delivery.
 *
 * Parse failures are usage errors whose messages quote the name, the source kind and the hosts,
 * but never the text of an unrecognised source: `TOKEN=sk-live-...` (a value typed where a source
 * belongs) is the likeliest mistake, and the error must not echo it.
 */
import { domainToASCII } from "node:url";
import { isIP } from "node:net";
import { isAbsolute, resolve } from "node:path";
import { z } from "zod";
import { CommonErrors } from "../contract/errors.ts";

export const SECRET_NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;
export const SECRET_NAME_MAX = 64;
/** A helper command line longer than this is surely not one. */
export const SECRET_COMMAND_MAX = 4096;
/** Hosts one swap secret may be bound to. */
export const SECRET_HOSTS_MAX = 32;

export const SECRET_DELIVERIES = ["file", "swap"] as const;
export type SecretDelivery = (typeof SECRET_DELIVERIES)[number];

const EnvVarName = z.string().regex(SECRET_NAME_PATTERN, "must be an environment variable name");
const AbsolutePath = z.string().min(1).refine((p) => isAbsolute(p) && !p.includes("\0"), "must be an absolute path");

/** Where the value comes from. `file` paths and `cmd` working directories are absolute once parsed. */
export const SecretSourceSchema = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("env"), var: EnvVarName }).strict(),
  z.object({ kind: z.literal("file"), path: AbsolutePath }).strict(),
  z
    .object({
      kind: z.literal("cmd"),
      /** Run with /bin/sh -c; its stdout is the value. */
      command: z.string().min(1).max(SECRET_COMMAND_MAX),
      /** Working directory: the spec file's directory, or the CLI's cwd at create. */
      cwd: AbsolutePath,
    })
    .strict(),
]);
export type SecretSource = z.infer<typeof SecretSourceSchema>;
export type SecretSourceKind = SecretSource["kind"];

/** What the manifest keeps for one secret: never a value. */
export const SecretRefSchema = z
  .object({
    name: z.string().max(SECRET_NAME_MAX).regex(SECRET_NAME_PATTERN, "must be an environment variable name"),
    source: SecretSourceSchema,
    delivery: z.enum(SECRET_DELIVERIES),
    /** Normalised hosts (lower-case ASCII, no trailing dot); empty unless delivery is swap. */
    hosts: z.array(z.string().min(1)).max(SECRET_HOSTS_MAX),
  })
  .strict()
  .refine((r) => (r.delivery === "swap") === r.hosts.length > 0, "swap delivery needs at least one host, file delivery none")
  .refine((r) => r.hosts.every((h) => normalizeHost(h) === h), "hosts must be normalised");
export type SecretRef = z.infer<typeof SecretRefSchema>;

export interface ParseSecretRefOptions {
  /** Directory relative `file:` paths (and `cmd:` commands) are resolved against: the spec's dir, or cwd. */
  baseDir: string;
}

export type ParseSecretRefResult = { ok: true; ref: SecretRef } | { ok: false; reason: string };

/** Parse `NAME=SOURCE[@HOSTS]` without throwing; `reason` never quotes an unrecognised source. */
export function tryParseSecretRef(text: string, options: ParseSecretRefOptions): ParseSecretRefResult {
  const eq = text.indexOf("=");
  if (eq < 0) return { ok: false, reason: "expected NAME=SOURCE (SOURCE is env:VAR, file:PATH or cmd:COMMAND)" };
  const name = text.slice(0, eq);
  const named = checkName(name);
  if (named) return { ok: false, reason: named };
  return tryParseSecretSource(name, text.slice(eq + 1), options);
}

/** Parse the `SOURCE[@HOSTS]` part of a reference for the secret `name` (the spec's map form). */
export function tryParseSecretSource(name: string, text: string, options: ParseSecretRefOptions): ParseSecretRefResult {
  const named = checkName(name);
  if (named) return { ok: false, reason: named };
  const at = text.lastIndexOf("@");
  const sourceText = at < 0 ? text : text.slice(0, at);
  const hostText = at < 0 ? "" : text.slice(at + 1);
  const source = parseSource(name, sourceText, options.baseDir);
  if (!source.ok) return source;
  const hosts: string[] = [];
  if (hostText !== "") {
    for (const raw of hostText.split(",")) {
      if (raw === "") return { ok: false, reason: `secret ${name}: empty host in the list after '@' (write HOST[,HOST...])` };
      const host = normalizeHost(raw);
      if (host === undefined) {
        return {
          ok: false,
          reason: `secret ${name}: '${printable(raw)}' after '@' is not a host name or IP address (the text after the last '@' names the swap hosts; end the reference with '@' if the source itself contains '@')`,
        };
      }
      if (!hosts.includes(host)) hosts.push(host);
    }
    if (hosts.length > SECRET_HOSTS_MAX) return { ok: false, reason: `secret ${name}: ${hosts.length} hosts, at most ${SECRET_HOSTS_MAX}` };
  }
  const ref: SecretRef = { name, source: source.source, delivery: hosts.length > 0 ? "swap" : "file", hosts };
  return { ok: true, ref };
}

/** Parse a reference or throw a USAGE error naming `what` (e.g. `--secret`). */
export function parseSecretRef(text: string, options: ParseSecretRefOptions & { what?: string }): SecretRef {
  const r = tryParseSecretRef(text, options);
  if (r.ok) return r.ref;
  throw CommonErrors.USAGE({
    message: `${options.what ?? "secret reference"}: ${r.reason}`,
    remediation: "Write NAME=SOURCE[@HOST[,HOST...]] with SOURCE env:VAR, file:PATH or cmd:COMMAND (see docs/cli/secret.md).",
  });
}

function checkName(name: string): string | undefined {
  if (name === "") return "the secret has no name: expected NAME=SOURCE";
  if (name.length > SECRET_NAME_MAX) return `secret name '${printable(name.slice(0, 20))}...' is longer than ${SECRET_NAME_MAX} characters`;
  if (!SECRET_NAME_PATTERN.test(name)) return `'${printable(name)}' is not a valid secret name: letters, digits and '_', not starting with a digit`;
  return undefined;
}

type SourceResult = { ok: true; source: SecretSource } | { ok: false; reason: string };

function parseSource(name: string, text: string, baseDir: string): SourceResult {
  const colon = text.indexOf(":");
  const kind = colon < 0 ? "" : text.slice(0, colon);
  const rest = colon < 0 ? "" : text.slice(colon + 1);
  switch (kind) {
    case "env":
      if (!SECRET_NAME_PATTERN.test(rest)) {
        return { ok: false, reason: `secret ${name}: env:${rest === "" ? "" : `'${printable(rest)}'`} must name an environment variable (env:VAR)` };
      }
      return { ok: true, source: { kind: "env", var: rest } };
    case "file":
      if (rest === "") return { ok: false, reason: `secret ${name}: file: needs a path (file:PATH)` };
      if (rest.includes("\0")) return { ok: false, reason: `secret ${name}: the file: path contains a NUL byte` };
      return { ok: true, source: { kind: "file", path: resolve(baseDir, rest) } };
    case "cmd":
      if (rest.trim() === "") return { ok: false, reason: `secret ${name}: cmd: needs a command (cmd:COMMAND)` };
      if (rest.length > SECRET_COMMAND_MAX) return { ok: false, reason: `secret ${name}: the cmd: command is longer than ${SECRET_COMMAND_MAX} characters` };
      if (rest.includes("\0")) return { ok: false, reason: `secret ${name}: the cmd: command contains a NUL byte` };
      return { ok: true, source: { kind: "cmd", command: rest, cwd: resolve(baseDir) } };
    default:
      // Do not quote `text`: it may be the value itself, typed where a source belongs.
      return {
        ok: false,
        reason: `secret ${name}: the source must start with env:, file: or cmd: (values are never given inline; put the value in a variable or file and reference that)`,
      };
  }
}

/**
 * Canonical host form, the one swap bindings are stored and compared in: IDNA (to ASCII via the
 * WHATWG host parser), lower-case, one trailing dot dropped; IPv4 literals as the URL parser
 * canonicalises them, IPv6 literals in brackets. Undefined when it is not a host name or address
 * (ports, paths, wildcards, empty labels are refused).
 */
export function normalizeHost(raw: string): string | undefined {
  let host = raw.trim();
  if (host.endsWith(".") && !host.endsWith("..")) host = host.slice(0, -1);
  if (host === "" || host.length > 253) return undefined;
  if (host.startsWith("[") && host.endsWith("]")) {
    const inner = host.slice(1, -1);
    if (isIP(inner) !== 6) return undefined;
    const ascii = domainToASCII(host); // canonical compressed form, e.g. [::1]
    return ascii === "" ? undefined : ascii;
  }
  if (isIP(host) === 6) return normalizeHost(`[${host}]`);
  // The URL host parser would quietly drop a path ("a/b" -> "a") or percent-decode ("%41" -> "a"):
  // refuse anything that is not plainly a host before handing it over.
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u0020\u007f/\\?#%@:*,[\]<>^|"'`{}]/.test(host)) return undefined;
  const ascii = domainToASCII(host);
  if (ascii === "") return undefined;
  if (isIP(ascii) === 4) return ascii;
  const labels = ascii.split(".");
  if (labels.length === 0 || ascii.length > 253) return undefined;
  for (const label of labels) {
    if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(label)) return undefined;
  }
  return ascii;
}

/** The display form of a source: `env:VAR`, `file:/abs/path`, `cmd:COMMAND`. Safe to print (no value). */
export function describeSource(source: SecretSource): string {
  switch (source.kind) {
    case "env":
      return `env:${source.var}`;
    case "file":
      return `file:${source.path}`;
    case "cmd":
      return `cmd:${source.command}`;
  }
}

/** A reference written back as `NAME=SOURCE[@HOSTS]` (with the trailing '@' when the source holds one). */
export function formatSecretRef(ref: SecretRef): string {
  const src = describeSource(ref.source);
  if (ref.hosts.length > 0) return `${ref.name}=${src}@${ref.hosts.join(",")}`;
  return `${ref.name}=${src}${src.includes("@") ? "@" : ""}`;
}

/**
 * Spec references, then flag references: a flag replaces the spec's secret of the same name (as
 * `-e` overrides `env:` key by key); among flags the later wins. Order: first appearance.
 */
export function mergeSecretRefs(fromSpec: readonly SecretRef[] = [], fromFlags: readonly SecretRef[] = []): SecretRef[] {
  const byName = new Map<string, SecretRef>();
  for (const ref of [...fromSpec, ...fromFlags]) byName.set(ref.name, ref);
  return [...byName.values()];
}

/**
 * The references a new workspace keeps: the spec's merged with the caller's (validated, since a
 * library caller passes objects, not flag text), checked against the network. What create stores.
 */
export function workspaceSecretRefs(
  fromSpec: readonly SecretRef[] | undefined,
  fromCaller: readonly unknown[] | undefined,
  network: SecretNetworkContext,
  /** The workload's own variables (spec `env:` and `-e`): a swap secret's variable must not shadow one. */
  envKeys: readonly string[] = [],
): SecretRef[] {
  const parsed = z.array(SecretRefSchema).safeParse(fromCaller ?? []);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw CommonErrors.INVALID_ARGUMENT({
      message: `invalid secret reference: secrets.${issue?.path.join(".")}: ${issue?.message}`,
      remediation: "Build references with parseSecretRef (NAME=SOURCE[@HOST,...]).",
    });
  }
  const refs = mergeSecretRefs(fromSpec, parsed.data);
  assertSecretDelivery(refs, network);
  const clash = refs.filter((r) => r.delivery === "swap" && envKeys.includes(r.name));
  if (clash.length > 0) {
    throw CommonErrors.USAGE({
      message: `swap secret${clash.length > 1 ? "s" : ""} ${clash.map((r) => r.name).join(", ")} would set the variable of the same name, which -e / env: also sets`,
      remediation: "Rename the secret or drop the environment variable: the guest gets the secret's placeholder in the variable NAME.",
    });
  }
  return refs;
}

/** The network settings swap delivery depends on (egress arrives with the user network). */
export interface SecretNetworkContext {
  mode: string;
  egress?: string;
}

/**
 * Swap delivery works only where the egress mediator intercepts the guest's HTTPS: `user` network
 * with `guarded` or `strict` egress. Anything else is a usage error at create, naming why.
 */
export function assertSecretDelivery(refs: readonly SecretRef[], network: SecretNetworkContext): void {
  const swap = refs.filter((r) => r.delivery === "swap");
  if (swap.length === 0) return;
  const egressOk = network.mode === "user" && (network.egress === "guarded" || network.egress === "strict");
  if (egressOk) return;
  const names = swap.map((r) => `${r.name} (@${r.hosts.join(",")})`).join(", ");
  const why =
    network.mode !== "user"
      ? `network mode '${network.mode}' has no network for the mediator to swap placeholders on`
      : `egress '${network.egress ?? "off"}' does not intercept the guest's requests`;
  throw CommonErrors.USAGE({
    message: `swap delivery of secret${swap.length > 1 ? "s" : ""} ${names} needs --network user with guarded or strict egress: ${why}`,
    remediation: "Drop the '@HOST' suffix to deliver the secret as the file /run/secrets/NAME, or use --network user with guarded or strict egress.",
    details: { secrets: swap.map((r) => r.name), network: network.mode, ...(network.egress !== undefined ? { egress: network.egress } : {}) },
  });
}

/** Control characters shown escaped, so an error message cannot rewrite the terminal. */
function printable(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/**
 * The spec file, `microagent.yaml`: a workspace described in a file instead of flags. Strict: an
 * unknown key is an error naming it (a typo must not be silently ignored), and every `files:`
 * source must exist when the spec is loaded (seed: "files: source missing" is the usual reason an
 * entrypoint exits immediately, so we refuse at create time instead).
 *
 * Sources are resolved relative to the spec file's directory; targets are absolute guest paths.
 */
import { readFile, stat } from "node:fs/promises";
import { dirname, isAbsolute, resolve } from "node:path";
import { z } from "zod";
import { WorkspaceErrors } from "./errors.ts";
import { isErrno } from "../util/fs.ts";
import { sha256Bytes, sha256FileCached } from "../util/hash.ts";
import { NetworkModeSchema, type BootFile, type NetworkMode } from "./manifest.ts";
import { ProfileNameSchema, RESOURCE_LIMITS, type ProfileName } from "./profiles.ts";
import { tryParseSecretRef, tryParseSecretSource, type SecretRef } from "../secrets/ref.ts";
import { EgressModeSchema, parseAddHost, parseDnsUpstream, parseEgressAllow, parseEgressPassthrough, parsePublish, type EgressInputs, type NetworkInputs } from "./network.ts";
import { parseByteSize, parseMediation, parsePositiveInt } from "../egress/flags.ts";

/** Alias expansions allowed while reading a spec file (the yaml package's default is 100). */
const MAX_YAML_ALIAS_COUNT = 100;

export const ENV_KEY_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** One RFC 1123 label (what the guest's sethostname gets), at most 63 characters. */
export const HOSTNAME_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i;

const FileEntrySchema = z
  .object({
    source: z.string().min(1, "source must not be empty"),
    target: z.string().refine((t) => t.startsWith("/") && !t.split("/").includes(".."), "target must be an absolute guest path without '..'"),
    mode: z
      .string({ error: 'mode must be a quoted octal string such as "0644" (a bare 0644 is read as decimal by YAML 1.2)' })
      .regex(/^0?[0-7]{3,4}$/, "mode must be an octal string such as \"0644\"")
      .optional(),
  })
  .strict();

const ResourcesSchema = z
  .object({
    profile: ProfileNameSchema.optional(),
    memoryMib: z.number().int().min(RESOURCE_LIMITS.memoryMib.min).max(RESOURCE_LIMITS.memoryMib.max).optional(),
    cpus: z.number().int().min(RESOURCE_LIMITS.cpus.min).max(RESOURCE_LIMITS.cpus.max).optional(),
    sizeMib: z.number().int().min(RESOURCE_LIMITS.sizeMib.min).max(RESOURCE_LIMITS.sizeMib.max).optional(),
  })
  .strict();

/** `network:` as a mapping: the mode and the user-mode settings, as the flags write them. */
const NetworkSpecSchema = z
  .object({
    mode: NetworkModeSchema.optional(),
    /** `NAME:IP` entries (--add-host). */
    addHosts: z.array(z.string()).optional(),
    /** `IP[:PORT]` (--dns). */
    dns: z.string().optional(),
    /** --egress-allow entries. */
    egressAllow: z.array(z.string()).optional(),
    /** `[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp]` entries (-p/--publish). */
    forwards: z.array(z.string()).optional(),
  })
  .strict();

/** `egress:` as a mapping (a bare string is the mode): the egress flags, as they are written. */
const EgressSpecSchema = z
  .object({
    mode: EgressModeSchema.optional(),
    /** --egress-allow entries (also accepted as network.egressAllow; give the list once). */
    allow: z.array(z.string()).optional(),
    passthrough: z.array(z.string()).optional(),
    /** PEM files, relative to the spec file's directory. */
    upstreamCa: z.array(z.string()).optional(),
    maxConns: z.union([z.number(), z.string()]).optional(),
    maxTotalBytes: z.union([z.number(), z.string()]).optional(),
  })
  .strict();

/** `mediation:` as a list of `GUEST_PORT=HOST:PORT`, or a mapping with the list and `optional`. */
const MediationSpecSchema = z.union([
  z.array(z.string()),
  z
    .object({
      targets: z.array(z.string()),
      optional: z.boolean().optional(),
    })
    .strict(),
]);

export const SpecSchema = z
  .object({
    image: z.string().min(1).optional(),
    files: z.array(FileEntrySchema).optional(),
    setup: z.array(z.string().min(1)).optional(),
    /** A string is shell form (run by /bin/sh -c); a list is exec form. */
    entrypoint: z.union([z.string().min(1), z.array(z.string()).min(1)]).optional(),
    env: z.record(z.string().regex(ENV_KEY_PATTERN, "env keys must be shell identifiers"), z.union([z.string(), z.number(), z.boolean()])).optional(),
    resources: ResourcesSchema.optional(),
    network: z.union([NetworkModeSchema, NetworkSpecSchema]).optional(),
    egress: z.union([EgressModeSchema, EgressSpecSchema]).optional(),
    mediation: MediationSpecSchema.optional(),
    hostname: z.string().regex(HOSTNAME_PATTERN, "hostname must be one RFC 1123 label: letters, digits and inner '-', at most 63 characters").optional(),
    /** `NAME: SOURCE[@HOSTS]` (a map) or `- NAME=SOURCE[@HOSTS]` (a list); parsed by secrets/ref.ts. */
    secrets: z
      .union([z.array(z.string({ error: "each secrets entry must be a string NAME=SOURCE[@HOST,...]" })), z.record(z.string(), z.string({ error: "each secret must map to a string SOURCE[@HOST,...]" }))], {
        error: "secrets must be a list of NAME=SOURCE[@HOST,...] strings or a map of NAME: SOURCE[@HOST,...]",
      })
      .optional(),
  })
  .strict();
export type SpecFile = z.infer<typeof SpecSchema>;

/** A loaded spec: validated, file sources resolved to absolute host paths and hashed. */
export interface LoadedSpec {
  path: string;
  dir: string;
  sha256: string;
  image?: string;
  files: BootFile[];
  setup?: string[];
  entrypoint?: string | string[];
  env?: Record<string, string>;
  resources?: { profile?: ProfileName; memoryMib?: number; cpus?: number; sizeMib?: number };
  network?: NetworkMode;
  /** The user-mode settings of a `network:` mapping, parsed. */
  networkOptions?: Omit<NetworkInputs, "mode">;
  hostname?: string;
  /** References only (file: paths and cmd: directories resolved against the spec's dir); never values. */
  secrets?: SecretRef[];
}

/** Validate an already-parsed spec object (no file access except `files:` sources). */
export async function resolveSpec(raw: unknown, specPath: string): Promise<LoadedSpec> {
  const parsed = SpecSchema.safeParse(raw ?? {});
  if (!parsed.success) throw specError(specPath, parsed.error);
  const spec = parsed.data;
  const dir = dirname(resolve(specPath));
  const files: BootFile[] = [];
  for (const [i, entry] of (spec.files ?? []).entries()) {
    const source = isAbsolute(entry.source) ? entry.source : resolve(dir, entry.source);
    let st;
    try {
      st = await stat(source);
    } catch (e) {
      if (isErrno(e, "ENOENT") || isErrno(e, "ENOTDIR")) {
        throw WorkspaceErrors.SPEC_FILE_SOURCE_MISSING({
          message: `${specPath}: files[${i}]: source missing: ${entry.source} (resolved to ${source})`,
          details: { spec: specPath, key: `files[${i}].source`, source: entry.source, resolved: source },
        });
      }
      throw WorkspaceErrors.SPEC_INVALID({
        message: `${specPath}: files[${i}]: source ${JSON.stringify(entry.source)} cannot be read: ${(e as Error).message}`,
        details: { spec: specPath, key: `files[${i}].source` },
        cause: e,
      });
    }
    if (!st.isFile()) {
      throw WorkspaceErrors.SPEC_INVALID({
        message: `${specPath}: files[${i}]: source ${source} is not a regular file (directories are not supported yet)`,
        details: { spec: specPath, key: `files[${i}].source`, resolved: source },
      });
    }
    files.push({
      source,
      target: entry.target,
      mode: entry.mode !== undefined ? Number.parseInt(entry.mode, 8) : st.mode & 0o777,
      sha256: await sha256FileCached(source),
    });
  }
  const secrets = spec.secrets !== undefined ? specSecrets(specPath, dir, spec.secrets) : undefined;
  const env = spec.env ? Object.fromEntries(Object.entries(spec.env).map(([k, v]) => [k, String(v)])) : undefined;
  const network = typeof spec.network === "string" ? spec.network : spec.network?.mode;
  const baseNetworkOptions = typeof spec.network === "object" ? specNetworkOptions(specPath, spec.network) : undefined;
  const egressSpec = specEgress(specPath, dir, spec.egress, spec.mediation, baseNetworkOptions?.egressAllow !== undefined);
  const networkOptions =
    baseNetworkOptions || egressSpec
      ? { ...baseNetworkOptions, ...(egressSpec?.allow ? { egressAllow: egressSpec.allow } : {}), ...(egressSpec?.egress ? { egress: egressSpec.egress } : {}) }
      : undefined;
  return {
    path: resolve(specPath),
    dir,
    sha256: "",
    files,
    ...(spec.image !== undefined ? { image: spec.image } : {}),
    ...(spec.setup !== undefined ? { setup: spec.setup } : {}),
    ...(spec.entrypoint !== undefined ? { entrypoint: spec.entrypoint } : {}),
    ...(env !== undefined ? { env } : {}),
    ...(spec.resources !== undefined ? { resources: spec.resources } : {}),
    ...(network !== undefined ? { network } : {}),
    ...(networkOptions !== undefined ? { networkOptions } : {}),
    ...(spec.hostname !== undefined ? { hostname: spec.hostname } : {}),
    ...(secrets !== undefined ? { secrets } : {}),
  };
}

/** `secrets:` entries as references; a malformed one (or a name given twice in the list form) is SPEC_INVALID. */
function specSecrets(specPath: string, dir: string, raw: string[] | Record<string, string>): SecretRef[] {
  const out: SecretRef[] = [];
  const entries: Array<[key: string, r: ReturnType<typeof tryParseSecretRef>]> = Array.isArray(raw)
    ? raw.map((text, i) => [`secrets[${i}]`, tryParseSecretRef(text, { baseDir: dir })])
    : Object.entries(raw).map(([name, text]) => [`secrets.${name}`, tryParseSecretSource(name, text, { baseDir: dir })]);
  for (const [key, r] of entries) {
    if (!r.ok) throw WorkspaceErrors.SPEC_INVALID({ message: `${specPath}: ${key}: ${r.reason}`, details: { spec: specPath, key } });
    if (out.some((s) => s.name === r.ref.name)) {
      throw WorkspaceErrors.SPEC_INVALID({ message: `${specPath}: ${key}: secret ${r.ref.name} is listed twice`, details: { spec: specPath, key } });
    }
    out.push(r.ref);
  }
  return out;
}

/** Read, parse and validate a spec file. */
export async function loadSpec(specPath: string): Promise<LoadedSpec> {
  let text: string;
  try {
    text = await readFile(specPath, "utf8");
  } catch (e) {
    if (isErrno(e, "ENOENT")) throw WorkspaceErrors.SPEC_NOT_FOUND({ message: `spec file ${specPath} does not exist`, details: { spec: specPath } });
    throw e;
  }
  // yaml is loaded on use: only commands given a spec file pay for it.
  const { parseDocument } = await import("yaml");
  let raw: unknown;
  try {
    const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
    if (doc.errors.length > 0) throw doc.errors[0] ?? new Error("parse error");
    // toJS() expands aliases; the parser refuses an alias bomb here ("Excessive alias count ..."),
    // which is a property of the input file, not a bug of ours.
    raw = doc.toJS({ maxAliasCount: MAX_YAML_ALIAS_COUNT });
  } catch (e) {
    throw WorkspaceErrors.SPEC_INVALID({
      message: `${specPath}: not valid YAML: ${(e instanceof Error ? e.message : String(e)).split("\n")[0] || "parse error"}`,
      details: { spec: specPath },
      cause: e,
    });
  }
  if (raw !== null && raw !== undefined && (typeof raw !== "object" || Array.isArray(raw))) {
    throw WorkspaceErrors.SPEC_INVALID({ message: `${specPath}: the top level must be a mapping of keys (image, files, setup, ...)`, details: { spec: specPath } });
  }
  const loaded = await resolveSpec(raw, specPath);
  loaded.sha256 = sha256Bytes(text);
  return loaded;
}

function specError(specPath: string, error: z.ZodError): Error {
  const issue = error.issues[0];
  if (!issue) return WorkspaceErrors.SPEC_INVALID({ message: `${specPath}: invalid spec` });
  const at = formatPath(issue.path);
  if (issue.code === "unrecognized_keys") {
    const keys = issue.keys.map((k) => (at ? `${at}.${k}` : k));
    return WorkspaceErrors.SPEC_INVALID({
      message: `${specPath}: unknown key${keys.length > 1 ? "s" : ""} ${keys.map((k) => `'${k}'`).join(", ")}`,
      remediation: `Remove or fix the key; accepted keys${at ? ` under ${at}` : ""}: ${acceptedKeys(issue.path).join(", ")} (see docs/spec.md).`,
      details: { spec: specPath, keys },
    });
  }
  return WorkspaceErrors.SPEC_INVALID({
    message: `${specPath}: ${at || "(top level)"}: ${issue.message}`,
    details: { spec: specPath, key: at },
  });
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const p of path) out += typeof p === "number" ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}

function acceptedKeys(path: readonly PropertyKey[]): string[] {
  if (path[0] === "resources") return Object.keys(ResourcesSchema.shape);
  if (path[0] === "files") return Object.keys(FileEntrySchema.shape);
  if (path[0] === "network") return Object.keys(NetworkSpecSchema.shape);
  if (path[0] === "egress") return Object.keys(EgressSpecSchema.shape);
  if (path[0] === "mediation") return ["targets", "optional"];
  return Object.keys(SpecSchema.shape);
}

/** The `network:` mapping's strings through the flags' parsers; a bad entry is SPEC_INVALID naming its key. */
function specNetworkOptions(specPath: string, n: z.infer<typeof NetworkSpecSchema>): Omit<NetworkInputs, "mode"> {
  const at = <T>(key: string, f: () => T): T => {
    try {
      return f();
    } catch (e) {
      throw WorkspaceErrors.SPEC_INVALID({ message: `${specPath}: network.${key}: ${(e as Error).message}`, details: { spec: specPath, key: `network.${key}` }, cause: e });
    }
  };
  return {
    ...(n.addHosts ? { addHosts: n.addHosts.map((v, i) => at(`addHosts[${i}]`, () => parseAddHost(v))) } : {}),
    ...(n.dns !== undefined ? { dns: at("dns", () => parseDnsUpstream(n.dns as string)) } : {}),
    ...(n.egressAllow ? { egressAllow: n.egressAllow.map((v, i) => at(`egressAllow[${i}]`, () => parseEgressAllow(v))) } : {}),
    ...(n.forwards ? { forwards: n.forwards.map((v, i) => at(`forwards[${i}]`, () => parsePublish(v))) } : {}),
  };
}

/** `egress:` and `mediation:` through the flags' parsers; a bad entry is SPEC_INVALID naming its key. */
function specEgress(
  specPath: string,
  dir: string,
  raw: z.infer<typeof EgressSpecSchema> | z.infer<typeof EgressModeSchema> | undefined,
  mediation: z.infer<typeof MediationSpecSchema> | undefined,
  networkAllowGiven: boolean,
): { egress?: EgressInputs; allow?: string[] } | undefined {
  if (raw === undefined && mediation === undefined) return undefined;
  const at = <T>(key: string, f: () => T): T => {
    try {
      return f();
    } catch (e) {
      throw WorkspaceErrors.SPEC_INVALID({ message: `${specPath}: ${key}: ${(e as Error).message}`, details: { spec: specPath, key }, cause: e });
    }
  };
  const e = typeof raw === "string" ? { mode: raw } : (raw ?? {});
  if (e.allow && networkAllowGiven) {
    throw WorkspaceErrors.SPEC_INVALID({ message: `${specPath}: egress.allow and network.egressAllow are the same list; give it once`, details: { spec: specPath, key: "egress.allow" } });
  }
  const targets = Array.isArray(mediation) ? mediation : (mediation?.targets ?? []);
  const out: EgressInputs = {
    ...(e.mode !== undefined ? { mode: e.mode } : {}),
    ...(e.passthrough ? { passthrough: e.passthrough.map((v, i) => at(`egress.passthrough[${i}]`, () => parseEgressPassthrough(v))) } : {}),
    ...(e.upstreamCa ? { upstreamCa: e.upstreamCa.map((p) => (isAbsolute(p) ? p : resolve(dir, p))) } : {}),
    ...(e.maxConns !== undefined ? { maxConns: at("egress.maxConns", () => parsePositiveInt("egress.maxConns", e.maxConns as string | number)) } : {}),
    ...(e.maxTotalBytes !== undefined ? { maxTotalBytes: at("egress.maxTotalBytes", () => parseByteSize("egress.maxTotalBytes", e.maxTotalBytes as string | number)) } : {}),
    ...(targets.length ? { mediation: targets.map((v, i) => at(`mediation[${i}]`, () => parseMediation(v).source)) } : {}),
    ...(!Array.isArray(mediation) && mediation?.optional ? { mediationOptional: true } : {}),
  };
  return {
    ...(Object.keys(out).length ? { egress: out } : {}),
    ...(e.allow ? { allow: e.allow.map((v, i) => at(`egress.allow[${i}]`, () => parseEgressAllow(v))) } : {}),
  };
}

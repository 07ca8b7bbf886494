/**
 * Image references, parsed the way docker reads them: `alpine` is `docker.io/library/alpine:latest`,
 * the first path component is a registry only when it looks like a host (has `.` or `:`, or is
 * `localhost`), and `name@sha256:<hex>` pins content. Pure: no I/O.
 */
import { ImageErrors } from "./errors.ts";

export const DEFAULT_REGISTRY = "docker.io";
/** docker.io is a name, not a host: its registry API lives here. */
export const DOCKER_HUB_API_HOST = "registry-1.docker.io";

export interface ImageRef {
  /** Registry as named in references (`docker.io`, `ghcr.io`, `127.0.0.1:5000`). */
  registry: string;
  /** Repository path inside the registry (`library/alpine`). */
  repository: string;
  /** Tag; undefined for a digest-only reference. */
  tag: string | undefined;
  /** `sha256:<hex>` when the reference pins a digest. */
  digest: string | undefined;
}

// Grammar from the distribution reference spec (docker/distribution reference/regexp.go), re-expressed.
const COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;
const HOST = /^(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)(?::[0-9]+)?$/;
const MAX_NAME = 255;

function invalid(input: string, why: string): never {
  throw ImageErrors.IMAGE_REF_INVALID({ message: `invalid image reference '${input}': ${why}`, details: { ref: input } });
}

export function parseImageRef(input: string): ImageRef {
  const raw = input.trim();
  if (raw === "") invalid(input, "it is empty");
  if (/\s/.test(raw)) invalid(input, "it contains whitespace");
  let rest = raw;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) invalid(input, `digest '${digest}' is not sha256:<64 lowercase hex>`);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf("/");
  const colon = rest.lastIndexOf(":");
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) invalid(input, `tag '${tag}' may hold only letters, digits, '_', '.', '-' (max 128, not starting with '.' or '-')`);
  }
  let registry = DEFAULT_REGISTRY;
  let path = rest;
  const slash = rest.indexOf("/");
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    if (first.includes(".") || first.includes(":") || first === "localhost" || first !== first.toLowerCase()) {
      if (!HOST.test(first)) invalid(input, `registry '${first}' is not a valid host[:port]`);
      registry = first;
      path = rest.slice(slash + 1);
    }
  }
  if (registry === "index.docker.io" || registry === DOCKER_HUB_API_HOST) registry = DEFAULT_REGISTRY;
  if (path === "") invalid(input, "the repository name is missing");
  const components = path.split("/");
  for (const c of components) {
    if (!COMPONENT.test(c)) {
      invalid(input, c !== c.toLowerCase() ? `repository names must be lowercase ('${c}')` : `'${c}' is not a valid repository path component`);
    }
  }
  if (registry === DEFAULT_REGISTRY && components.length === 1) path = `library/${path}`;
  if (`${registry}/${path}`.length > MAX_NAME) invalid(input, `the name is longer than ${MAX_NAME} characters`);
  if (tag === undefined && digest === undefined) tag = "latest";
  return { registry, repository: path, tag, digest };
}

/** `registry/repository` */
export function refName(ref: ImageRef): string {
  return `${ref.registry}/${ref.repository}`;
}

/** The canonical string: `registry/repo:tag`, `registry/repo@digest`, or both. */
export function formatImageRef(ref: ImageRef): string {
  return `${refName(ref)}${ref.tag !== undefined ? `:${ref.tag}` : ""}${ref.digest !== undefined ? `@${ref.digest}` : ""}`;
}

/** The host:port that serves the registry API for this reference's registry. */
export function apiHost(registry: string): string {
  return registry === DEFAULT_REGISTRY ? DOCKER_HUB_API_HOST : registry;
}

/** True when the reference names content by digest (immutable). */
export function isDigestRef(ref: ImageRef): boolean {
  return ref.digest !== undefined;
}

/** Normalize a registry name the user typed for login/logout (`https://index.docker.io/v1/` -> `docker.io`). */
export function normalizeRegistryName(input: string): string {
  let s = input.trim().replace(/^[a-z]+:\/\//i, "");
  s = s.replace(/\/.*$/, "");
  s = s.toLowerCase();
  if (s === "index.docker.io" || s === DOCKER_HUB_API_HOST || s === "registry.hub.docker.com") return DEFAULT_REGISTRY;
  if (!HOST.test(s)) {
    throw ImageErrors.IMAGE_REF_INVALID({ message: `invalid registry '${input}': expected host[:port]`, remediation: "Pass a registry like `ghcr.io` or `127.0.0.1:5000`." });
  }
  return s;
}

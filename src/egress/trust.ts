/**
 * Trust on both sides of the interception.
 *
 * Upstream: the mediator verifies every upstream certificate against the host's roots (Node's
 * bundled Mozilla store plus the system store) and each `--egress-upstream-ca FILE`.
 *
 * Guest: per boot, never baked into the image (DESIGN "TLS"), the guest gets a merged bundle (the
 * workspace CA, plus the host's roots when the workspace has passthrough entries, so clients that
 * *replace* their store with it, such as `requests` with REQUESTS_CA_BUNDLE, still reach passthrough
 * hosts; opensandbox-group/OpenSandbox#884; egress-service.ts decides)
 * and the CA alone, as boot-config `files`, plus the variables each runtime honours
 * (cubeplexai/cubeplex#496: uv/httpx SSL_CERT_FILE, requests REQUESTS_CA_BUNDLE, Node
 * NODE_EXTRA_CA_CERTS, curl CURL_CA_BUNDLE). The bind mount of the bundle over the image's own
 * bundle paths (`GUEST_BUNDLE_PATHS`) is microagent-init's job; the CA key never leaves the host.
 */
import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { getCACertificates } from "node:tls";
import { EgressErrors } from "./errors.ts";
import type { WorkspaceCa } from "./ca.ts";

/** Where the boot config puts the merged bundle and the CA in the guest. */
export const GUEST_BUNDLE_FILE = "/run/microagent/egress/ca-bundle.crt";
export const GUEST_CA_FILE = "/run/microagent/egress/workspace-ca.crt";

/** The image bundle paths the merged bundle is bind-mounted over when they exist (Debian/Ubuntu, Alpine, RHEL/Fedora). */
export const GUEST_BUNDLE_PATHS: readonly string[] = ["/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/cert.pem", "/etc/pki/tls/certs/ca-bundle.crt"];

let hostRoots: string[] | null = null;

/**
 * The host's roots as PEM strings: Node's bundled store plus the system store, each certificate once.
 * The two stores spell the same certificate differently (a trailing newline, line wrapping), and
 * "default" may already include "system": deduplicated by the string, the list held 290 entries for
 * 168 certificates here, and every curl or python process in a guest with passthrough entries parsed
 * the bundle made of it (about 0.9 s per new connection under TCG; bench/egress-bulk.ts).
 */
export function hostRootCertificates(): string[] {
  if (!hostRoots) {
    const stores = [getCACertificates("default")];
    try {
      stores.push(getCACertificates("system"));
    } catch {
      // no system store readable: Node's bundled roots still apply
    }
    hostRoots = uniqueCertificates(stores.flat());
  }
  return hostRoots;
}

/** PEM certificates with repeats removed (same base64 body, whatever the line breaks), first spelling kept, each ending in a newline. */
export function uniqueCertificates(pems: readonly string[]): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const pem of pems) {
    const body = pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, "").replace(/\s+/g, "");
    if (seen.has(body)) continue;
    seen.add(body);
    out.push(pem.endsWith("\n") ? pem : `${pem}\n`);
  }
  return out;
}

/** The `ca` option for upstream `tls.connect`: the host's roots and the `--egress-upstream-ca` certificates. */
export function upstreamTrust(extraPems: readonly string[]): string[] {
  return [...hostRootCertificates(), ...extraPems];
}

/** Reads and checks each `--egress-upstream-ca FILE` (PEM, one or more certificates). */
export async function loadUpstreamCas(files: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (e) {
      throw EgressErrors.EGRESS_FLAG_INVALID({ message: `--egress-upstream-ca ${file}: cannot read it: ${(e as Error).message}`, cause: e, details: { flag: "--egress-upstream-ca", value: file } });
    }
    const pems = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
    if (pems.length === 0) throw EgressErrors.EGRESS_FLAG_INVALID({ message: `--egress-upstream-ca ${file}: no PEM certificate in it`, details: { flag: "--egress-upstream-ca", value: file } });
    for (const p of pems) {
      try {
        new X509Certificate(p);
      } catch (e) {
        throw EgressErrors.EGRESS_FLAG_INVALID({ message: `--egress-upstream-ca ${file}: a certificate does not parse: ${(e as Error).message}`, cause: e, details: { flag: "--egress-upstream-ca", value: file } });
      }
      out.push(`${p}\n`);
    }
  }
  return out;
}

export interface GuestTrust {
  /** The workspace CA certificate (PEM). */
  caPem: string;
  fingerprint256: string;
  /** Host roots + the workspace CA (PEM). */
  bundlePem: string;
  /** Boot-config `files` entries (the bundle and the CA). */
  files: Array<{ path: string; mode: number; contentBase64: string }>;
  /** Boot-config `env` entries (KEY=VALUE). */
  env: string[];
  /** For microagent-init: bind-mount `source` over each of `targets` that exists in the image. */
  bindMounts: Array<{ source: string; targets: readonly string[] }>;
}

/** What the guest needs to trust the workspace CA (see the module comment). */
export function guestTrust(ca: WorkspaceCa, roots: readonly string[] = hostRootCertificates()): GuestTrust {
  const caPem = ca.certPem.endsWith("\n") ? ca.certPem : `${ca.certPem}\n`;
  const bundlePem = `${roots.map((r) => (r.endsWith("\n") ? r : `${r}\n`)).join("")}${caPem}`;
  return {
    caPem,
    fingerprint256: ca.fingerprint256,
    bundlePem,
    files: [
      { path: GUEST_BUNDLE_FILE, mode: 0o644, contentBase64: Buffer.from(bundlePem).toString("base64") },
      { path: GUEST_CA_FILE, mode: 0o644, contentBase64: Buffer.from(caPem).toString("base64") },
    ],
    env: [
      `SSL_CERT_FILE=${GUEST_BUNDLE_FILE}`,
      `REQUESTS_CA_BUNDLE=${GUEST_BUNDLE_FILE}`,
      `CURL_CA_BUNDLE=${GUEST_BUNDLE_FILE}`,
      // Node adds these to its own store (it ignores the system one); the CA alone is enough.
      `NODE_EXTRA_CA_CERTS=${GUEST_CA_FILE}`,
    ],
    bindMounts: [{ source: GUEST_BUNDLE_FILE, targets: GUEST_BUNDLE_PATHS }],
  };
}

/**
 * For a SupervisorService `bootConfig` hook: the boot config with the trust files and variables
 * added (the user's own env entries come later in the list and so win, as boot-config env does).
 */
export function withGuestTrust(config: Record<string, unknown>, t: GuestTrust): Record<string, unknown> {
  const files = Array.isArray(config.files) ? (config.files as unknown[]) : [];
  const env = Array.isArray(config.env) ? (config.env as string[]) : [];
  return { ...config, files: [...files, ...t.files], env: [...t.env, ...env], egressTrust: { bindMounts: t.bindMounts } };
}

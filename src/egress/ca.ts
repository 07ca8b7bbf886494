/**
 * The per-workspace certificate authority that TLS interception presents to the guest, and the
 * leaves it signs on demand. ECDSA P-256 throughout (a signature costs well under a millisecond,
 * where gondolin's per-SNI RSA-2048 took 296 ms). The CA key is host-only: written 0600 next to the
 * workspace's state, never sent to the guest, never logged; the guest only ever gets the
 * certificate. One leaf key per issuer (kept in memory), leaves cached LRU (256 by default), and
 * a bucket on new names so a guest cycling through SNIs cannot make us sign without bound.
 *
 * Certificates are built with our own DER encoder (`der.ts`) and signed with `node:crypto`.
 * Leaves are backdated 24 h (guest clocks drift; superradcompany/microsandbox#969) and short-lived.
 */
import { X509Certificate, type KeyObject, createHash, createPrivateKey, generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { effectiveAddress, parseAddress } from "./address.ts";
import { normalizeHostname } from "./allow.ts";
import * as der from "./der.ts";
import { EgressErrors } from "./errors.ts";
import { isMicroagentError } from "../contract/errors.ts";
import { ensureDir, isErrno, writeFileAtomic } from "../util/fs.ts";

export const CA_KEY_FILE = "egress-ca-key.pem";
export const CA_CERT_FILE = "egress-ca.pem";

const OID = {
  ecPublicKey: "1.2.840.10045.2.1",
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  commonName: "2.5.4.3",
  organization: "2.5.4.10",
  subjectKeyId: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  authorityKeyId: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
  serverAuth: "1.3.6.1.5.5.7.3.1",
} as const;

const HOUR_MS = 3600_000;
const DAY_MS = 24 * HOUR_MS;

export interface WorkspaceCa {
  key: KeyObject;
  cert: X509Certificate;
  certPem: string;
  /** SHA-256 fingerprint as `AA:BB:...` (for the manifest and `status`). */
  fingerprint256: string;
  /** Subject Name DER (the issuer of every leaf). */
  subjectDer: Uint8Array;
  /** Subject key identifier (the authority key identifier of every leaf). */
  keyId: Uint8Array;
  notAfter: Date;
}

function nameDer(commonName: string): Uint8Array {
  return der.sequence(
    der.set(der.sequence(der.oid(OID.organization), der.utf8String("microagent"))),
    der.set(der.sequence(der.oid(OID.commonName), der.utf8String(commonName))),
  );
}

function publicPoint(key: KeyObject): Uint8Array {
  const jwk = key.export({ format: "jwk" });
  if (jwk.kty !== "EC" || jwk.crv !== "P-256" || !jwk.x || !jwk.y) throw new Error("internal: not a P-256 key");
  return Buffer.concat([Uint8Array.of(4), Buffer.from(jwk.x, "base64url"), Buffer.from(jwk.y, "base64url")]);
}

function spkiDer(publicKey: KeyObject): Uint8Array {
  return publicKey.export({ type: "spki", format: "der" });
}

/** RFC 5280 4.2.1.2 method (1): SHA-1 of the subjectPublicKey bits. */
function keyIdentifier(publicKey: KeyObject): Uint8Array {
  return createHash("sha1").update(publicPoint(publicKey)).digest();
}

function extension(id: string, critical: boolean, value: Uint8Array): Uint8Array {
  return der.sequence(der.oid(id), ...(critical ? [der.boolean(true)] : []), der.octetString(value));
}

function serial(): Uint8Array {
  const b = randomBytes(16);
  b[0] = ((b[0] as number) & 0x7f) | 0x40; // positive, and exactly 16 bytes long
  return der.integerBytes(b);
}

const SIG_ALG = der.sequence(der.oid(OID.ecdsaWithSha256));

function signCertificate(tbs: Uint8Array, caKey: KeyObject): Uint8Array {
  const sig = sign("sha256", tbs, caKey);
  return der.sequence(tbs, SIG_ALG, der.bitString(sig));
}

function toPem(d: Uint8Array): string {
  const b64 = Buffer.from(d).toString("base64");
  return `-----BEGIN CERTIFICATE-----\n${b64.replace(/(.{64})/g, "$1\n").replace(/\n$/, "")}\n-----END CERTIFICATE-----\n`;
}

export interface GenerateCaOptions {
  /** Shown in the guest's trust store and in browsers: `microagent egress CA <workspace>`. */
  workspace: string;
  now?: Date;
  validityDays?: number;
}

/** A fresh CA: an ECDSA P-256 key and a self-signed certificate (CA:TRUE, pathlen 0, keyCertSign). */
export function generateCa(o: GenerateCaOptions): { keyPem: string; certPem: string } {
  const now = o.now ?? new Date();
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const name = nameDer(`microagent egress CA ${o.workspace}`.slice(0, 64));
  const kid = keyIdentifier(publicKey);
  const tbs = der.sequence(
    der.explicit(0, der.integer(2)),
    serial(),
    SIG_ALG,
    name,
    der.sequence(der.time(new Date(now.getTime() - DAY_MS)), der.time(new Date(now.getTime() + (o.validityDays ?? 3650) * DAY_MS))),
    name,
    spkiDer(publicKey),
    der.explicit(
      3,
      der.sequence(
        extension(OID.basicConstraints, true, der.sequence(der.boolean(true), der.integer(0))),
        // keyCertSign (bit 5) and cRLSign (bit 6): 0x06 with one unused bit
        extension(OID.keyUsage, true, der.tlv(0x03, Uint8Array.of(1, 0x06))),
        extension(OID.subjectKeyId, false, der.octetString(kid)),
      ),
    ),
  );
  const certDer = signCertificate(tbs, privateKey);
  return { keyPem: privateKey.export({ type: "pkcs8", format: "pem" }) as string, certPem: toPem(certDer) };
}

/** Check a CA key + certificate pair and build the in-memory form. Throws EGRESS_CA_INVALID. */
export function caFromPem(keyPem: string, certPem: string, source = "the egress CA"): WorkspaceCa {
  let key: KeyObject;
  let cert: X509Certificate;
  try {
    key = createPrivateKey(keyPem);
    cert = new X509Certificate(certPem);
  } catch (e) {
    throw EgressErrors.EGRESS_CA_INVALID({ message: `${source} does not parse: ${(e as Error).message}`, cause: e });
  }
  const d = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType !== "ec" || d?.namedCurve !== "prime256v1") {
    throw EgressErrors.EGRESS_CA_INVALID({ message: `${source} key is ${key.asymmetricKeyType} ${d?.namedCurve ?? ""}, not ECDSA P-256` });
  }
  if (!cert.checkPrivateKey(key)) throw EgressErrors.EGRESS_CA_INVALID({ message: `${source} key does not belong to its certificate` });
  if (!cert.ca) throw EgressErrors.EGRESS_CA_INVALID({ message: `${source} certificate is not a CA certificate` });
  // Leaves name the CA's subject as their issuer byte for byte (RFC 5280 name chaining).
  const subjectDer = extractSubject(cert.raw);
  return {
    key,
    cert,
    certPem: cert.toString(),
    fingerprint256: cert.fingerprint256,
    subjectDer,
    keyId: keyIdentifier(cert.publicKey),
    notAfter: new Date(cert.validTo),
  };
}

/** The subject Name of a certificate, as DER (a minimal walk: Certificate -> TBS -> 6th element). */
function extractSubject(certDer: Uint8Array): Uint8Array {
  const read = (b: Uint8Array, at: number): { start: number; end: number; content: number } => {
    let len = b[at + 1] as number;
    let hdr = 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + (b[at + 2 + i] as number);
      hdr = 2 + n;
    }
    return { start: at, content: at + hdr, end: at + hdr + len };
  };
  const certSeq = read(certDer, 0);
  const tbs = read(certDer, certSeq.content);
  let at = tbs.content;
  const els: Array<{ start: number; end: number }> = [];
  while (at < tbs.end && els.length < 6) {
    const el = read(certDer, at);
    els.push(el);
    at = el.end;
  }
  // version [0], serial, signature, issuer, validity, subject
  const subject = certDer[tbs.content] === 0xa0 ? els[5] : els[4];
  if (!subject) throw EgressErrors.EGRESS_CA_INVALID({ message: "the CA certificate has no subject" });
  return certDer.subarray(subject.start, subject.end);
}

/**
 * Load the workspace CA from `dir`, or create it when absent (or expired, or half-written by a
 * crash: key without certificate). The key must be 0600: a key others can read is refused, since
 * whoever holds it can intercept this workspace's TLS.
 */
export async function loadOrCreateCa(dir: string, o: GenerateCaOptions): Promise<WorkspaceCa> {
  const keyPath = join(dir, CA_KEY_FILE);
  const certPath = join(dir, CA_CERT_FILE);
  const now = o.now ?? new Date();
  let keyPem: string | undefined;
  let certPem: string | undefined;
  try {
    const st = await stat(keyPath);
    if ((st.mode & 0o077) !== 0) {
      throw EgressErrors.EGRESS_CA_INVALID({
        message: `${keyPath} is readable by others (mode ${(st.mode & 0o777).toString(8)})`,
        remediation: `Run chmod 600 ${keyPath}, or delete it and ${CA_CERT_FILE} to get a new CA at the next start.`,
        details: { path: keyPath },
      });
    }
    keyPem = await readFile(keyPath, "utf8");
    certPem = await readFile(certPath, "utf8");
  } catch (e) {
    // ENOTDIR: a path component is a file; creating below will fail with the write error.
    if (!isErrno(e, "ENOENT") && !isErrno(e, "ENOTDIR")) {
      if (isMicroagentError(e)) throw e;
      throw EgressErrors.EGRESS_CA_INVALID({ message: `cannot read the egress CA in ${dir}: ${(e as Error).message}`, cause: e });
    }
    keyPem = undefined;
  }
  if (keyPem !== undefined && certPem !== undefined) {
    const ca = caFromPem(keyPem, certPem, keyPath);
    if (ca.notAfter.getTime() - now.getTime() > 30 * DAY_MS) return ca;
  }
  const fresh = generateCa({ ...o, now });
  try {
    await ensureDir(dir);
    // Key first: a crash between the two writes leaves a key without a certificate, which the
    // next load treats as absent and replaces.
    await writeFileAtomic(keyPath, fresh.keyPem, 0o600);
    await writeFileAtomic(certPath, fresh.certPem, 0o600);
  } catch (e) {
    throw EgressErrors.EGRESS_CA_WRITE_FAILED({ message: `cannot write the egress CA to ${dir}: ${(e as Error).message}`, cause: e, details: { path: dir } });
  }
  return caFromPem(fresh.keyPem, fresh.certPem, keyPath);
}

export interface Leaf {
  /** The normalized name or canonical address the leaf is for. */
  name: string;
  certDer: Uint8Array;
  certPem: string;
  /** Leaf then CA, for `tls.createSecureContext({ cert })`. */
  chainPem: string;
  key: KeyObject;
  keyPem: string;
  notBefore: Date;
  notAfter: Date;
}

export interface LeafIssuerOptions {
  cacheSize?: number;
  /** Leaf lifetime after `now` (the backdating comes on top). */
  validityHours?: number;
  backdateHours?: number;
  /** New (uncached) names signed per second at most, with this burst; Infinity disables the cap. */
  newNamesPerSecond?: number;
  newNamesBurst?: number;
  now?: () => number;
}

/** Signs leaves for one CA with one key, caching the last `cacheSize` names. */
export class LeafIssuer {
  readonly cacheSize: number;
  private readonly ca: WorkspaceCa;
  private readonly leafKey: KeyObject;
  private readonly leafKeyPem: string;
  private readonly leafSpki: Uint8Array;
  private readonly leafKeyId: Uint8Array;
  private readonly cache = new Map<string, Leaf>();
  private readonly o: LeafIssuerOptions;
  private tokens: number;
  private lastRefill: number;
  /** Counters for `network`/status output and the tests. */
  readonly stats = { issued: 0, hits: 0, rateLimited: 0 };

  constructor(ca: WorkspaceCa, o: LeafIssuerOptions = {}) {
    this.ca = ca;
    this.o = o;
    this.cacheSize = o.cacheSize ?? 256;
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    this.leafKey = privateKey;
    this.leafKeyPem = privateKey.export({ type: "pkcs8", format: "pem" }) as string;
    this.leafSpki = spkiDer(publicKey);
    this.leafKeyId = keyIdentifier(publicKey);
    this.tokens = o.newNamesBurst ?? 64;
    this.lastRefill = this.now();
  }

  private now(): number {
    return (this.o.now ?? Date.now)();
  }

  get size(): number {
    return this.cache.size;
  }

  /**
   * The leaf for `name` (a DNS name, or an IP address for a guest that sent no SNI), from the
   * cache when it has a day of validity left. Returns null when a new name would exceed the
   * signing rate (the caller refuses the flow with `egress_cap_exceeded`). Throws
   * EGRESS_LEAF_INVALID for something that is neither a name nor an address.
   */
  issue(name: string): Leaf | null {
    const addr = parseAddress(name);
    const key = addr ? effectiveAddress(addr).text : normalizeHostname(name);
    if (!key) throw EgressErrors.EGRESS_LEAF_INVALID({ message: `'${name.slice(0, 80)}' is neither a DNS name nor an IP address`, details: { name: name.slice(0, 255) } });
    const now = this.now();
    const hit = this.cache.get(key);
    if (hit && hit.notAfter.getTime() - now > DAY_MS) {
      this.cache.delete(key);
      this.cache.set(key, hit);
      this.stats.hits++;
      return hit;
    }
    if (!this.takeToken(now)) {
      this.stats.rateLimited++;
      return null;
    }
    const leaf = this.sign(key, addr ? effectiveAddress(addr) : null, now);
    this.cache.delete(key);
    this.cache.set(key, leaf);
    while (this.cache.size > this.cacheSize) this.cache.delete(this.cache.keys().next().value as string);
    this.stats.issued++;
    return leaf;
  }

  private takeToken(now: number): boolean {
    const rate = this.o.newNamesPerSecond ?? 16;
    if (rate === Infinity) return true;
    const burst = this.o.newNamesBurst ?? 64;
    this.tokens = Math.min(burst, this.tokens + (Math.max(0, now - this.lastRefill) / 1000) * rate);
    this.lastRefill = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  private sign(key: string, addr: ReturnType<typeof parseAddress>, now: number): Leaf {
    const notBefore = new Date(now - (this.o.backdateHours ?? 24) * HOUR_MS);
    const wanted = now + (this.o.validityHours ?? 7 * 24) * HOUR_MS;
    const notAfter = new Date(Math.min(wanted, this.ca.notAfter.getTime()));
    let san: Uint8Array;
    if (addr) {
      const bytes = addr.family === 4 ? Uint8Array.of(addr.value >>> 24, (addr.value >>> 16) & 255, (addr.value >>> 8) & 255, addr.value & 255) : addr.bytes;
      san = der.implicitPrimitive(7, bytes);
    } else {
      san = der.implicitPrimitive(2, Buffer.from(key, "ascii"));
    }
    // CN is informational (clients match the SAN); it is capped at 64 characters by X.520.
    const subject = key.length <= 64 ? nameDer(key) : der.sequence(der.set(der.sequence(der.oid(OID.organization), der.utf8String("microagent"))));
    const tbs = der.sequence(
      der.explicit(0, der.integer(2)),
      serial(),
      SIG_ALG,
      this.ca.subjectDer,
      der.sequence(der.time(notBefore), der.time(notAfter)),
      subject,
      this.leafSpki,
      der.explicit(
        3,
        der.sequence(
          extension(OID.basicConstraints, true, der.sequence()),
          // digitalSignature (bit 0): 0x80 with seven unused bits
          extension(OID.keyUsage, true, der.tlv(0x03, Uint8Array.of(7, 0x80))),
          extension(OID.extKeyUsage, false, der.sequence(der.oid(OID.serverAuth))),
          extension(OID.subjectAltName, false, der.sequence(san)),
          extension(OID.subjectKeyId, false, der.octetString(this.leafKeyId)),
          extension(OID.authorityKeyId, false, der.sequence(der.implicitPrimitive(0, this.ca.keyId))),
        ),
      ),
    );
    const certDer = signCertificate(tbs, this.ca.key);
    const certPem = toPem(certDer);
    return { name: key, certDer, certPem, chainPem: certPem + this.ca.certPem, key: this.leafKey, keyPem: this.leafKeyPem, notBefore, notAfter };
  }
}

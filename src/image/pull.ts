/**
 * `pullImage`: registry -> verified blobs in the store -> an index record -> LocalImage.
 * `resolveImage`: the local index first, a pull only when the image is missing.
 */
import { open, rm } from "node:fs/promises";
import { hostArch, type Arch } from "../contract/backend.ts";
import { RegistryClient, headerString, insecureRegistriesFromEnv, readBodyLimited } from "./client.ts";
import { authFilePath, lookupCredentials, readAuthFile } from "./credentials.ts";
import { ImageErrors } from "./errors.ts";
import { bodyError } from "./http-errors.ts";
import { findRecord, storeFor, targetArch, toLocalImage, touchRecord, recordImage, type ImageStoreOptions } from "./images.ts";
import { parseConfig, parseManifest } from "./manifest.ts";
import { formatPlatform, selectPlatform } from "./platform.ts";
import { formatImageRef, parseImageRef, refName } from "./ref.ts";
import { backoffMs, isRetryable, withRetry } from "./retry.ts";
import { mapLimit } from "../util/concurrency.ts";
import { defaultStateDir, type ImageStore } from "./store.ts";
import { MANIFEST_ACCEPT, type Descriptor, type LocalImage } from "./types.ts";
import { DigestVerifier, sha256Digest } from "./verify.ts";
import { setTimeout as sleep } from "node:timers/promises";

export type PullProgress =
  | { type: "resolved"; ref: string; manifestDigest: string; platform: string; layers: number; totalBytes: number }
  | { type: "layer-cached"; digest: string; size: number }
  | { type: "layer-start"; digest: string; size: number }
  | { type: "layer-progress"; digest: string; bytes: number; size: number }
  | { type: "layer-retry"; digest: string; attempt: number; reason: string }
  | { type: "layer-done"; digest: string; size: number };

export interface PullOptions extends ImageStoreOptions {
  /** Target architecture (amd64, arm64; aliases accepted). Default: the host's. */
  arch?: string;
  /** Credentials file (default `$REGISTRY_AUTH_FILE`, else `<stateDir>/auth.json`). */
  authFile?: string;
  /** Extra host[:port] allowed over plain HTTP (default: MICROAGENT_INSECURE_REGISTRIES). */
  insecureRegistries?: string[];
  /** Layers downloaded at once. Default 3. */
  concurrency?: number;
  /** Extra attempts per blob after a transient failure. Default 4. */
  retries?: number;
  /** First retry backoff, ms. Default 250. */
  retryBaseDelayMs?: number;
  /** Called with progress events (the CLI renders them on a TTY). */
  onProgress?: (event: PullProgress) => void;
  signal?: AbortSignal;
  env?: NodeJS.ProcessEnv;
}

export interface ResolvedPullOptions {
  stateDir: string | undefined;
  arch: Arch;
  authFile: string | undefined;
  insecureRegistries: string[];
  concurrency: number;
  retries: number;
  retryBaseDelayMs: number;
  onProgress: (event: PullProgress) => void;
  signal: AbortSignal | undefined;
  env: NodeJS.ProcessEnv;
}

export function resolvePullOptions(o: PullOptions = {}): ResolvedPullOptions {
  const env = o.env ?? process.env;
  return {
    stateDir: o.stateDir,
    arch: o.arch === undefined ? hostArch() : targetArch(o.arch),
    authFile: o.authFile,
    insecureRegistries: o.insecureRegistries ?? insecureRegistriesFromEnv(env),
    concurrency: Math.max(1, o.concurrency ?? 3),
    retries: Math.max(0, o.retries ?? 4),
    retryBaseDelayMs: o.retryBaseDelayMs ?? 250,
    onProgress: o.onProgress ?? (() => undefined),
    signal: o.signal,
    env,
  };
}

/** Manifests and configs are small; a bigger one is hostile or broken. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export async function pullImage(reference: string, options: PullOptions = {}): Promise<LocalImage> {
  const o = resolvePullOptions(options);
  const ref = parseImageRef(reference);
  const stateDir = o.stateDir ?? defaultStateDir();
  const store = storeFor({ stateDir });
  await store.init();
  const authFile = authFilePath(stateDir, { ...(o.authFile !== undefined ? { authFile: o.authFile } : {}), env: o.env });
  const credentials = lookupCredentials(await readAuthFile(authFile), ref.registry);
  const client = new RegistryClient(ref.registry, { credentials, insecureRegistries: o.insecureRegistries, signal: o.signal });
  const name = refName(ref);
  const display = formatImageRef(ref);
  const want = { os: "linux", architecture: o.arch };

  // 1. The manifest named by the reference: an image manifest, or an index to choose from.
  const top = await fetchManifest(client, ref.repository, ref.digest ?? (ref.tag as string), ref.digest, `manifest ${display}`, o);
  let indexDigest: string | undefined;
  let manifestBody = top.body;
  let manifestDigest = top.digest;
  let parsed = top.parsed;
  if (parsed.kind === "index") {
    indexDigest = top.digest;
    const chosen = selectPlatform(parsed.index.manifests, want, display);
    const sub = await fetchManifest(client, ref.repository, chosen.digest, chosen.digest, `manifest ${name}@${chosen.digest} (${formatPlatform(want)})`, o, chosen);
    if (sub.parsed.kind !== "manifest") {
      throw ImageErrors.IMAGE_MANIFEST_INVALID({ message: `${display}: the ${formatPlatform(want)} entry is itself an index (nested indexes are not supported)` });
    }
    manifestBody = sub.body;
    manifestDigest = sub.digest;
    parsed = sub.parsed;
  }
  const manifest = parsed.manifest;

  // 2. The config, verified against its descriptor; the platform check for single-manifest images.
  const configBody = await fetchSmallBlob(client, ref.repository, manifest.config, `config of ${display}`, o);
  const config = parseConfig(configBody, manifest, display);
  if (indexDigest === undefined && targetArch(config.architecture) !== o.arch) {
    throw ImageErrors.IMAGE_PLATFORM_UNAVAILABLE({
      message: `${display} is a ${config.os}/${config.architecture} image, not ${formatPlatform(want)}`,
      details: { wanted: formatPlatform(want), available: [`${config.os}/${config.architecture}`] },
    });
  }
  const totalBytes = manifest.config.size + manifest.layers.reduce((s, l) => s + l.size, 0);
  o.onProgress({ type: "resolved", ref: display, manifestDigest, platform: `${config.os}/${config.architecture}`, layers: manifest.layers.length, totalBytes });

  // 3. Layers, concurrently, each verified while streaming.
  await mapLimit(manifest.layers, o.concurrency, (layer) => downloadBlob(client, store, ref.repository, layer, o));

  // 4. Small documents into the store (verified again by the store), then the record.
  if (indexDigest !== undefined) await store.putBytes(top.body, { digest: indexDigest, size: top.body.length });
  await store.putBytes(manifestBody, { digest: manifestDigest, size: manifestBody.length });
  await store.putBytes(configBody, manifest.config);
  return recordImage(store, {
    ref: ref.tag !== undefined ? `${name}:${ref.tag}` : `${name}@${ref.digest}`,
    resolvedRef: `${name}@${manifestDigest}`,
    manifestDigest,
    indexDigest,
    manifestMediaType: parsed.mediaType,
    config,
    configDigest: manifest.config.digest,
    configSize: manifest.config.size,
    layers: manifest.layers.map((l) => ({ digest: l.digest, mediaType: l.mediaType, size: l.size })),
    source: "registry",
  });
}

export interface ResolveImageOptions extends PullOptions {
  /** false: never contact a registry; a missing image is IMAGE_NOT_LOCAL. Default true. */
  pull?: boolean;
}

/** The local image for `reference` (pulling it only when it is not in the store). */
export async function resolveImage(reference: string, options: ResolveImageOptions = {}): Promise<LocalImage> {
  const ref = parseImageRef(reference);
  const arch = options.arch === undefined ? hostArch() : targetArch(options.arch);
  const store = storeFor(options);
  const record = findRecord(await store.readIndex(), ref, arch);
  if (record) {
    try {
      const image = await toLocalImage(store, record);
      await touchRecord(store, record);
      return image;
    } catch (e) {
      // A record whose blobs went missing is as good as absent: pull again when allowed.
      if (!ImageErrors.IMAGE_BLOB_MISSING.is(e) || options.pull === false) throw e;
    }
  } else if (options.pull === false) {
    throw ImageErrors.IMAGE_NOT_LOCAL({
      message: `image ${formatImageRef(ref)} (${arch}) is not in the local store`,
      remediation: `Run \`microagent image pull ${reference}\` (or \`microagent image load PATH\`) first.`,
      details: { ref: formatImageRef(ref), arch },
    });
  }
  return pullImage(reference, { ...options, arch });
}

interface FetchedManifest {
  body: Buffer;
  digest: string;
  parsed: ReturnType<typeof parseManifest>;
}

async function fetchManifest(
  client: RegistryClient,
  repository: string,
  reference: string,
  expectedDigest: string | undefined,
  what: string,
  o: ResolvedPullOptions,
  descriptor?: Descriptor,
): Promise<FetchedManifest> {
  if (descriptor && descriptor.size > MAX_MANIFEST_BYTES)
    throw ImageErrors.IMAGE_MANIFEST_INVALID({ message: `${what}: the index declares ${descriptor.size} bytes; refusing more than ${MAX_MANIFEST_BYTES}` });
  return retrying(o, client.registry, async () => {
    const res = await client.fetch(repository, `manifests/${reference}`, { accept: MANIFEST_ACCEPT, what });
    const body = await readBodyLimited(res, MAX_MANIFEST_BYTES, what);
    const digest = sha256Digest(body);
    // The content must match the digest we asked for; for a tag, the registry's claim if it made one.
    const claimed = headerString(res.headers["docker-content-digest"]) || undefined;
    const expected = expectedDigest ?? (claimed?.startsWith("sha256:") ? claimed : undefined);
    if (expected !== undefined && digest !== expected) {
      throw ImageErrors.IMAGE_DIGEST_MISMATCH({
        message: `${what}: content digest ${digest} does not match ${expected}`,
        details: { expected, actual: digest },
      });
    }
    if (descriptor && body.length !== descriptor.size) {
      throw ImageErrors.IMAGE_SIZE_MISMATCH({ message: `${what}: ${body.length} bytes, but the index declares ${descriptor.size}` });
    }
    return { body, digest, parsed: parseManifest(body, headerString(res.headers["content-type"]) || undefined, what) };
  });
}

async function fetchSmallBlob(client: RegistryClient, repository: string, d: Descriptor, what: string, o: ResolvedPullOptions): Promise<Buffer> {
  if (d.size > MAX_MANIFEST_BYTES) throw ImageErrors.IMAGE_MANIFEST_INVALID({ message: `${what} declares ${d.size} bytes; refusing more than ${MAX_MANIFEST_BYTES}` });
  return retrying(o, client.registry, async () => {
    const res = await client.fetch(repository, `blobs/${d.digest}`, { what: `${what} (${d.digest})`, blob: true });
    const v = new DigestVerifier(d);
    const chunks: Buffer[] = [];
    try {
      for await (const chunk of res.body) {
        v.update(chunk as Buffer);
        chunks.push(chunk as Buffer);
      }
    } finally {
      res.body.destroy();
    }
    v.finish();
    return Buffer.concat(chunks);
  });
}

async function retrying<T>(o: ResolvedPullOptions, registry: string, fn: () => Promise<T>): Promise<T> {
  return withRetry({ retries: o.retries, baseDelayMs: o.retryBaseDelayMs, signal: o.signal }, async () => {
    try {
      return await fn();
    } catch (e) {
      throw bodyError(e, registry, "a manifest or config");
    }
  });
}

/**
 * Download one layer into the store: stream to a temp file through a DigestVerifier, resume with
 * `Range` after a transient failure (restart when the server ignores it), rename into place only
 * after the digest matched. A digest or size failure deletes the temp file and is not retried.
 */
async function downloadBlob(client: RegistryClient, store: ImageStore, repository: string, d: Descriptor, o: ResolvedPullOptions): Promise<void> {
  if (await store.hasBlob(d.digest, d.size)) {
    o.onProgress({ type: "layer-cached", digest: d.digest, size: d.size });
    return;
  }
  o.onProgress({ type: "layer-start", digest: d.digest, size: d.size });
  const tmp = store.tempPath();
  const fh = await open(tmp, "w+", 0o600);
  const verifier = new DigestVerifier(d);
  let committed = false;
  let lastReport = 0;
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        const resume = verifier.bytes > 0 && verifier.bytes < d.size;
        const res = await client.fetch(repository, `blobs/${d.digest}`, {
          what: `layer ${d.digest}`,
          blob: true,
          headers: resume ? { range: `bytes=${verifier.bytes}-` } : {},
          okStatuses: resume ? [200, 206] : [200],
        });
        if (res.status === 200 && verifier.bytes > 0) {
          // The server sent the whole blob again: start over.
          verifier.reset();
          await fh.truncate(0);
        }
        try {
          for await (const chunk of res.body) {
            const b = chunk as Buffer;
            verifier.update(b);
            await fh.write(b, 0, b.length, verifier.bytes - b.length);
            if (verifier.bytes - lastReport >= 256 * 1024 || verifier.bytes === d.size) {
              lastReport = verifier.bytes;
              o.onProgress({ type: "layer-progress", digest: d.digest, bytes: verifier.bytes, size: d.size });
            }
          }
        } finally {
          res.body.destroy();
        }
        verifier.finish();
        break;
      } catch (thrown) {
        const e = bodyError(thrown, client.registry, `layer ${d.digest}`);
        if (attempt >= o.retries || !isRetryable(e)) throw e;
        o.onProgress({ type: "layer-retry", digest: d.digest, attempt: attempt + 1, reason: (e as Error).message });
        await sleep(backoffMs(attempt, { retries: o.retries, baseDelayMs: o.retryBaseDelayMs }), undefined, { signal: o.signal });
      }
    }
    await fh.sync();
    await fh.close();
    await store.commitBlob(tmp, d.digest);
    committed = true;
    o.onProgress({ type: "layer-done", digest: d.digest, size: d.size });
  } finally {
    if (!committed) {
      await fh.close().catch(() => undefined);
      await rm(tmp, { force: true });
    }
  }
}

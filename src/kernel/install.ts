/**
 * Installing a kernel: resolve the source (the host's package manager by default, or a file/URL the
 * user vouches for with --sha256), extract the kernel image and the modules the guest needs, build the
 * initramfs around the guest init, and install all of it atomically into
 * `<state-dir>/kernels/<backend>/<arch>/` (built in a staging directory, then renamed into place).
 */
import { open, mkdtemp, rename, rm, readFile, writeFile, copyFile, chmod, stat } from "node:fs/promises";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { dirname, join, resolve as resolvePath } from "node:path";
import { hostArch, type Arch, type BackendName } from "../contract/backend.ts";
import { CommonErrors, isMicroagentError } from "../contract/errors.ts";
import { fetchDeb, resolveAptKernel, type AptKernelPlan } from "./apt.ts";
import { KernelErrors } from "./errors.ts";
import { ensureDir, pathExists, writeFileAtomic } from "../util/fs.ts";
import { normalizeSha256, sha256Bytes, sha256File } from "../util/hash.ts";
import { resolveGuestInit } from "./guest-init.ts";
import { buildInitramfs, type InitramfsModule } from "./initramfs.ts";
import { acquireLock } from "./lock.ts";
import { loadPrepared, preparedDir, preparedKey, savePrepared, type PreparedKernel } from "./prepared.ts";
import {
  INITRAMFS_FILE,
  INITRAMFS_GZ_FILE,
  MODULES_DIR,
  VMLINUX_FILE,
  kernelFileFor,
  kernelDir,
  kernelsRoot,
  readManifest,
  writeManifest,
  type KernelManifest,
  type KernelSource,
} from "./manifest.ts";
import { GUEST_MODULES, moduleName } from "./modules.ts";
import { bzImageVersion, extractDebs, extractVmlinux, readModule, sniffKernelFile, type ExtractedKernel } from "./source.ts";

/** The backend kernels are installed for when none is named (the one that runs everywhere on Linux). */
export const DEFAULT_KERNEL_BACKEND: BackendName = "linux-qemu";

export interface InstallKernelOptions {
  stateDir: string;
  backend?: BackendName;
  arch?: Arch;
  /** A linux-image .deb or a bare kernel image (requires sha256). */
  from?: string;
  /** A URL to a .deb or bare kernel image (requires sha256). */
  url?: string;
  /** Expected sha256 of `from`/`url` ("sha256:" prefix allowed). */
  sha256?: string;
  /** The guest init to inject; default `resolveGuestInit()`. */
  initPath?: string;
  /** Where downloaded .debs are kept; default $MICROAGENT_KERNEL_CACHE or `<state-dir>/kernels/.cache`. */
  cacheDir?: string;
  compression?: "none" | "gzip";
  /** Reinstall even when the same source is installed. */
  force?: boolean;
  onProgress?: (message: string) => void;
  env?: NodeJS.ProcessEnv;
}

export interface ResolvedInstallKernelOptions {
  stateDir: string;
  backend: BackendName;
  arch: Arch;
  source: { kind: "apt" } | { kind: "file"; path: string; sha256: string } | { kind: "url"; url: string; sha256: string };
  initPath: string;
  cacheDir: string;
  compression: "none" | "gzip";
  force: boolean;
  onProgress: (message: string) => void;
}

export type InstallAction = "installed" | "already-installed" | "initramfs-rebuilt";

export interface InstallKernelResult {
  action: InstallAction;
  dir: string;
  kernelPath: string;
  initramfsPath: string;
  manifest: KernelManifest;
}

export function defaultKernelCacheDir(stateDir: string, env: NodeJS.ProcessEnv = process.env): string {
  return env.MICROAGENT_KERNEL_CACHE || join(kernelsRoot(stateDir), ".cache");
}

export function resolveInstallKernelOptions(opts: InstallKernelOptions): ResolvedInstallKernelOptions {
  const env = opts.env ?? process.env;
  if (opts.from !== undefined && opts.url !== undefined) {
    throw CommonErrors.USAGE({ message: "--from and --url are mutually exclusive: pass one kernel source" });
  }
  let source: ResolvedInstallKernelOptions["source"] = { kind: "apt" };
  if (opts.from !== undefined || opts.url !== undefined) {
    const what = opts.from !== undefined ? `--from ${opts.from}` : `--url ${opts.url}`;
    if (opts.sha256 === undefined) {
      throw KernelErrors.KERNEL_SHA256_REQUIRED({ message: `${what} needs --sha256: a custom kernel is only installed when its checksum is known` });
    }
    const sha256 = normalizeSha256(opts.sha256);
    if (!sha256) throw CommonErrors.INVALID_ARGUMENT({ message: `--sha256 '${opts.sha256}' is not a SHA-256 (64 hex digits)` });
    if (opts.from !== undefined) source = { kind: "file", path: resolvePath(opts.from), sha256 };
    else {
      const url = opts.url as string;
      let parsed: URL;
      try {
        parsed = new URL(url);
      } catch {
        throw CommonErrors.INVALID_ARGUMENT({ message: `--url '${url}' is not a URL` });
      }
      if (parsed.protocol !== "https:" && parsed.protocol !== "http:") {
        throw CommonErrors.INVALID_ARGUMENT({ message: `--url '${url}' must be http(s)` });
      }
      source = { kind: "url", url, sha256 };
    }
  } else if (opts.sha256 !== undefined) {
    throw CommonErrors.USAGE({ message: "--sha256 goes with --from or --url (the default source is checked against the package index)" });
  }
  return {
    stateDir: opts.stateDir,
    backend: opts.backend ?? DEFAULT_KERNEL_BACKEND,
    arch: opts.arch ?? hostArch(),
    source,
    initPath: resolveGuestInit(opts.initPath, env),
    cacheDir: opts.cacheDir ?? defaultKernelCacheDir(opts.stateDir, env),
    compression: opts.compression ?? "none",
    force: opts.force ?? false,
    onProgress: opts.onProgress ?? (() => {}),
  };
}

/** Install (or confirm, or refresh the initramfs of) the kernel for one backend/arch. */
export async function installKernel(opts: InstallKernelOptions): Promise<InstallKernelResult> {
  const r = resolveInstallKernelOptions(opts);
  const dir = kernelDir(r.stateDir, r.backend, r.arch);
  const release = await acquireLock(join(kernelsRoot(r.stateDir), `.lock-${r.backend}-${r.arch}`), {
    onWait: (pid) => r.onProgress(`waiting for another kernel install${pid ? ` (pid ${pid})` : ""} to finish`),
  });
  try {
    return await installLocked(r, dir);
  } finally {
    await release();
  }
}

async function installLocked(r: ResolvedInstallKernelOptions, dir: string): Promise<InstallKernelResult> {
  const init = await readFile(r.initPath);
  const initSha = sha256Bytes(init);
  const existing = await readManifest(dir).catch((e: unknown) => {
    // A damaged manifest is replaced by a fresh install.
    if (KernelErrors.KERNEL_MANIFEST_INVALID.is(e)) return undefined;
    throw e;
  });

  let plan: AptKernelPlan | undefined;
  let source: KernelSource;
  if (r.source.kind === "apt") {
    r.onProgress(`resolving the kernel package for ${r.arch}`);
    plan = await resolveAptKernel(r.arch);
    source = {
      kind: "apt",
      metaPackage: plan.meta.name,
      package: plan.image.name,
      version: plan.image.version,
      sha256: plan.image.sha256,
      extraPackages: plan.modules.map((m) => ({ package: m.name, version: m.version, sha256: m.sha256 })),
    };
  } else if (r.source.kind === "file") {
    const actual = await sha256File(r.source.path).catch((e: unknown) => {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") {
        throw CommonErrors.PATH_NOT_FOUND({ message: `kernel source ${r.source.kind === "file" ? r.source.path : ""} does not exist`, cause: e });
      }
      throw e;
    });
    if (actual !== r.source.sha256) throw shaMismatch(r.source.path, r.source.sha256, actual);
    source = { kind: "file", path: r.source.path, sha256: r.source.sha256 };
  } else {
    source = { kind: "url", url: r.source.url, sha256: r.source.sha256 };
  }

  if (existing && !r.force && sameSource(existing.source, source) && (existing.source.kind !== "apt" || coversGuestModules(existing)) && (await kernelIntact(dir, existing))) {
    if (existing.init.sha256 === initSha && existing.initramfs.compression === r.compression) {
      return result("already-installed", dir, existing);
    }
    r.onProgress("the guest init changed: rebuilding the initramfs");
    const manifest = await rebuildInitramfs(dir, existing, init, r.initPath, r.compression);
    return result("initramfs-rebuilt", dir, manifest);
  }

  // A full install: fetch, extract, stage, swap.
  const work = await mkdtemp(join(tmpdir(), "microagent-kernel-"));
  const parent = dirname(dir);
  await ensureDir(parent);
  const staging = await mkdtemp(join(parent, `.staging-${r.arch}-`));
  try {
    const cached = preparedDir(r.cacheDir, preparedKey(source.kind === "apt" ? [source.sha256, ...source.extraPackages.map((p) => p.sha256)] : [source.sha256]));
    let prepared = await loadPrepared(cached);
    if (prepared) r.onProgress("using the already unpacked kernel from the cache");
    else {
      let files: string[];
      if (plan) {
        files = [];
        for (const pkg of [plan.image, ...plan.modules]) {
          r.onProgress(`fetching ${pkg.name} ${pkg.version}`);
          files.push(await fetchDeb(pkg, r.cacheDir));
        }
      } else if (source.kind === "file") {
        files = [source.path];
      } else if (source.kind === "url") {
        r.onProgress(`downloading ${source.url}`);
        files = [await downloadUrl(source.url, source.sha256, r.cacheDir)];
      } else {
        throw new Error("internal: unreachable kernel source");
      }
      prepared = await unpackKernel(files, work, r.arch, r.onProgress);
      await savePrepared(cached, prepared);
    }
    const kernelFile = kernelFileFor(r.backend, r.arch);
    if (kernelFile === VMLINUX_FILE) {
      r.onProgress("extracting the ELF vmlinux for Firecracker");
      await writeFile(join(staging, kernelFile), await extractVmlinux(await readFile(prepared.kernelPath)), { mode: 0o600 });
    } else {
      await copyFile(prepared.kernelPath, join(staging, kernelFile));
    }
    await chmod(join(staging, kernelFile), 0o600);
    const kernelSha = await sha256File(join(staging, kernelFile));
    const kernelSize = (await stat(join(staging, kernelFile))).size;

    const modules = prepared.modules;
    for (const m of modules) {
      const target = join(staging, MODULES_DIR, m.path);
      await ensureDir(dirname(target));
      await writeFile(target, m.data, { mode: 0o600 });
    }
    r.onProgress(`building the initramfs (${modules.length} modules)`);
    const initramfs = buildInitramfs({ init, modules, compression: r.compression });
    const initramfsFile = r.compression === "gzip" ? INITRAMFS_GZ_FILE : INITRAMFS_FILE;
    await writeFile(join(staging, initramfsFile), initramfs, { mode: 0o600 });

    const manifest: KernelManifest = {
      schemaVersion: 1,
      backend: r.backend,
      arch: r.arch,
      version: prepared.version,
      kernel: { file: kernelFile, sha256: kernelSha, sizeBytes: kernelSize },
      initramfs: { file: initramfsFile, sha256: sha256Bytes(initramfs), sizeBytes: initramfs.length, compression: r.compression },
      init: { sha256: initSha, sizeBytes: init.length, path: r.initPath },
      modules: modules.map((m) => ({ path: m.path, sha256: sha256Bytes(m.data) })),
      builtinModules: prepared.builtin,
      unavailableModules: prepared.unavailable,
      source,
      installedAt: new Date().toISOString(),
    };
    await writeManifest(staging, manifest);
    await chmod(staging, 0o700);
    await swapInto(staging, dir);
    r.onProgress(`installed kernel ${manifest.version} in ${dir}`);
    return result("installed", dir, manifest);
  } finally {
    await rm(work, { recursive: true, force: true });
    await rm(staging, { recursive: true, force: true });
  }
}

export interface EnsureKernelOptions {
  stateDir: string;
  backend?: BackendName;
  arch?: Arch;
  initPath?: string;
  cacheDir?: string;
  onProgress?: (message: string) => void;
  env?: NodeJS.ProcessEnv;
}

/**
 * The kernel to boot with, installing the default one when none is installed (the first `run` or
 * `create` does this). Cheap when installed: no package-manager call and no kernel hashing, only
 * the guest init's hash is compared so a rebuilt init gets a fresh initramfs.
 */
export async function ensureKernel(opts: EnsureKernelOptions): Promise<InstallKernelResult> {
  const backend = opts.backend ?? DEFAULT_KERNEL_BACKEND;
  const arch = opts.arch ?? hostArch();
  const dir = kernelDir(opts.stateDir, backend, arch);
  const env = opts.env ?? process.env;
  const initPath = resolveGuestInit(opts.initPath, env);
  const existing = await readManifest(dir).catch(() => undefined);
  // A default (apt) install made before microagent asked for more guest modules is redone: same kernel
  // package, a fuller initramfs. A custom kernel (--from/--url) is the user's choice and is kept as it is.
  const stale = existing !== undefined && existing.source.kind === "apt" && !coversGuestModules(existing);
  if (existing && !stale && (await pathExists(join(dir, existing.kernel.file))) && (await pathExists(join(dir, existing.initramfs.file)))) {
    const initSha = await sha256File(initPath);
    if (initSha === existing.init.sha256) return result("already-installed", dir, existing);
    const release = await acquireLock(join(kernelsRoot(opts.stateDir), `.lock-${backend}-${arch}`));
    try {
      // Someone may have rebuilt it while we waited.
      const again = await readManifest(dir);
      if (again && again.init.sha256 === initSha) return result("already-installed", dir, again);
      if (again && (await kernelIntact(dir, again))) {
        opts.onProgress?.("the guest init changed: rebuilding the initramfs");
        const manifest = await rebuildInitramfs(dir, again, await readFile(initPath), initPath, again.initramfs.compression);
        return result("initramfs-rebuilt", dir, manifest);
      }
    } finally {
      await release();
    }
  }
  opts.onProgress?.(stale ? "the guest needs more kernel modules than were installed: reinstalling the default kernel" : "no kernel installed: installing the default kernel");
  return installKernel({
    stateDir: opts.stateDir,
    backend,
    arch,
    initPath,
    ...(opts.cacheDir ? { cacheDir: opts.cacheDir } : {}),
    ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    env,
  });
}

function result(action: InstallAction, dir: string, manifest: KernelManifest): InstallKernelResult {
  return { action, dir, kernelPath: join(dir, manifest.kernel.file), initramfsPath: join(dir, manifest.initramfs.file), manifest };
}

/** Every module the guest asks for is accounted for in the manifest: loaded, built in, or known absent. */
export function coversGuestModules(m: KernelManifest): boolean {
  const known = new Set([...m.modules.map((x) => moduleName(x.path)), ...m.builtinModules, ...m.unavailableModules]);
  return GUEST_MODULES.every((req) => known.has(req.name));
}

function sameSource(a: KernelSource, b: KernelSource): boolean {
  if (a.kind !== b.kind) return false;
  if (a.kind === "apt" && b.kind === "apt") return a.package === b.package && a.version === b.version && a.sha256 === b.sha256;
  return a.sha256 === b.sha256;
}

/** The installed kernel and modules still match the manifest (so an initramfs rebuild can trust them). */
async function kernelIntact(dir: string, m: KernelManifest): Promise<boolean> {
  try {
    if ((await sha256File(join(dir, m.kernel.file))) !== m.kernel.sha256) return false;
    for (const mod of m.modules) {
      if ((await sha256File(join(dir, MODULES_DIR, mod.path))) !== mod.sha256) return false;
    }
    return true;
  } catch {
    return false;
  }
}

async function rebuildInitramfs(dir: string, m: KernelManifest, init: Buffer, initPath: string, compression: "none" | "gzip"): Promise<KernelManifest> {
  const modules: InitramfsModule[] = [];
  for (const mod of m.modules) modules.push({ path: mod.path, data: await readFile(join(dir, MODULES_DIR, mod.path)) });
  const initramfs = buildInitramfs({ init, modules, compression });
  const file = compression === "gzip" ? INITRAMFS_GZ_FILE : INITRAMFS_FILE;
  await writeFileAtomic(join(dir, file), initramfs);
  const manifest: KernelManifest = {
    ...m,
    initramfs: { file, sha256: sha256Bytes(initramfs), sizeBytes: initramfs.length, compression },
    init: { sha256: sha256Bytes(init), sizeBytes: init.length, path: initPath },
  };
  await writeManifest(dir, manifest);
  if (file !== m.initramfs.file) await rm(join(dir, m.initramfs.file), { force: true });
  return manifest;
}

/** Unpack `files` and read the guest modules out of them, decompressed. */
async function unpackKernel(files: readonly string[], work: string, arch: Arch, onProgress: (m: string) => void): Promise<PreparedKernel> {
  onProgress("extracting the kernel and its modules");
  const extracted = await extractKernel(files, work, arch);
  const modules: InitramfsModule[] = [];
  if (extracted.modules) {
    for (const rel of extracted.modules.resolution.load) modules.push(await readModule(extracted.modules.dir, rel));
  }
  return {
    kernelPath: extracted.kernelPath,
    version: extracted.version,
    modules,
    builtin: extracted.modules?.resolution.builtin ?? [],
    unavailable: extracted.modules?.resolution.unavailable ?? [],
  };
}

async function extractKernel(files: readonly string[], work: string, arch: Arch): Promise<ExtractedKernel> {
  const first = files[0] as string;
  const head = Buffer.alloc(0x400);
  const fh = await open(first, "r");
  let n: number;
  try {
    n = (await fh.read(head, 0, head.length, 0)).bytesRead;
  } finally {
    await fh.close();
  }
  const kind = sniffKernelFile(head.subarray(0, n));
  if (kind === "deb") {
    const extracted = await extractDebs(files, join(work, "root"));
    const kfh = await open(extracted.kernelPath, "r");
    const khead = Buffer.alloc(0x400);
    try {
      await kfh.read(khead, 0, khead.length, 0);
    } finally {
      await kfh.close();
    }
    // An x86 guest needs a bzImage; catching a foreign-architecture package here beats a silent boot failure.
    if (arch === "amd64" && sniffKernelFile(khead) !== "bzimage") {
      throw KernelErrors.KERNEL_ARCH_UNSUPPORTED({ message: `the kernel in ${first} is not an x86 bzImage: the package is not for amd64` });
    }
    if (arch === "arm64" && sniffKernelFile(khead) === "bzimage") {
      throw KernelErrors.KERNEL_ARCH_UNSUPPORTED({ message: `the kernel in ${first} is an x86 kernel, not a kernel for arm64` });
    }
    return extracted;
  }
  if (kind === "bzimage") {
    if (arch !== "amd64") throw KernelErrors.KERNEL_ARCH_UNSUPPORTED({ message: `${first} is an x86 kernel, not a kernel for ${arch}` });
    // Only the header is needed for the version: it sits in the first few KiB.
    const buf = Buffer.alloc(64 * 1024);
    const h = await open(first, "r");
    try {
      await h.read(buf, 0, buf.length, 0);
    } finally {
      await h.close();
    }
    return { kernelPath: first, version: bzImageVersion(buf) ?? "unknown" };
  }
  if (kind === "arm64-image") {
    if (arch !== "arm64") throw KernelErrors.KERNEL_ARCH_UNSUPPORTED({ message: `${first} is an arm64 kernel, not a kernel for ${arch}` });
    return { kernelPath: first, version: "unknown" };
  }
  throw KernelErrors.KERNEL_SOURCE_INVALID({ message: `${first} is neither a .deb package nor a kernel image (bzImage or arm64 Image)`, details: { path: first } });
}

/** Largest kernel download accepted (a kernel .deb is ~30 MiB; this only stops a runaway server). */
const MAX_DOWNLOAD_BYTES = 1024 * 1024 * 1024;

/**
 * Download `url` into the cache (reused when a cached copy has the sha256), streaming to a temp file
 * while hashing; it is renamed into place only when the sha256 matches.
 */
async function downloadUrl(url: string, sha256: string, cacheDir: string): Promise<string> {
  await ensureDir(cacheDir);
  const target = join(cacheDir, `url-${sha256}`);
  if ((await pathExists(target)) && (await sha256File(target)) === sha256) return target;
  const tmp = join(cacheDir, `.dl-${process.pid}-${Date.now()}`);
  try {
    let actual: string;
    try {
      const res = await fetch(url, { redirect: "follow", signal: AbortSignal.timeout(15 * 60_000) });
      if (!res.ok || !res.body) {
        throw KernelErrors.KERNEL_DOWNLOAD_FAILED({
          message: `downloading ${url} failed: HTTP ${res.status}`,
          ...(res.status === 404 || res.status === 403 || res.status === 401 ? { remediation: "Check the URL: the server refused it." } : {}),
          details: { url, status: res.status },
        });
      }
      const hash = createHash("sha256");
      let bytes = 0;
      const fh = await open(tmp, "wx", 0o600);
      try {
        for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
          bytes += chunk.length;
          if (bytes > MAX_DOWNLOAD_BYTES) {
            throw KernelErrors.KERNEL_SOURCE_INVALID({ message: `${url} is larger than ${MAX_DOWNLOAD_BYTES} bytes: not a kernel`, details: { url } });
          }
          hash.update(chunk);
          await fh.write(chunk);
        }
        await fh.sync();
      } finally {
        await fh.close();
      }
      actual = hash.digest("hex");
    } catch (e) {
      if (isMicroagentError(e)) throw e;
      throw KernelErrors.KERNEL_DOWNLOAD_FAILED({ message: `downloading ${url} failed: ${(e as Error).message}`, cause: e, details: { url } });
    }
    if (actual !== sha256) throw shaMismatch(url, sha256, actual);
    await rename(tmp, target);
    return target;
  } finally {
    await rm(tmp, { force: true });
  }
}

function shaMismatch(what: string, expected: string, actual: string) {
  return KernelErrors.KERNEL_SHA256_MISMATCH({
    message: `${what} does not match the expected SHA-256 (expected ${expected}, got ${actual}); nothing was installed`,
    remediation: "Check that you have the right file and the right --sha256; install only kernels from a trusted source.",
    details: { source: what, expected, actual },
  });
}

/** Replace `dir` with `staging` (two renames; the old tree is removed afterwards). */
async function swapInto(staging: string, dir: string): Promise<void> {
  let old: string | undefined;
  if (await pathExists(dir)) {
    old = `${dir}.old-${process.pid}-${Date.now()}`;
    await rename(dir, old);
  }
  try {
    await rename(staging, dir);
  } catch (e) {
    if (old) await rename(old, dir).catch(() => {});
    throw e;
  }
  if (old) await rm(old, { recursive: true, force: true });
}

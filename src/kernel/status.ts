/** Reading what is installed: status (for doctor), verify (sha256 check) and list. */
import { readdir, stat } from "node:fs/promises";
import { join, resolve as resolvePath } from "node:path";
import { ArchSchema, BackendNameSchema, hostArch, type Arch, type BackendName } from "../contract/backend.ts";
import { CommonErrors, isMicroagentError } from "../contract/errors.ts";
import { KernelErrors } from "./errors.ts";
import { normalizeSha256, sha256File } from "../util/hash.ts";
import { DEFAULT_KERNEL_BACKEND } from "./install.ts";
import { kernelDir, kernelFileFor, kernelsRoot, readManifest, type KernelManifest, type KernelSource } from "./manifest.ts";

export type KernelStatusName = "installed" | "missing" | "error";

export interface KernelStatus {
  status: KernelStatusName;
  backend: BackendName;
  arch: Arch;
  /** The kernel image path (where it is, or would be, installed). */
  path: string;
  sha256?: string;
  initramfsPath?: string;
  initramfsSha256?: string;
  /** Kernel release. */
  version?: string;
  initSha256?: string;
  source?: KernelSource;
  installedAt?: string;
  error?: string;
}

export interface KernelStatusOptions {
  stateDir: string;
  backend?: BackendName;
  arch?: Arch;
}

/**
 * The installed kernel's status from its manifest (no hashing: doctor and status calls stay fast;
 * `verifyKernel` recomputes). `error` when the manifest is damaged or a file it names is gone.
 */
export async function kernelStatus(opts: KernelStatusOptions): Promise<KernelStatus> {
  const backend = opts.backend ?? DEFAULT_KERNEL_BACKEND;
  const arch = opts.arch ?? hostArch();
  const dir = kernelDir(opts.stateDir, backend, arch);
  const base = { backend, arch, path: join(dir, kernelFileFor(backend, arch)) };
  let m: KernelManifest | undefined;
  try {
    m = await readManifest(dir);
  } catch (e) {
    return { ...base, status: "error", error: isMicroagentError(e) || e instanceof Error ? e.message : String(e) };
  }
  if (!m) return { ...base, status: "missing" };
  const full: KernelStatus = {
    ...base,
    status: "installed",
    path: join(dir, m.kernel.file),
    sha256: m.kernel.sha256,
    initramfsPath: join(dir, m.initramfs.file),
    initramfsSha256: m.initramfs.sha256,
    version: m.version,
    initSha256: m.init.sha256,
    source: m.source,
    installedAt: m.installedAt,
  };
  for (const [what, p] of [
    ["kernel", full.path],
    ["initramfs", full.initramfsPath as string],
  ] as const) {
    if (!(await isFile(p))) return { ...full, status: "error", error: `the installed ${what} ${p} is missing: reinstall with \`microagent kernel install\`` };
  }
  return full;
}

export interface VerifyKernelOptions {
  stateDir: string;
  backend?: BackendName;
  arch?: Arch;
  /** A kernel file to check; default the installed kernel. */
  path?: string;
  /** Expected sha256; default the manifest's, when checking the installed kernel. */
  sha256?: string;
}

export interface VerifyKernelResult {
  path: string;
  sha256: string;
  /** What it was compared with, if anything. */
  expectedSha256?: string;
  expectedFrom?: "flag" | "manifest";
  /** False when an expected sha256 was known and differs. */
  ok: boolean;
}

/** Hash a kernel file and compare it with the expected sha256 (the flag's, else the manifest's). */
export async function verifyKernel(opts: VerifyKernelOptions): Promise<VerifyKernelResult> {
  let expected: string | undefined;
  if (opts.sha256 !== undefined) {
    expected = normalizeSha256(opts.sha256);
    if (!expected) throw CommonErrors.INVALID_ARGUMENT({ message: `--sha256 '${opts.sha256}' is not a SHA-256 (64 hex digits)` });
  }
  let path: string;
  let expectedFrom: "flag" | "manifest" | undefined = expected ? "flag" : undefined;
  if (opts.path !== undefined) path = resolvePath(opts.path);
  else {
    const st = await kernelStatus(opts);
    if (st.status === "missing") {
      throw KernelErrors.KERNEL_NOT_INSTALLED({ message: `no kernel is installed for ${st.backend}/${st.arch} under ${opts.stateDir}`, details: { path: st.path } });
    }
    if (st.status === "error" && st.sha256 === undefined) {
      throw KernelErrors.KERNEL_MANIFEST_INVALID({ message: st.error ?? "the kernel manifest cannot be read" });
    }
    path = st.path;
    if (!expected && st.sha256) {
      expected = st.sha256;
      expectedFrom = "manifest";
    }
  }
  let sha256: string;
  try {
    sha256 = await sha256File(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") throw CommonErrors.PATH_NOT_FOUND({ message: `kernel file ${path} does not exist`, cause: e, details: { path } });
    throw e;
  }
  return { path, sha256, ...(expected ? { expectedSha256: expected, expectedFrom } : {}), ok: expected === undefined || expected === sha256 };
}

/** The error for a failed verification, worded for the user (seed: "kernel verify reports a SHA mismatch"). */
export function kernelMismatchError(r: VerifyKernelResult) {
  return KernelErrors.KERNEL_SHA256_MISMATCH({
    message: `kernel file ${r.path} does not match its expected SHA-256 (expected ${r.expectedSha256}${r.expectedFrom === "manifest" ? ", recorded at install" : ""}, actual ${r.sha256}): it is corrupted or was replaced`,
    remediation:
      "Don't boot from it. Reinstall from the trusted source with `microagent kernel install`, then check it with `microagent kernel verify --sha256 <expected>`. If the reinstall doesn't produce the expected SHA either, the source is wrong: install from a trusted kernel URL and pass the expected SHA explicitly (`microagent kernel install --url URL --sha256 <expected>`).",
    details: { path: r.path, expected: r.expectedSha256, actual: r.sha256, expectedFrom: r.expectedFrom },
  });
}

/** Every kernel installed under the state dir (all backends and arches), sorted. */
export async function listKernels(opts: { stateDir: string }): Promise<KernelStatus[]> {
  const root = kernelsRoot(opts.stateDir);
  const out: KernelStatus[] = [];
  for (const b of (await readdir(root).catch(() => [] as string[])).sort()) {
    const backend = BackendNameSchema.safeParse(b);
    if (!backend.success) continue;
    for (const a of (await readdir(join(root, b)).catch(() => [] as string[])).sort()) {
      const arch = ArchSchema.safeParse(a);
      if (!arch.success) continue;
      const st = await kernelStatus({ stateDir: opts.stateDir, backend: backend.data, arch: arch.data });
      if (st.status !== "missing") out.push(st);
    }
  }
  return out;
}

async function isFile(p: string): Promise<boolean> {
  return (await stat(p).catch(() => undefined))?.isFile() ?? false;
}

/**
 * `<state-dir>/kernels/<backend>/<arch>/manifest.json`: what is installed there and where it came
 * from. Written last (atomically), so a directory with a valid manifest is a complete install.
 */
import { join } from "node:path";
import { z } from "zod";
import { ArchSchema, BackendNameSchema, type Arch, type BackendName } from "../contract/backend.ts";
import { KernelErrors } from "./errors.ts";
import { ensureDir, writeFileAtomic } from "../util/fs.ts";
import { readJsonFile } from "../util/json-file.ts";

export const KERNEL_FILE = "vmlinuz";
/** Firecracker (linux-kvm) boots an uncompressed ELF kernel on x86. */
export const VMLINUX_FILE = "vmlinux";

/** The installed kernel's file name for a backend: an ELF vmlinux for Firecracker on amd64, else the image as shipped. */
export function kernelFileFor(backend: BackendName, arch: Arch): string {
  return backend === "linux-kvm" && arch === "amd64" ? VMLINUX_FILE : KERNEL_FILE;
}
export const INITRAMFS_FILE = "initramfs.cpio";
export const INITRAMFS_GZ_FILE = "initramfs.cpio.gz";
export const MANIFEST_FILE = "manifest.json";
/** Decompressed modules kept next to the kernel, so the initramfs can be rebuilt without the source. */
export const MODULES_DIR = "modules";

const Sha256 = z.string().regex(/^[0-9a-f]{64}$/);

export const KernelSourceSchema = z.discriminatedUnion("kind", [
  z.object({
    kind: z.literal("apt"),
    /** The meta-package asked for (linux-image-cloud-amd64). */
    metaPackage: z.string(),
    /** The versioned package it resolved to. */
    package: z.string(),
    version: z.string(),
    /** sha256 of the .deb, from the signed package index. */
    sha256: Sha256,
    /** Extra packages unpacked for modules (Ubuntu). */
    extraPackages: z.array(z.object({ package: z.string(), version: z.string(), sha256: Sha256 })).default([]),
  }),
  z.object({ kind: z.literal("file"), path: z.string(), sha256: Sha256 }),
  z.object({ kind: z.literal("url"), url: z.string(), sha256: Sha256 }),
]);
export type KernelSource = z.infer<typeof KernelSourceSchema>;

export const KernelManifestSchema = z.object({
  schemaVersion: z.literal(1),
  backend: BackendNameSchema,
  arch: ArchSchema,
  /** Kernel release, e.g. "6.1.0-56-cloud-amd64" ("unknown" when the image does not say). */
  version: z.string(),
  kernel: z.object({ file: z.string(), sha256: Sha256, sizeBytes: z.number().int().nonnegative() }),
  initramfs: z.object({ file: z.string(), sha256: Sha256, sizeBytes: z.number().int().nonnegative(), compression: z.enum(["none", "gzip"]) }),
  /** The guest init injected as /init. */
  init: z.object({ sha256: Sha256, sizeBytes: z.number().int().nonnegative(), path: z.string() }),
  /** Modules in the initramfs, in load order (paths relative to /lib/modules). */
  modules: z.array(z.object({ path: z.string(), sha256: Sha256 })),
  builtinModules: z.array(z.string()),
  unavailableModules: z.array(z.string()),
  source: KernelSourceSchema,
  installedAt: z.string(),
});
export type KernelManifest = z.infer<typeof KernelManifestSchema>;

export function kernelsRoot(stateDir: string): string {
  return join(stateDir, "kernels");
}

export function kernelDir(stateDir: string, backend: BackendName, arch: Arch): string {
  return join(kernelsRoot(stateDir), backend, arch);
}

/** The manifest in `dir`, undefined when there is none; KERNEL_MANIFEST_INVALID when it is damaged. */
export async function readManifest(dir: string): Promise<KernelManifest | undefined> {
  const path = join(dir, MANIFEST_FILE);
  return readJsonFile(path, KernelManifestSchema, (p) =>
    KernelErrors.KERNEL_MANIFEST_INVALID({
      message: p.kind === "json" ? `${path} is ${p.problem}` : `${path} does not match the kernel manifest schema: ${p.problem}`,
      cause: p.cause,
      details: { path, ...(p.field ? { field: p.field } : {}) },
    }),
  );
}

export async function writeManifest(dir: string, manifest: KernelManifest): Promise<void> {
  await ensureDir(dir);
  await writeFileAtomic(join(dir, MANIFEST_FILE), `${JSON.stringify(KernelManifestSchema.parse(manifest), null, 2)}\n`);
}

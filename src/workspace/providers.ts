/**
 * The image, kernel, rootfs and disk steps of `create`, and their real implementations wired to the
 * areas that own them (image store + registry client, kernel install, rootfs base cache, the
 * backend's disk capability). Kept behind an interface so the workspace layer depends on what those
 * steps return, not on how they work.
 *
 * Layer order: backend sits below workspace. This file is the one place in src/workspace/ that
 * reaches into src/backend/ (the registry, for the disk); the lint rules say so.
 */
import type { Arch, BackendName } from "../contract/backend.ts";
import { resolveImage } from "../image/pull.ts";
import type { LocalImage } from "../image/types.ts";
import { ensureKernel } from "../kernel/install.ts";
import { ensureBaseRootfs } from "../rootfs/build.ts";
import { lookupBackend } from "../backend/registry.ts";
import type { DiskCapability } from "../backend/types.ts";
import type { ImageRuntimeConfig } from "./boot-spec.ts";

export type { DiskCapability, DiskRequest, CreatedDisk } from "../backend/types.ts";

/** Context handed to each provider. */
export interface ProviderContext {
  stateDir: string;
  backend: BackendName;
  arch: Arch;
  signal?: AbortSignal;
  onProgress?: (message: string) => void;
}

/** What the workspace layer needs to know about a resolved image. */
export interface ResolvedImageInfo {
  ref: string;
  resolvedRef: string;
  /** sha256:<hex> of the platform manifest. */
  manifestDigest: string;
  configDigest?: string;
  config: ImageRuntimeConfig;
}

export interface KernelArtifacts {
  kernel: { path: string; sha256: string };
  initramfs: { path: string; sha256: string };
}

export interface BaseRootfsInfo {
  path: string;
  sha256: string;
  sizeMib: number;
  cacheHit: boolean;
}

/** The image, kernel, rootfs and disk steps of create. `image` is opaque to us and handed back to `ensureBaseRootfs`. */
export interface CreateProviders {
  resolveImage(ref: string, ctx: ProviderContext): Promise<{ info: ResolvedImageInfo; image: unknown }>;
  ensureKernel(ctx: ProviderContext): Promise<KernelArtifacts>;
  ensureBaseRootfs(image: unknown, ctx: ProviderContext): Promise<BaseRootfsInfo>;
  /** Makes the workspace disk; default: the backend's own disk capability (`backendDisk`). */
  disk?: DiskCapability;
}

/**
 * The disk capability of a backend that can hold workspaces, from the registry; undefined when the
 * backend is not implemented in this build or makes no disks.
 */
export function backendDisk(backend: BackendName): DiskCapability | undefined {
  return lookupBackend(backend)?.disk;
}

export interface DefaultProviderOptions {
  /** Where downloaded kernel packages are cached (default: the kernel area's own default). */
  kernelCacheDir?: string;
  /** mke2fs / debugfs to build the base rootfs with (default: found on PATH and in the sbin dirs). */
  mke2fs?: string;
  debugfs?: string;
}

export function defaultCreateProviders(options: DefaultProviderOptions = {}): CreateProviders {
  return {
    async resolveImage(ref, ctx) {
      const progress = ctx.onProgress;
      const image = await resolveImage(ref, {
        stateDir: ctx.stateDir,
        arch: ctx.arch,
        ...(ctx.signal ? { signal: ctx.signal } : {}),
        ...(progress ? { onProgress: (e) => (e.type === "resolved" ? progress(`pulling ${e.ref} (${e.layers} layers, ${e.totalBytes} bytes)`) : undefined) } : {}),
      });
      return {
        image,
        info: {
          ref: image.ref,
          resolvedRef: image.resolvedRef,
          manifestDigest: image.manifestDigest,
          configDigest: image.configDigest,
          config: image.config,
        },
      };
    },
    async ensureKernel(ctx) {
      const k = await ensureKernel({
        stateDir: ctx.stateDir,
        backend: ctx.backend,
        arch: ctx.arch,
        ...(options.kernelCacheDir ? { cacheDir: options.kernelCacheDir } : {}),
        ...(ctx.onProgress ? { onProgress: ctx.onProgress } : {}),
      });
      return {
        kernel: { path: k.kernelPath, sha256: k.manifest.kernel.sha256 },
        initramfs: { path: k.initramfsPath, sha256: k.manifest.initramfs.sha256 },
      };
    },
    async ensureBaseRootfs(image, ctx) {
      const b = await ensureBaseRootfs(image as LocalImage, {
        stateDir: ctx.stateDir,
        ...(options.mke2fs ? { mke2fs: options.mke2fs } : {}),
        ...(options.debugfs ? { debugfs: options.debugfs } : {}),
        ...(ctx.onProgress ? { onProgress: ctx.onProgress } : {}),
      });
      return { path: b.path, sha256: b.sha256, sizeMib: b.sizeMib, cacheHit: b.cacheHit };
    },
  };
}

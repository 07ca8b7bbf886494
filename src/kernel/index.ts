/** Kernels: install (default from the host's package manager), ensure, verify, list, status. */
export { installKernel, ensureKernel, resolveInstallKernelOptions, defaultKernelCacheDir, DEFAULT_KERNEL_BACKEND } from "./install.ts";
export type { InstallKernelOptions, ResolvedInstallKernelOptions, InstallKernelResult, InstallAction, EnsureKernelOptions } from "./install.ts";
export { kernelStatus, verifyKernel, listKernels, kernelMismatchError } from "./status.ts";
export type { KernelStatus, KernelStatusName, KernelStatusOptions, VerifyKernelOptions, VerifyKernelResult } from "./status.ts";
export { KernelManifestSchema, KernelSourceSchema, kernelDir, kernelsRoot, readManifest } from "./manifest.ts";
export type { KernelManifest, KernelSource } from "./manifest.ts";
export { KernelErrors } from "./errors.ts";
export { resolveGuestInit, GUEST_INIT_RELATIVE_PATH } from "./guest-init.ts";
export { GUEST_MODULES } from "./modules.ts";
export type { ModuleRequest } from "./modules.ts";

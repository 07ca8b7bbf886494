/** Backend and architecture names shared by every layer. */
import { z } from "zod";

export const BACKENDS = ["linux-kvm", "linux-qemu", "apple-vf", "windows-hyperv"] as const;
export const BackendNameSchema = z.enum(BACKENDS);
export type BackendName = z.infer<typeof BackendNameSchema>;

/**
 * Disk image formats a backend may choose for a workspace disk (recorded in the manifest): `qcow2` is
 * a copy-on-write overlay over the shared base (linux-qemu); `raw` is a plain file (what Firecracker
 * takes). Every layer that names a format uses this one list.
 */
export const DISK_FORMATS = ["qcow2", "raw"] as const;
export const DiskFormatSchema = z.enum(DISK_FORMATS);
export type DiskFormat = z.infer<typeof DiskFormatSchema>;

export const ARCHES = ["amd64", "arm64"] as const;
export const ArchSchema = z.enum(ARCHES);
export type Arch = z.infer<typeof ArchSchema>;

/**
 * Most vCPUs a workspace may have, on every backend: QEMU's microvm gives each vCPU an xAPIC id, and
 * id 255 is the broadcast address, so 255 vCPUs is as far as it goes without an IOMMU for x2APIC.
 * The CLI, the spec file and the VMM argument builder all check this one constant.
 */
export const MAX_VCPUS = 255;

/** Accept the common aliases users type (x86_64, aarch64) and return our canonical name. */
export function normalizeArch(input: string): Arch | undefined {
  const v = input.trim().toLowerCase();
  if (v === "amd64" || v === "x86_64" || v === "x86-64") return "amd64";
  if (v === "arm64" || v === "aarch64") return "arm64";
  return undefined;
}

/** The architecture of the machine we are running on. */
export function hostArch(): Arch {
  return process.arch === "arm64" ? "arm64" : "amd64";
}

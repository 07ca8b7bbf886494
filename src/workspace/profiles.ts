/** Resource profiles: named defaults for memory, vCPUs and disk size. Flags override each field. */
import { z } from "zod";
import { MAX_VCPUS } from "../contract/backend.ts";

export const PROFILE_NAMES = ["tiny", "small", "medium", "large"] as const;
export const ProfileNameSchema = z.enum(PROFILE_NAMES);
export type ProfileName = z.infer<typeof ProfileNameSchema>;

export interface Resources {
  /** Guest RAM, MiB. */
  memoryMib: number;
  cpus: number;
  /** Root disk (virtual size of the overlay), MiB. */
  sizeMib: number;
}

export const PROFILES: Readonly<Record<ProfileName, Readonly<Resources>>> = {
  tiny: { memoryMib: 256, cpus: 1, sizeMib: 512 },
  small: { memoryMib: 512, cpus: 2, sizeMib: 1024 },
  medium: { memoryMib: 2048, cpus: 2, sizeMib: 8192 },
  large: { memoryMib: 4096, cpus: 4, sizeMib: 16384 },
};

/** Bounds of each resource, shared by the CLI flags and the spec file (inclusive). */
export const RESOURCE_LIMITS = {
  memoryMib: { min: 64, max: 1048576 },
  cpus: { min: 1, max: MAX_VCPUS },
  /** The disk is never smaller than the image's root filesystem, whatever is asked (see create). */
  sizeMib: { min: 64, max: 16777216 },
} as const;

export const DEFAULT_PROFILE: ProfileName = "small";

export interface ResourceOptions {
  profile?: ProfileName;
  memoryMib?: number;
  cpus?: number;
  sizeMib?: number;
}

export interface ResolvedResources extends Resources {
  profile: ProfileName;
}

/** The profile's values with any explicit field taking precedence. */
export function resolveResources(options: ResourceOptions = {}): ResolvedResources {
  const profile = options.profile ?? DEFAULT_PROFILE;
  const base = PROFILES[profile];
  return {
    profile,
    memoryMib: options.memoryMib ?? base.memoryMib,
    cpus: options.cpus ?? base.cpus,
    sizeMib: options.sizeMib ?? base.sizeMib,
  };
}

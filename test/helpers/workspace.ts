/**
 * Fixtures for the workspace integration tests: one state dir with the default kernel installed
 * (reusing the .deb cache across runs), a real docker-registry on loopback holding busybox images
 * built with umoci/skopeo, and the real create providers (image pull, kernel, rootfs).
 * Everything is torn down in `cleanup()`; callers put it in `finally`.
 */
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { tmpdir } from "node:os";
import type { CreateProviders } from "../../src/workspace/create.ts";
import { defaultCreateProviders } from "../../src/workspace/providers.ts";
import { startRegistry, type TestRegistry } from "./registry.ts";
import { buildBusyboxImage, pushImage, type BuildImageOptions } from "./oci-image.ts";
import { scratchDir } from "./scratch.ts";

/**
 * The real image/kernel/rootfs steps: the library's own defaults, with the kernel download cache shared
 * across test runs (loopback registries need no insecure-registry setting).
 */
export function realProviders(env: NodeJS.ProcessEnv = process.env): CreateProviders {
  return defaultCreateProviders({ kernelCacheDir: env.MICROAGENT_KERNEL_CACHE ?? join(tmpdir(), "microagent-test-kernel-cache") });
}

export interface WorkspaceFixture {
  stateDir: string;
  registry: TestRegistry;
  /** Push a busybox image built with `opts` as `name:tag`; returns its reference. */
  image(nameTag: string, opts?: BuildImageOptions): Promise<string>;
  cleanup(): Promise<void>;
}

export async function workspaceFixture(label: string): Promise<WorkspaceFixture> {
  const stateDir = scratchDir(`ws-${label}`);
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const registry = await startRegistry();
  const built: { cleanup(): Promise<void> }[] = [];
  return {
    stateDir,
    registry,
    async image(nameTag, opts = {}) {
      const img = await buildBusyboxImage(opts);
      built.push(img);
      return (await pushImage(img, registry, nameTag)).ref;
    },
    async cleanup() {
      await registry.stop().catch(() => {});
      for (const b of built) await b.cleanup().catch(() => {});
      await rm(stateDir, { recursive: true, force: true }).catch(() => {});
    },
  };
}

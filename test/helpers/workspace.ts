/**
 * Fixtures for the workspace integration tests: one state dir with the default kernel installed
 * (reusing the .deb cache across runs), a real docker-registry on loopback holding busybox images
 * built with umoci/skopeo, and the real create providers (image pull, kernel, rootfs).
 * Everything is torn down in `cleanup()`; callers put it in `finally`.
 */
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { ensureKernel } from "../../src/kernel/install.ts";
import { resolveImage } from "../../src/image/pull.ts";
import type { LocalImage } from "../../src/image/types.ts";
import { ensureBaseRootfs } from "../../src/rootfs/build.ts";
import type { CreateProviders } from "../../src/workspace/create.ts";
import { startRegistry, type TestRegistry } from "./registry.ts";
import { buildBusyboxImage, pushImage, type BuildImageOptions } from "./oci-image.ts";
import { scratchDir } from "./scratch.ts";

/** The real image/kernel/rootfs steps, for tests (and until create wires its defaults). */
export function realProviders(env: NodeJS.ProcessEnv = process.env): CreateProviders {
  const kernelCache = env.MICROAGENT_KERNEL_CACHE ?? join(tmpdir(), "microagent-test-kernel-cache");
  return {
    async resolveImage(ref, ctx) {
      const image = await resolveImage(ref, { stateDir: ctx.stateDir, arch: ctx.arch, insecureRegistries: insecureFrom(ref) });
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
      const k = await ensureKernel({ stateDir: ctx.stateDir, backend: ctx.backend, arch: ctx.arch, cacheDir: kernelCache });
      return {
        kernel: { path: k.kernelPath, sha256: k.manifest.kernel.sha256 },
        initramfs: { path: k.initramfsPath, sha256: k.manifest.initramfs.sha256 },
      };
    },
    async ensureBaseRootfs(image, ctx) {
      const b = await ensureBaseRootfs(image as LocalImage, { stateDir: ctx.stateDir });
      return { path: b.path, sha256: b.sha256, sizeMib: b.sizeMib, cacheHit: b.cacheHit };
    },
  };
}

function insecureFrom(ref: string): string[] {
  const host = ref.split("/")[0] ?? "";
  return host.startsWith("127.0.0.1:") || host.startsWith("localhost:") ? [host] : [];
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

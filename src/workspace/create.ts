/**
 * `create NAME --image REF ...`: a persistent workspace in state `prepared`. Resolves the image (tags
 * allowed; the digest is recorded), installs the default kernel if missing, builds or reuses the
 * base rootfs, has the backend make the workspace disk over it (linux-qemu: a qcow2 overlay), merges
 * the boot spec, writes boot-config.json, the manifest and the first event. A failure anywhere
 * leaves nothing behind.
 *
 * The heavy steps come from other areas (image, kernel, rootfs, the backend's disk) through
 * `CreateProviders`, so the workspace layer stays independent of how they work (and a unit test can
 * pass small ones). The manifest records the disk format the backend chose.
 */
import { mkdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { hostArch, type Arch, type BackendName } from "../contract/backend.ts";
import { CommonErrors } from "../contract/errors.ts";
import { workspaceExists } from "./access.ts";
import { buildGuestBootConfig, mergeBootSpec } from "./boot-spec.ts";
import { WorkspaceErrors } from "./errors.ts";
import { ensureDir, ensurePrivateDir, isErrno, writeJsonAtomic, DIR_MODE } from "../util/fs.ts";
import { sha256FileCached } from "../util/hash.ts";
import { acquireLock, lockIsStale, readLockRecord, type LockHandle } from "./lock.ts";
import { MANIFEST_VERSION, writeManifest, type Manifest, type NetworkMode } from "./manifest.ts";
import { resolveNetworkSettings, type AddHost, type DnsUpstream, type EgressInputs, type NetworkSettings, type PortForward } from "./network.ts";
import { overlaySizeMib } from "./overlay.ts";
import { sweepTrash } from "./delete.ts";
import { defaultStateDir, validateWorkspaceName, workspacePaths, workspacesRoot, type WorkspacePaths } from "./paths.ts";
import { resolveResources, type ProfileName } from "./profiles.ts";
import { workspaceSecretRefs, type SecretRef } from "../secrets/ref.ts";
import { HOSTNAME_PATTERN, ENV_KEY_PATTERN, loadSpec, type LoadedSpec } from "./spec.ts";
import { recordInitialState, type StateRecord } from "./state.ts";
import { backendDisk, defaultCreateProviders, type CreateProviders, type ProviderContext } from "./providers.ts";

export type { ProviderContext, ResolvedImageInfo, KernelArtifacts, BaseRootfsInfo, CreateProviders, DiskCapability } from "./providers.ts";

export interface CreateWorkspaceOptions {
  name: string;
  stateDir?: string;
  /** Image reference (tag or digest). Overrides the spec's `image`. */
  image?: string;
  /** Path to a microagent.yaml; flags (the fields below) override it. */
  specFile?: string;
  profile?: ProfileName;
  memoryMib?: number;
  cpus?: number;
  sizeMib?: number;
  /** Replaces the spec's setup list when given (even empty). */
  setup?: string[];
  /** A string is shell form; a list is exec form. Drops the image's Cmd. */
  entrypoint?: string | string[];
  /** Replaces the image's Cmd (run IMAGE CMD...). */
  cmd?: string[];
  /** Run the image's Entrypoint/Cmd when no entrypoint or cmd is given; otherwise the workspace boots idle. */
  imageCommand?: boolean;
  /**
   * Resolve the command as above but boot idle and hand it back (`CreateResult.heldCommand`): the
   * caller runs it itself, as an exec or on a PTY (`run -i`/`run -t`; the boot workload has no stdin).
   */
  holdCommand?: boolean;
  /** Working directory of the workload and every exec (default: the image's WorkingDir, else /). */
  cwd?: string;
  /** User of the workload and every exec, `USER[:GROUP]`, name or id, resolved in the guest (default: the image's User, else root). */
  user?: string;
  /** Merged over the spec's env, key by key. */
  env?: Record<string, string>;
  network?: NetworkMode;
  /** User-mode settings (flags); each list replaces the spec's when given. */
  addHosts?: AddHost[];
  dns?: DnsUpstream;
  egressAllow?: string[];
  forwards?: PortForward[];
  /** Egress mediation (`--egress`, `--egress-passthrough`, ..., `--mediation`); merged over the spec's field by field. */
  egress?: EgressInputs;
  hostname?: string;
  /** Secret references (parseSecretRef), merged over the spec's by name. */
  secrets?: SecretRef[];
  backend?: BackendName;
  arch?: Arch;
  providers?: CreateProviders;
  /** mke2fs / debugfs for building the base rootfs on a cache miss (seed: `--mke2fs PATH`). */
  mke2fs?: string;
  debugfs?: string;
  signal?: AbortSignal;
  onProgress?: (message: string) => void;
}

export interface CreateTimings {
  imageMs: number;
  kernelMs: number;
  rootfsMs: number;
  overlayMs: number;
  totalMs: number;
}

export interface CreateResult {
  name: string;
  paths: WorkspacePaths;
  manifest: Manifest;
  state: StateRecord;
  rootfsCacheHit: boolean;
  timings: CreateTimings;
  /** With `holdCommand`: the command the workspace would have run (empty when the image names none). */
  heldCommand?: string[];
}

export async function createWorkspace(options: CreateWorkspaceOptions): Promise<CreateResult> {
  const t0 = performance.now();
  const name = validateWorkspaceName(options.name);
  const stateDir = options.stateDir ?? defaultStateDir();
  const spec = options.specFile ? await loadSpec(options.specFile) : undefined;
  const resolved = resolveCreateInputs(options, spec);
  // Swap delivery needs the mediator: the egress mode is the one this workspace will run with.
  const secretNetwork = { mode: resolved.network.mode, ...(resolved.network.egress ? { egress: resolved.network.egress.mode } : {}) };
  const secrets = workspaceSecretRefs(spec?.secrets, options.secrets, secretNetwork, Object.keys(resolved.env));
  const providers =
    options.providers ??
    defaultCreateProviders({ ...(options.mke2fs ? { mke2fs: options.mke2fs } : {}), ...(options.debugfs ? { debugfs: options.debugfs } : {}) });
  const ctx: ProviderContext = {
    stateDir,
    backend: resolved.backend,
    arch: resolved.arch,
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  };

  const paths = workspacePaths(stateDir, name);
  // The state dir may be one the user named (even /tmp): create it 0700 but never chmod an existing one.
  await ensureDir(stateDir);
  await ensurePrivateDir(workspacesRoot(stateDir));
  const lock = await claimDirectory(paths, stateDir);
  let done = false;
  try {
    const ti = performance.now();
    options.onProgress?.(`resolving ${resolved.image}`);
    const { info: image, image: localImage } = await providers.resolveImage(resolved.image, ctx);
    // The boot config needs only the image config: build (and size-check) it before the slow steps.
    const merged = mergeBootSpec(name, image.config, {
      ...(resolved.entrypoint !== undefined ? { entrypoint: resolved.entrypoint } : {}),
      ...(options.cmd !== undefined ? { cmd: options.cmd } : {}),
      ...(options.imageCommand ? { imageCommand: true } : {}),
      env: resolved.env,
      setup: resolved.setup,
      files: spec?.files ?? [],
      ...(resolved.hostname !== undefined ? { hostname: resolved.hostname } : {}),
      ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
      ...(options.user !== undefined ? { user: options.user } : {}),
    });
    // A held command is not the workspace's: the manifest and boot config say idle, which is what a restart does.
    const boot = options.holdCommand ? { ...merged, argv: [], entrypoint: [], cmd: [] } : merged;
    const guestConfig = await buildGuestBootConfig(boot);
    const tk = performance.now();
    options.onProgress?.("checking the kernel");
    const kernel = await providers.ensureKernel(ctx);
    const tr = performance.now();
    options.onProgress?.("preparing the base rootfs");
    const base = await providers.ensureBaseRootfs(localImage, ctx);
    const to = performance.now();
    // The guest grows its root filesystem to the disk at boot; a size below the base is raised to
    // it, and the manifest records what the disk really is (and what was asked).
    const disk = overlaySizeMib(resolved.resources.sizeMib, base.sizeMib);
    const diskCapability = providers.disk ?? backendDisk(resolved.backend);
    if (!diskCapability) throw noDisks(resolved.backend);
    // The base rootfs is a raw ext4 image (rootfs/build.ts).
    const made = await diskCapability.createDisk({ base: base.path, baseFormat: "raw", path: paths.disk, sizeMib: disk.sizeMib });
    const tm = performance.now();

    await writeJsonAtomic(paths.bootConfig, guestConfig);
    const manifest: Manifest = {
      version: MANIFEST_VERSION,
      name,
      createdAt: new Date().toISOString(),
      backend: resolved.backend,
      arch: resolved.arch,
      image: {
        ref: image.ref,
        resolvedRef: image.resolvedRef,
        digest: image.manifestDigest,
        ...(image.configDigest ? { configDigest: image.configDigest } : {}),
      },
      resources: { ...resolved.resources, sizeMib: disk.sizeMib, ...(disk.raised ? { requestedSizeMib: resolved.resources.sizeMib } : {}) },
      network: resolved.network,
      boot,
      artifacts: {
        kernel: kernel.kernel,
        initramfs: kernel.initramfs,
        rootfsBase: { path: base.path, sha256: base.sha256, sizeMib: base.sizeMib },
        bootConfig: { path: paths.bootConfig, sha256: await sha256FileCached(paths.bootConfig) },
        disk: { path: made.path, format: made.format },
      },
      ...(spec ? { spec: { path: spec.path, sha256: spec.sha256 } } : {}),
      ...(secrets.length > 0 ? { secrets } : {}),
    };
    await writeManifest(paths, manifest);
    const state = await recordInitialState(paths, {
      lock,
      detail: `created from ${image.resolvedRef}${base.cacheHit ? " (cached rootfs)" : ""}`,
      identity: { requestId: "create" },
    });
    done = true;
    // Debris of deletes (and creates) that crashed after moving a directory aside: cheap to look.
    await sweepTrash(stateDir).catch(() => {});
    return {
      name,
      paths,
      manifest,
      state,
      rootfsCacheHit: base.cacheHit,
      ...(options.holdCommand ? { heldCommand: merged.argv } : {}),
      timings: {
        imageMs: tk - ti,
        kernelMs: tr - tk,
        rootfsMs: to - tr,
        overlayMs: tm - to,
        totalMs: performance.now() - t0,
      },
    };
  } finally {
    if (!done) await rm(paths.dir, { recursive: true, force: true }).catch(() => {});
    await lock.release().catch(() => {});
  }
}

/** CreateWorkspaceOptions with the spec merged in and defaults applied. */
export interface ResolvedCreateWorkspaceOptions {
  image: string;
  resources: ReturnType<typeof resolveResources>;
  network: NetworkSettings;
  setup: string[];
  env: Record<string, string>;
  entrypoint?: string | string[];
  hostname?: string;
  backend: BackendName;
  arch: Arch;
}

/** Flags override the spec file, field by field (env key by key). Pure: exported for tests. */
export function resolveCreateInputs(options: CreateWorkspaceOptions, spec?: LoadedSpec): ResolvedCreateWorkspaceOptions {
  const image = options.image ?? spec?.image;
  if (!image) {
    throw CommonErrors.INVALID_ARGUMENT({
      message: `no image for workspace ${options.name}: pass --image REF${spec ? ` or set image: in ${spec.path}` : " or --file with an image: key"}`,
    });
  }
  const network = resolveNetworkSettings(
    {
      ...(options.network !== undefined ? { mode: options.network } : {}),
      ...(options.addHosts !== undefined ? { addHosts: options.addHosts } : {}),
      ...(options.dns !== undefined ? { dns: options.dns } : {}),
      ...(options.egressAllow !== undefined ? { egressAllow: options.egressAllow } : {}),
      ...(options.forwards !== undefined ? { forwards: options.forwards } : {}),
      ...(options.egress !== undefined ? { egress: options.egress } : {}),
    },
    spec ? { ...(spec.network !== undefined ? { mode: spec.network } : {}), ...spec.networkOptions } : undefined,
  );
  const backend = options.backend ?? "linux-qemu";
  if (!options.providers?.disk && !backendDisk(backend)) throw noDisks(backend);
  const env = { ...(spec?.env ?? {}), ...(options.env ?? {}) };
  for (const key of Object.keys(env)) {
    if (!ENV_KEY_PATTERN.test(key)) throw CommonErrors.INVALID_ARGUMENT({ message: `invalid environment variable name '${key}'` });
  }
  const hostname = options.hostname ?? spec?.hostname;
  if (hostname !== undefined && !HOSTNAME_PATTERN.test(hostname)) {
    throw CommonErrors.INVALID_ARGUMENT({ message: `invalid hostname '${hostname}': one label of letters, digits and inner '-', at most 63 characters` });
  }
  const r = spec?.resources ?? {};
  const resources = resolveResources({
    ...((options.profile ?? r.profile) !== undefined ? { profile: options.profile ?? r.profile } : {}),
    ...((options.memoryMib ?? r.memoryMib) !== undefined ? { memoryMib: options.memoryMib ?? r.memoryMib } : {}),
    ...((options.cpus ?? r.cpus) !== undefined ? { cpus: options.cpus ?? r.cpus } : {}),
    ...((options.sizeMib ?? r.sizeMib) !== undefined ? { sizeMib: options.sizeMib ?? r.sizeMib } : {}),
  });
  const entrypoint = options.entrypoint ?? spec?.entrypoint;
  return {
    image,
    resources,
    network,
    setup: options.setup ?? spec?.setup ?? [],
    env,
    ...(entrypoint !== undefined ? { entrypoint } : {}),
    ...(hostname !== undefined ? { hostname } : {}),
    backend,
    arch: options.arch ?? hostArch(),
  };
}

/** A directory without manifest and without a live lock younger than this may be a create that just began. */
const DEBRIS_MIN_AGE_MS = 10_000;

/**
 * Create the workspace directory exclusively and lock it. A directory without a manifest is either
 * a create in progress (it holds the lock, or took it a moment ago) or the debris of a create that
 * crashed. Only debris is moved aside: no live lock holder AND untouched for DEBRIS_MIN_AGE_MS, and
 * still the same directory (inode) once we hold its lock. Anything else is WORKSPACE_EXISTS.
 */
async function claimDirectory(paths: WorkspacePaths, stateDir: string): Promise<LockHandle> {
  for (let attempt = 0; attempt < 3; attempt++) {
    let created = false;
    try {
      await mkdir(paths.dir, { mode: DIR_MODE });
      created = true;
    } catch (e) {
      if (!isErrno(e, "EEXIST")) throw e;
    }
    if (created) {
      const mine = await stat(paths.dir);
      const lock = await acquireLock(paths.lock, { purpose: "create", timeoutMs: 5000 });
      if ((await stat(paths.dir).catch(() => undefined))?.ino === mine.ino) return lock;
      await lock.release(); // our directory was moved away under us: start over
      continue;
    }
    if (await workspaceExists(paths)) throw exists(paths.name);
    const before = await stat(paths.dir).catch(() => undefined);
    if (!before) continue;
    const holder = await readLockRecord(paths.lock);
    if (holder && !lockIsStale(holder)) throw exists(paths.name, `pid ${holder.pid}`);
    if (!holder && Date.now() - before.mtimeMs < DEBRIS_MIN_AGE_MS) throw exists(paths.name, "a create that just began");
    let debrisLock: LockHandle;
    try {
      debrisLock = await acquireLock(paths.lock, { purpose: "create (clearing debris)", timeoutMs: 0 });
    } catch (e) {
      if (WorkspaceErrors.WORKSPACE_LOCKED.is(e)) throw exists(paths.name, "another process");
      if (isErrno(e, "ENOENT")) continue;
      throw e;
    }
    try {
      const now = await stat(paths.dir).catch(() => undefined);
      if (now?.ino !== before.ino) continue; // replaced meanwhile: look again
      if (await workspaceExists(paths)) throw exists(paths.name);
      // The lock file moves aside with the directory; releasing the handle then only frees our turn.
      await rename(paths.dir, join(workspacesRoot(stateDir), `.trash-${paths.name}-${randomBytes(4).toString("hex")}`));
    } finally {
      await debrisLock.release();
    }
  }
  throw exists(paths.name);
}

/** The backend is not implemented here, or cannot make workspace disks. */
function noDisks(backend: BackendName) {
  return WorkspaceErrors.WORKSPACE_UNSUPPORTED({
    message: `backend ${backend} cannot run workspaces yet`,
    remediation: "Use --backend linux-qemu (the default).",
    details: { backend },
  });
}

function exists(name: string, creator?: string) {
  return WorkspaceErrors.WORKSPACE_EXISTS({
    message: `workspace ${name} already exists${creator ? ` (being created right now by ${creator})` : ""}`,
    remediation: `Pick another name, or remove the old one with \`microagent delete ${name}\`.`,
    details: { workspace: name },
  });
}

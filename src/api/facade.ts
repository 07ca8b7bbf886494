/**
 * The free functions of the public API, next to the Workspace class: `run`, `doctor`, images and
 * kernels. Each takes the caller's request and, separately, host-only options, and returns the
 * output model's types (src/contract/results.ts), the same values the CLI prints with `--json`.
 */
import type { ImageJson, ImageSummaryJson, KernelInstallJson, KernelListJson, RunJson } from "../contract/results.ts";
import type { BackendName, Arch } from "../contract/backend.ts";
import { doctor as probeHost, hostReport as probeHostReport, type HostResponse } from "../host/doctor.ts";
import { pullImage as pull, type PullProgress } from "../image/pull.ts";
import { listImages as list, removeImage as remove } from "../image/images.ts";
import { loadImage as load } from "../image/load.ts";
import { installKernel as install } from "../kernel/install.ts";
import { listKernels as kernels } from "../kernel/status.ts";
import { defaultStateDir } from "../workspace/paths.ts";
import { networkOptionsFrom, parseRequest, RunRequestSchema, type HostOptions, type RunRequest } from "./requests.ts";
import { imageJson, imageSummaryJson, kernelInstallJson, runJson } from "./results.ts";
import { runWorkspace } from "./run.ts";

export interface RunCallbacks {
  /** Workload output as it arrives (it is also collected into the result). */
  onOutput?: (stream: "stdout" | "stderr", data: Buffer) => void;
  /** Abort = kill the workspace (and delete it unless `keep`). */
  signal?: AbortSignal;
}

/** Boot a scratch workspace from an image, run one command, tear it down (unless `keep`); resolves with its exit code and output. */
export async function run(request: RunRequest, host: HostOptions & RunCallbacks = {}): Promise<RunJson> {
  const req = parseRequest(RunRequestSchema, request, "run request");
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const r = await runWorkspace({
    image: req.image,
    cmd: req.cmd,
    exec: req.exec,
    name: req.name,
    keep: req.keep,
    timeoutMs: req.timeoutMs,
    env: req.env,
    setup: req.setup,
    profile: req.resources?.profile,
    memoryMib: req.resources?.memoryMib,
    cpus: req.resources?.cpus,
    sizeMib: req.resources?.sizeMib,
    network: req.network,
    ...networkOptionsFrom(req.networkOptions),
    backend: req.backend,
    arch: req.arch,
    stateDir: host.stateDir,
    specFile: host.specFile,
    mke2fs: host.mke2fs,
    debugfs: host.debugfs,
    supervisorPath: host.supervisorPath,
    providers: host.providers,
    onProgress: host.onProgress,
    signal: host.signal,
    onOutput: (stream, data) => {
      (stream === "stdout" ? out : err).push(data);
      host.onOutput?.(stream, data);
    },
  });
  return runJson(r, { stdout: Buffer.concat(out), stderr: Buffer.concat(err) }, host.stateDir ?? defaultStateDir());
}

export interface DoctorRequest {
  backend?: BackendName;
  arch?: Arch;
}

/** Live probes of this host (KVM, user namespaces, tools, kernel) and the verdict (DoctorJsonSchema validates it). */
export async function doctor(request: DoctorRequest = {}, host: Pick<HostOptions, "stateDir" | "supervisorPath"> = {}): Promise<HostResponse> {
  return probeHost({ ...request, stateDir: host.stateDir, supervisor: host.supervisorPath });
}

/** `doctor` plus what each backend can do here (the `host` command). */
export async function hostReport(request: DoctorRequest = {}, host: Pick<HostOptions, "stateDir" | "supervisorPath"> = {}): Promise<HostResponse> {
  return probeHostReport({ ...request, stateDir: host.stateDir, supervisor: host.supervisorPath });
}

/** Pull an image from its registry into the local store (every blob's digest verified). */
export async function pullImage(
  ref: string,
  request: { arch?: Arch } = {},
  host: Pick<HostOptions, "stateDir"> & { signal?: AbortSignal; onPullProgress?: (event: PullProgress) => void } = {},
): Promise<ImageJson> {
  return imageJson(await pull(ref, { arch: request.arch, stateDir: host.stateDir, signal: host.signal, ...(host.onPullProgress ? { onProgress: host.onPullProgress } : {}) }));
}

/** Load an OCI layout directory or a `docker save` archive on this host. */
export async function loadImage(path: string, request: { ref?: string; arch?: Arch } = {}, host: Pick<HostOptions, "stateDir"> = {}): Promise<ImageJson> {
  return imageJson(await load(path, { ...request, stateDir: host.stateDir }));
}

export async function listImages(host: Pick<HostOptions, "stateDir"> = {}): Promise<ImageSummaryJson[]> {
  return (await list({ stateDir: host.stateDir })).map(imageSummaryJson);
}

/** Remove an image record (its blobs stay until pruned). */
export async function removeImage(ref: string, request: { arch?: Arch } = {}, host: Pick<HostOptions, "stateDir"> = {}): Promise<{ removed: string[] }> {
  return remove(ref, { arch: request.arch, stateDir: host.stateDir });
}

/** Install the guest kernel for a backend from the host's package manager and assemble its initramfs. */
export async function installKernel(request: { backend?: BackendName; arch?: Arch; force?: boolean } = {}, host: Pick<HostOptions, "stateDir"> = {}): Promise<KernelInstallJson> {
  return kernelInstallJson(await install({ ...request, stateDir: host.stateDir ?? defaultStateDir() }));
}

export async function listKernels(host: Pick<HostOptions, "stateDir"> = {}): Promise<KernelListJson["kernels"]> {
  return kernels({ stateDir: host.stateDir ?? defaultStateDir() });
}

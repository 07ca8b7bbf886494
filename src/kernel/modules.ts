/**
 * Which kernel modules a guest needs, and in what order to load them. Pure: works on the text of
 * `modules.dep` and `modules.builtin` (as written by depmod), so it is unit-tested on recorded files.
 *
 * `modules.dep` lines read `kernel/a/b.ko: kernel/c.ko kernel/d.ko`, the dependencies listed
 * transitively, nearest first; modprobe loads them in reverse order of the listing, then the module.
 */

export interface ModuleRequest {
  /** Module name as modprobe knows it (`virtio_mmio`; '-' and '_' are the same). */
  name: string;
  /** A required module that is neither built in nor present fails the install. */
  required: boolean;
  /** Why the guest needs it (shown in errors and the manifest). */
  purpose: string;
}

/** What microagent's guest needs from its kernel. */
export const GUEST_MODULES: readonly ModuleRequest[] = [
  { name: "virtio_mmio", required: true, purpose: "virtio devices on the microvm machine (found through ACPI)" },
  { name: "virtio_blk", required: true, purpose: "the root disk" },
  { name: "virtio_console", required: true, purpose: "the host<->guest channel (virtio-serial)" },
  { name: "ext4", required: true, purpose: "the root filesystem" },
  { name: "virtio_net", required: true, purpose: "networking" },
  { name: "virtio_rng", required: false, purpose: "early entropy" },
  { name: "vmw_vsock_virtio_transport", required: false, purpose: "vsock channel (Firecracker)" },
  // The ACPI power button: QMP system_powerdown reaches the guest init as an input event, so a workspace
  // whose channel is severed (quarantine) can still be shut down gracefully.
  { name: "button", required: false, purpose: "ACPI power button (graceful shutdown without the channel)" },
  { name: "evdev", required: false, purpose: "input events from the power button" },
];

export interface ModuleResolution {
  /** Paths relative to the modules directory, as found (maybe compressed), in load order. */
  load: string[];
  /** Requested modules the kernel has built in (nothing to load). */
  builtin: string[];
  /** Optional modules the kernel has neither built in nor as a file. */
  unavailable: string[];
}

export class ModuleResolutionError extends Error {
  readonly missing: string[];
  constructor(missing: string[]) {
    super(`the kernel has neither built in nor as a module: ${missing.join(", ")}`);
    this.missing = missing;
  }
}

/** `kernel/drivers/virtio/virtio_mmio.ko.xz` -> `virtio_mmio`. */
export function moduleName(relPath: string): string {
  const base = relPath.slice(relPath.lastIndexOf("/") + 1);
  return base.replace(/\.ko(\.(xz|zst|gz))?$/, "").replaceAll("-", "_");
}

/** The path a module has once decompressed (`.ko.zst` -> `.ko`). */
export function uncompressedPath(relPath: string): string {
  return relPath.replace(/\.ko\.(xz|zst|gz)$/, ".ko");
}

/** Parse modules.dep into module path -> its dependency paths (in the file's order). */
export function parseModulesDep(text: string): Map<string, string[]> {
  const deps = new Map<string, string[]>();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const colon = line.indexOf(":");
    if (colon <= 0) throw new Error(`malformed modules.dep line: ${line}`);
    const mod = line.slice(0, colon).trim();
    const list = line.slice(colon + 1).trim();
    deps.set(mod, list === "" ? [] : list.split(/\s+/));
  }
  return deps;
}

/** Names of built-in modules from modules.builtin (one path per line). */
export function parseModulesBuiltin(text: string): Set<string> {
  const names = new Set<string>();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line !== "") names.add(moduleName(line));
  }
  return names;
}

/**
 * The closure of `requests` over `modules.dep`, in an order where every module comes after all of
 * its dependencies. Throws ModuleResolutionError when a required module is missing.
 */
export function resolveModules(depText: string, builtinText: string, requests: readonly ModuleRequest[] = GUEST_MODULES): ModuleResolution {
  const deps = parseModulesDep(depText);
  const builtin = parseModulesBuiltin(builtinText);
  const byName = new Map<string, string>();
  for (const path of deps.keys()) byName.set(moduleName(path), path);

  const load: string[] = [];
  const seen = new Set<string>();
  const visiting = new Set<string>();
  const visit = (path: string) => {
    if (seen.has(path)) return;
    if (visiting.has(path)) throw new Error(`modules.dep has a dependency cycle through ${path}`);
    visiting.add(path);
    const list = deps.get(path);
    if (list === undefined) throw new Error(`modules.dep names ${path} as a dependency but has no line for it`);
    // modprobe's order: the listing is nearest-first, so load from the end of the list.
    for (const dep of [...list].reverse()) visit(dep);
    visiting.delete(path);
    seen.add(path);
    load.push(path);
  };

  const builtinHits: string[] = [];
  const unavailable: string[] = [];
  const missing: string[] = [];
  for (const req of requests) {
    const name = req.name.replaceAll("-", "_");
    if (builtin.has(name)) {
      builtinHits.push(name);
      continue;
    }
    const path = byName.get(name);
    if (path === undefined) {
      (req.required ? missing : unavailable).push(name);
      continue;
    }
    visit(path);
  }
  if (missing.length > 0) throw new ModuleResolutionError(missing);
  return { load, builtin: builtinHits, unavailable };
}

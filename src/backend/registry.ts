/**
 * The backend registry: which backends this build implements, by name. `getBackend` (what the
 * supervisor and `--backend` use) goes through it, and so do `host`/`doctor` (the capability table)
 * and `create` (the disk). A new backend is one `register` call here, not edits at each caller.
 */
import type { BackendName } from "../contract/backend.ts";
import { BackendErrors } from "./errors.ts";
import { linuxQemuBackend } from "./linux-qemu.ts";
import type { Backend } from "./types.ts";

/** What `--backend` means when not given (DESIGN.md: linux-kvm first once it exists and KVM is usable). */
export const DEFAULT_BACKEND: BackendName = "linux-qemu";

export class BackendRegistry {
  readonly #byName = new Map<BackendName, Backend>();

  constructor(initial: readonly Backend[] = []) {
    for (const b of initial) this.register(b);
  }

  /** Add a backend; a second one under the same name is refused (one name, one implementation). */
  register(backend: Backend): void {
    if (this.#byName.has(backend.name)) {
      throw BackendErrors.BACKEND_ALREADY_REGISTERED({ message: `backend ${backend.name} is already registered`, details: { backend: backend.name } });
    }
    this.#byName.set(backend.name, backend);
  }

  lookup(name: BackendName): Backend | undefined {
    return this.#byName.get(name);
  }

  /** The implemented backends, in registration order. */
  list(): readonly Backend[] {
    return [...this.#byName.values()];
  }

  /** The named backend (default DEFAULT_BACKEND), or BACKEND_UNSUPPORTED naming the implemented ones. */
  get(name: BackendName | undefined): Backend {
    const wanted = name ?? DEFAULT_BACKEND;
    const found = this.#byName.get(wanted);
    if (found) return found;
    const implemented = [...this.#byName.keys()];
    throw BackendErrors.BACKEND_UNSUPPORTED({
      message: `backend ${wanted} is not implemented yet; this build runs workspaces with ${implemented.join(", ") || "no backend"}`,
      ...(implemented.length
        ? { remediation: `Use ${implemented.map((n) => `\`--backend ${n}\``).join(" or ")} (implemented in this build), or run \`microagent doctor\` to see what this host supports.` }
        : {}),
      details: { backend: wanted, implemented },
    });
  }
}

/** The process-wide registry with the built-in backends. */
export const backendRegistry = new BackendRegistry([linuxQemuBackend]);

export function registerBackend(backend: Backend): void {
  backendRegistry.register(backend);
}

export function lookupBackend(name: BackendName): Backend | undefined {
  return backendRegistry.lookup(name);
}

export function listBackends(): readonly Backend[] {
  return backendRegistry.list();
}

export function getBackend(name: BackendName | undefined): Backend {
  return backendRegistry.get(name);
}

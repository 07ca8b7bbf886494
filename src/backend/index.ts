/**
 * Backend selection: `--backend`, else the first usable one. Only linux-qemu is implemented; the
 * others are named so the refusal can say what exists.
 */
import type { BackendName } from "../contract/backend.ts";
import { BackendErrors } from "./errors.ts";
import { linuxQemuBackend } from "./linux-qemu.ts";
import type { Backend } from "./types.ts";

export function getBackend(name: BackendName | undefined): Backend {
  const wanted = name ?? "linux-qemu";
  if (wanted === "linux-qemu") return linuxQemuBackend;
  throw BackendErrors.BACKEND_UNSUPPORTED({
    message: `backend ${wanted} is not implemented yet; this build runs workspaces with linux-qemu`,
    details: { backend: wanted, implemented: ["linux-qemu"] },
  });
}

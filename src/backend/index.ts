/**
 * Backend selection: `--backend`, else the default, through the registry (registry.ts). Only
 * linux-qemu is implemented; the other names are known so the refusal can say what exists.
 */
export { getBackend, lookupBackend, listBackends, registerBackend, BackendRegistry, DEFAULT_BACKEND } from "./registry.ts";
export { capabilitiesOf, capabilityTable } from "./capabilities.ts";

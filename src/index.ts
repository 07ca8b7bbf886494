/**
 * The microagent library. Explicit, grouped exports: everything the CLI does is reachable here.
 */

// Contract: errors, response shape, backend names.
export { MicroagentError, CommonErrors, ERROR_KINDS, isMicroagentError, toMicroagentError, definedErrorCodes } from "./contract/errors.ts";
export type { ErrorKind, ErrorObject, ErrorSpec } from "./contract/errors.ts";
export type { Response, Verdict } from "./contract/response.ts";
export { BACKENDS, ARCHES, normalizeArch, hostArch } from "./contract/backend.ts";
export type { BackendName, Arch } from "./contract/backend.ts";
export { packageVersion } from "./version.ts";

// Host: doctor and host capability report.

// Kernels.

// Guest channel.

// Images and registries.
export { ImageErrors } from "./image/errors.ts";
export { openLayerStream, compressionOf } from "./image/layer.ts";
export { ImageConfigSchema } from "./image/types.ts";
export type { LocalImage, LocalLayer, ImageConfig, Platform, LayerCompression } from "./image/types.ts";

// Root filesystems.

// Workspaces.

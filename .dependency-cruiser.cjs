/**
 * Layering rules, checked by `npm run lint` (part of `npm test`):
 * - no import cycles;
 * - the library never imports the CLI;
 * - the guest-channel frame codec and protocol stay pure (no I/O modules);
 * - production code never imports tests;
 * - the userspace network stack (src/net) is pure: frames in, frames out, host sides injected; it never
 *   imports sockets, files or processes, nor the VMM, backend or supervisor that will drive it;
 * - the egress decision core (src/egress) never imports the VMM, backend or supervisor;
 * - the layer order of docs/architecture.md ("Layers"), lowest first:
 *     contract <- util <- vmm, channel, image, kernel, rootfs <- backend <- host, workspace
 *       <- supervisor <- api <- cli
 *   Each rule below forbids one layer from importing a layer above it.
 */
module.exports = {
  forbidden: [
    { name: "no-circular", severity: "error", from: {}, to: { circular: true } },
    {
      name: "library-not-cli",
      comment: "src/cli is a thin shell over the library; the library must not depend on it",
      severity: "error",
      from: { path: "^src/(?!cli/)" },
      to: { path: "^src/cli/" },
    },
    {
      name: "pure-protocol",
      comment: "the frame codec and message model are pure: no sockets, files or processes",
      severity: "error",
      from: { path: "^src/channel/(frame|protocol|messages)[^/]*\\.ts$" },
      to: { path: "^(node:)?(net|fs|fs/promises|child_process|dgram|tls|http|https)$", dependencyTypes: ["core"] },
    },
    {
      name: "pure-net",
      comment: "src/net is frame-in/frame-out; sockets, resolvers and policy come in through its interfaces (src/net/types.ts)",
      severity: "error",
      from: { path: "^src/net/" },
      to: { path: "^(node:)?(net|fs|fs/promises|child_process|dgram|tls|http|https|http2|dns|dns/promises|worker_threads|cluster)$", dependencyTypes: ["core"] },
    },
    {
      name: "net-not-drivers",
      comment: "the network stack never depends on what drives it",
      severity: "error",
      from: { path: "^src/net/" },
      to: { path: "^src/(vmm|backend|supervisor|cli|api|workspace)/" },
    },
    {
      name: "egress-not-drivers",
      comment: "the egress decision core, CA and audit never depend on the VMM, backend, supervisor or the layers above",
      severity: "error",
      from: { path: "^src/egress/" },
      to: { path: "^src/(vmm|backend|supervisor|cli|api|workspace)/" },
    },
    { name: "src-not-test", severity: "error", from: { path: "^src/" }, to: { path: "^test/" } },
    {
      name: "contract-is-the-base",
      comment: "src/contract holds the wire types every layer shares; it imports no other area",
      severity: "error",
      from: { path: "^src/contract/" },
      to: { path: "^src/(?!contract/)" },
    },
    {
      name: "util-below-areas",
      comment: "src/util is small shared helpers: only the contract below it",
      severity: "error",
      from: { path: "^src/util/" },
      to: { path: "^src/(?!util/|contract/)" },
    },
    {
      name: "primitives-below-backend",
      comment: "vmm, channel, image, kernel and rootfs are building blocks: they never reach up into backend, host, workspace, supervisor or api",
      severity: "error",
      from: { path: "^src/(vmm|channel|image|kernel|rootfs)/" },
      to: { path: "^src/(backend|host|workspace|supervisor|api)/" },
    },
    {
      name: "vmm-and-channel-stand-alone",
      comment: "the VMM primitives and the guest channel know nothing of images, kernels or root filesystems (or of each other)",
      severity: "error",
      from: { path: "^src/(vmm|channel)/" },
      to: { path: "^src/(vmm|channel|image|kernel|rootfs)/", pathNot: "^src/$1/" },
    },
    {
      name: "backend-below-callers",
      comment: "a backend turns a launch spec into a VM; it never imports the layers that use it (host, workspace, supervisor, api)",
      severity: "error",
      from: { path: "^src/backend/" },
      to: { path: "^src/(host|workspace|supervisor|api)/" },
    },
    {
      name: "host-below-workspace",
      comment: "host probes and reports (it reads backends' capabilities); it never imports workspace, supervisor or api",
      severity: "error",
      from: { path: "^src/host/" },
      to: { path: "^src/(workspace|supervisor|api)/" },
    },
    {
      name: "workspace-below-supervisor",
      comment: "the workspace layer (state dir, manifest, state machine) never imports the supervisor, api or host",
      severity: "error",
      from: { path: "^src/workspace/" },
      to: { path: "^src/(supervisor|api|host)/" },
    },
    {
      name: "workspace-reaches-backend-through-providers",
      comment: "only the providers seam (src/workspace/providers.ts) may touch src/backend: create asks it for the backend's disk",
      severity: "error",
      from: { path: "^src/workspace/", pathNot: "^src/workspace/providers\\.ts$" },
      to: { path: "^src/backend/" },
    },
    {
      name: "server-above-the-library",
      comment: "src/server holds the agent-facing adapters (HTTP, MCP, E2B) over the facade; only the CLI starts them",
      severity: "error",
      from: { path: "^src/(?!cli/|server/)" },
      to: { path: "^src/server/" },
    },
    {
      name: "supervisor-below-api",
      comment: "the supervisor is driven by the api layer, never the other way",
      severity: "error",
      from: { path: "^src/supervisor/" },
      to: { path: "^src/api/" },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: { extensions: [".ts", ".js"] },
  },
};

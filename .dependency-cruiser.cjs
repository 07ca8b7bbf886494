/**
 * Layering rules, checked by `npm run lint:deps` (part of `npm test`):
 * - no import cycles;
 * - the library never imports the CLI;
 * - the guest-channel frame codec and protocol stay pure (no I/O modules);
 * - the userspace network stack (src/net) is pure: frames in, frames out, host sides injected; it never
 *   imports sockets, files or processes, nor the VMM, backend or supervisor that will drive it;
 * - production code never imports tests.
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
    { name: "src-not-test", severity: "error", from: { path: "^src/" }, to: { path: "^test/" } },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: { extensions: [".ts", ".js"] },
  },
};

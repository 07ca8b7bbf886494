import { Command } from "commander";
import { action } from "../action.ts";
import { kernelInstallJson, kernelListJson, kernelVerifyJson } from "../../api/results.ts";
import { formatTable } from "../output.ts";
import { installKernel, type InstallKernelResult } from "../../kernel/install.ts";
import { kernelMismatchError, listKernels, verifyKernel, type KernelStatus } from "../../kernel/status.ts";

export function kernelCommand(): Command {
  const kernel = new Command("kernel").description("install, verify and list the guest kernels (with their initramfs)");

  kernel
    .command("install")
    .description("install the default kernel from the host's package manager, or a custom one with --from/--url and --sha256")
    .option("--from <path>", "a linux-image .deb or a bare kernel image (requires --sha256)")
    .option("--url <url>", "download a .deb or bare kernel image (requires --sha256)")
    .option("--sha256 <hex>", "expected SHA-256 of the --from file or --url download")
    .option("--gzip", "gzip the initramfs (smaller, slightly slower to boot)")
    .option("--force", "reinstall even when the same kernel is already installed")
    .action(
      action(async (ctx, o: { from?: string; url?: string; sha256?: string; gzip?: boolean; force?: boolean }) => {
        const r = await installKernel({
          stateDir: ctx.globals.stateDir,
          ...(ctx.globals.backend ? { backend: ctx.globals.backend } : {}),
          ...(ctx.globals.arch ? { arch: ctx.globals.arch } : {}),
          ...(o.from !== undefined ? { from: o.from } : {}),
          ...(o.url !== undefined ? { url: o.url } : {}),
          ...(o.sha256 !== undefined ? { sha256: o.sha256 } : {}),
          ...(o.gzip ? { compression: "gzip" as const } : {}),
          ...(o.force ? { force: true } : {}),
          onProgress: (m) => ctx.progress(m),
        });
        return { json: kernelInstallJson(r), text: installText(r) };
      }),
    );

  kernel
    .command("verify")
    .description("print a kernel's SHA-256; with --sha256 (or against the install record) fail when it does not match")
    .option("--path <path>", "the kernel file to check (default: the installed kernel)")
    .option("--sha256 <hex>", "the SHA-256 the file must have")
    .action(
      action(async (ctx, o: { path?: string; sha256?: string }) => {
        const r = await verifyKernel({
          stateDir: ctx.globals.stateDir,
          ...(ctx.globals.backend ? { backend: ctx.globals.backend } : {}),
          ...(ctx.globals.arch ? { arch: ctx.globals.arch } : {}),
          ...(o.path !== undefined ? { path: o.path } : {}),
          ...(o.sha256 !== undefined ? { sha256: o.sha256 } : {}),
        });
        if (!r.ok) throw kernelMismatchError(r);
        const note = r.expectedFrom === "flag" ? "  (matches --sha256)" : r.expectedFrom === "manifest" ? "  (matches the install record)" : "";
        return { json: kernelVerifyJson(r), text: `${r.sha256}  ${r.path}${note}` };
      }),
    );

  kernel
    .command("list")
    .description("list installed kernels (every backend and architecture)")
    .action(
      action(async (ctx) => {
        const kernels = await listKernels({ stateDir: ctx.globals.stateDir });
        return { json: kernelListJson(kernels), text: listText(kernels) };
      }),
    );

  return kernel;
}


/** Text for `kernel install` (exported for tests). */
export function installText(r: InstallKernelResult): string {
  const head =
    r.action === "already-installed"
      ? `kernel ${r.manifest.version} already installed`
      : r.action === "initramfs-rebuilt"
        ? `kernel ${r.manifest.version} already installed; initramfs rebuilt for the new guest init`
        : `installed kernel ${r.manifest.version}`;
  return [
    `${head} (${r.manifest.backend}/${r.manifest.arch})`,
    `kernel:    ${r.kernelPath}`,
    `sha256:    ${r.manifest.kernel.sha256}`,
    `initramfs: ${r.initramfsPath} (${r.manifest.modules.length} modules)`,
    `source:    ${sourceText(r.manifest.source)}`,
  ].join("\n");
}

function sourceText(s: InstallKernelResult["manifest"]["source"]): string {
  if (s.kind === "apt") return `${s.package} ${s.version} (apt, via ${s.metaPackage})`;
  if (s.kind === "file") return s.path;
  return s.url;
}

/** Text for `kernel list` (exported for tests). */
export function listText(kernels: readonly KernelStatus[]): string {
  if (kernels.length === 0) return "no kernels installed (run `microagent kernel install`)";
  return formatTable(
    ["BACKEND", "ARCH", "VERSION", "STATUS", "SHA256", "PATH"],
    kernels.map((k) => [k.backend, k.arch, k.version ?? "-", k.status, k.sha256 ? k.sha256.slice(0, 12) : "-", k.error ? `${k.path} (${k.error})` : k.path]),
  );
}

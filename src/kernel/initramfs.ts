/**
 * The initramfs microagent boots every guest with. Its layout is the contract with microagent-init:
 *   /init                       the guest init (static binary)
 *   /lib/modules/<path>.ko      uncompressed kernel modules
 *   /lib/modules/load-order     one module path per line, relative to /lib/modules/, in dependency order
 * plus empty mount points and /dev/console (so the kernel can give init a console before devtmpfs).
 * Deterministic: the same init and modules give the same bytes.
 */
import { gzipSync } from "node:zlib";
import { writeCpio, type CpioEntry } from "./cpio.ts";

export const LOAD_ORDER_PATH = "lib/modules/load-order";

export interface InitramfsModule {
  /** Path relative to /lib/modules, ending in .ko. */
  path: string;
  data: Buffer;
}

export interface InitramfsInput {
  init: Buffer;
  /** In load order. */
  modules: readonly InitramfsModule[];
  compression?: "none" | "gzip";
}

export function buildInitramfs(input: InitramfsInput): Buffer {
  const entries: CpioEntry[] = [
    { path: "init", type: "file", mode: 0o755, data: input.init },
    { path: "dev", type: "dir" },
    { path: "dev/console", type: "chardev", mode: 0o600, rdevMajor: 5, rdevMinor: 1 },
    { path: "proc", type: "dir" },
    { path: "sys", type: "dir" },
    { path: "run", type: "dir" },
    { path: "tmp", type: "dir", mode: 0o1777 },
    { path: "lib/modules", type: "dir" },
    { path: LOAD_ORDER_PATH, type: "file", mode: 0o644, data: input.modules.map((m) => `${m.path}\n`).join("") },
  ];
  for (const m of input.modules) {
    if (!m.path.endsWith(".ko") || m.path.startsWith("/") || m.path.split("/").includes("..")) {
      throw new Error(`initramfs: bad module path ${m.path}`);
    }
    entries.push({ path: `lib/modules/${m.path}`, type: "file", mode: 0o644, data: m.data });
  }
  const cpio = writeCpio(entries);
  return input.compression === "gzip" ? gzipSync(cpio, { level: 9 }) : cpio;
}

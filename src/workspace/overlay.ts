/**
 * The workspace disk: a qcow2 overlay whose backing file is the cached base rootfs (raw ext4), so
 * creating a workspace writes a few hundred KiB instead of copying the image. The guest's writes
 * land in the overlay; the base stays byte-identical and shared.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { z } from "zod";
import { CommonErrors } from "../contract/errors.ts";
import { WorkspaceErrors } from "./errors.ts";

const run = promisify(execFile);
const QEMU_IMG_TIMEOUT_MS = 30000;

export function qemuImgPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.MICROAGENT_QEMU_IMG || "qemu-img";
}

export interface OverlayOptions {
  /** Virtual size in MiB; never below the base's own size. */
  sizeMib: number;
  baseSizeMib?: number;
}

/**
 * The disk size a workspace really gets: what was asked, but never less than the base rootfs (a
 * qcow2 smaller than its backing file would cut the filesystem off). Pure: create reports it.
 */
export function overlaySizeMib(requestedMib: number, baseSizeMib = 0): { sizeMib: number; raised: boolean } {
  const floor = Math.ceil(baseSizeMib);
  return requestedMib >= floor ? { sizeMib: requestedMib, raised: false } : { sizeMib: floor, raised: true };
}

/** `qemu-img create -f qcow2 -F raw -b BASE OVERLAY SIZE`; returns the virtual size used, MiB. */
export async function createOverlay(basePath: string, overlayPath: string, options: OverlayOptions): Promise<number> {
  const { sizeMib } = overlaySizeMib(options.sizeMib, options.baseSizeMib);
  await qemuImg(["create", "-q", "-f", "qcow2", "-F", "raw", "-b", basePath, overlayPath, `${sizeMib}M`]);
  return sizeMib;
}

export const QemuImgInfoSchema = z
  .object({
    format: z.string(),
    "virtual-size": z.number(),
    "actual-size": z.number().optional(),
    filename: z.string(),
    "backing-filename": z.string().optional(),
    "full-backing-filename": z.string().optional(),
    "backing-filename-format": z.string().optional(),
  })
  .loose();
export type QemuImgInfo = z.infer<typeof QemuImgInfoSchema>;

/** `qemu-img info --output=json` (without opening the backing chain's contents). */
export async function overlayInfo(path: string): Promise<QemuImgInfo> {
  const out = await qemuImg(["info", "--output=json", "-U", path]);
  return QemuImgInfoSchema.parse(JSON.parse(out));
}

async function qemuImg(args: string[]): Promise<string> {
  const bin = qemuImgPath();
  try {
    const { stdout } = await run(bin, args, { timeout: QEMU_IMG_TIMEOUT_MS, maxBuffer: 1 << 20 });
    return stdout;
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string; killed?: boolean };
    if (err.code === "ENOENT") {
      throw CommonErrors.TOOL_MISSING({
        message: `qemu-img not found (${bin})`,
        remediation: "Install qemu-utils (apt install qemu-utils) or set MICROAGENT_QEMU_IMG to its path.",
        cause: e,
      });
    }
    const stderr = (err.stderr ?? err.message).trim();
    if (/No space left on device/i.test(stderr)) {
      throw CommonErrors.DISK_FULL({
        message: `no space left on the host for the workspace disk (qemu-img ${args[0]}: ${stderr.split("\n").at(-1)})`,
        cause: e,
      });
    }
    throw WorkspaceErrors.WORKSPACE_CREATE_FAILED({
      message: `qemu-img ${args[0]} failed${err.killed ? ` (timed out after ${QEMU_IMG_TIMEOUT_MS} ms)` : ""}: ${(err.stderr ?? err.message).trim().split("\n").slice(-2).join(" ")}`,
      cause: e,
    });
  }
}

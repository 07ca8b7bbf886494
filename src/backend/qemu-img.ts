/**
 * `qemu-img`, the disk tool behind linux-qemu's disk capability: a qcow2 overlay whose backing file
 * is the cached base rootfs (raw ext4), so creating a workspace writes a few hundred KiB instead of
 * copying the image. The guest's writes land in the overlay; the base stays byte-identical and
 * shared. Moved here from src/workspace/: the workspace layer asks the backend for a disk and
 * records the format it got.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { z } from "zod";
import type { DiskFormat } from "../contract/backend.ts";
import { CommonErrors } from "../contract/errors.ts";
import { BackendErrors } from "./errors.ts";

const run = promisify(execFile);
const QEMU_IMG_TIMEOUT_MS = 30000;

export function qemuImgPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.MICROAGENT_QEMU_IMG || "qemu-img";
}

/** `qemu-img create -f qcow2 -F BASEFORMAT -b BASE OVERLAY SIZE`. */
export async function createQcow2Overlay(base: string, baseFormat: DiskFormat, overlay: string, sizeMib: number): Promise<void> {
  await qemuImg(["create", "-q", "-f", "qcow2", "-F", baseFormat, "-b", base, overlay, `${sizeMib}M`]);
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
export async function qemuImgInfo(path: string): Promise<QemuImgInfo> {
  const out = await qemuImg(["info", "--output=json", "-U", path]);
  return QemuImgInfoSchema.parse(JSON.parse(out));
}

/**
 * The files of `path`'s backing chain, top first (`qemu-img info --backing-chain -U`): what must stay
 * on disk for it to open. Read without locks: the chain may be open in a running QEMU.
 */
export async function qemuImgBackingChain(path: string): Promise<string[]> {
  const out = await qemuImg(["info", "--backing-chain", "--output=json", "-U", path]);
  const parsed = z.array(z.object({ filename: z.string() }).loose()).parse(JSON.parse(out));
  return parsed.map((e) => e.filename);
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
    throw BackendErrors.DISK_CREATE_FAILED({
      message: `qemu-img ${args[0]} failed${err.killed ? ` (timed out after ${QEMU_IMG_TIMEOUT_MS} ms)` : ""}: ${stderr.split("\n").slice(-2).join(" ")}`,
      cause: e,
    });
  }
}

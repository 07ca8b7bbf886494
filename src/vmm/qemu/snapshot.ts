/**
 * Snapshot primitives on a running QEMU, over QMP. A snapshot is three things taken while the vCPUs are
 * stopped: the memory + device state (a migration stream written to a file), the disk as it was (the
 * current qcow2 overlay, frozen by switching the VM onto a new overlay above it), and the facts the
 * caller records next to them. Nothing here knows about workspaces: the backend decides where files go.
 *
 * The order that works (QEMU 7.2, microvm, virtio-mmio), and why:
 *   1. `pauseVm`     QMP `stop`. QEMU drains in-flight disk requests before it answers, so the disk
 *                    and memory agree from here on.
 *   2. `freezeDisk`  `blockdev-snapshot-sync` onto a pre-made overlay (mode `existing`). Must come before
 *                    the save: a completed migration inactivates the source's disks, and QEMU then refuses
 *                    block graph changes until `cont`.
 *   3. `saveVmState` `migrate` to `exec:` a shell that writes the file (QEMU 7.2 has no `file:` URI, and
 *                    Node cannot pass a descriptor over the QMP socket for `getfd`). Not live: the VM is
 *                    stopped, so it is one pass over RAM, zero pages sent as flags only.
 *   4. `resumeVm`    QMP `cont` (re-activates the disks, reopening them by file name: none of the VM's
 *                    files may have been moved meanwhile; now writing to the new overlay).
 * Restore: launch with `incoming: "defer"` and the same machine (memory, CPUs, devices in the same order;
 * the disk a new overlay over the frozen layer), then `restoreVmState` (`migrate-incoming` from the file,
 * then `cont`). The stream carries device state only, not disk contents, and addresses devices by their
 * place on the bus, so drive ids and file names of the restoring VM may differ.
 */
import { execFile } from "node:child_process";
import { access, constants, open, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";
import { z } from "zod";
import { CommonErrors, type MicroagentError } from "../../contract/errors.ts";
import { FILE_MODE } from "../../util/fs.ts";
import { VmmErrors } from "../errors.ts";
import type { QemuSpec } from "./args.ts";
import type { QmpClient } from "./qmp.ts";

const run = promisify(execFile);

/** How often query-migrate / query-status are polled while a save or restore runs. */
const POLL_MS = 10;
/** A stopped VM's state is written in one pass: no reason to throttle it (QEMU's default is 128 MiB/s). */
const SAVE_MAX_BANDWIDTH_BYTES = 64 * 1024 * 1024 * 1024;

const MigrateInfoSchema = z
  .object({
    status: z.string().optional(),
    "error-desc": z.string().optional(),
    "total-time": z.number().optional(),
    ram: z.object({ transferred: z.number().optional(), total: z.number().optional() }).loose().optional(),
  })
  .loose();
type MigrateInfo = z.infer<typeof MigrateInfoSchema>;

const BlockInfoSchema = z.array(
  z
    .object({
      device: z.string(),
      qdev: z.string().optional(),
      inserted: z
        .object({
          file: z.string(),
          "node-name": z.string().optional(),
          drv: z.string(),
          ro: z.boolean().optional(),
          image: z.object({ "virtual-size": z.number(), format: z.string() }).loose(),
        })
        .loose()
        .optional(),
    })
    .loose(),
);

/** Migration states after which nothing more happens. */
const MIGRATION_DONE = new Set(["completed", "failed", "cancelled"]);
const MIGRATION_BUSY = new Set(["setup", "active", "cancelling", "pre-switchover", "device", "postcopy-active", "postcopy-paused", "postcopy-recover", "wait-unplug"]);

export interface PauseResult {
  /** Round trip of the QMP command (QEMU answers once the vCPUs are stopped and disk I/O drained). */
  ms: number;
}

/** Freeze the vCPUs (QMP `stop`). Memory, devices, sockets and the channel connection stay as they are. */
export async function pauseVm(qmp: QmpClient, opts: { timeoutMs?: number } = {}): Promise<PauseResult> {
  const t0 = performance.now();
  await qmp.execute("stop", undefined, { timeoutMs: opts.timeoutMs ?? 10_000 });
  return { ms: performance.now() - t0 };
}

/** Thaw the vCPUs (QMP `cont`); also after a save or a restore, which leave the VM stopped. */
export async function resumeVm(qmp: QmpClient, opts: { timeoutMs?: number } = {}): Promise<PauseResult> {
  const t0 = performance.now();
  await qmp.execute("cont", undefined, { timeoutMs: opts.timeoutMs ?? 10_000 });
  return { ms: performance.now() - t0 };
}

async function assertPaused(qmp: QmpClient, what: string): Promise<string> {
  const { status, running } = await qmp.queryStatus();
  if (running || status === "inmigrate") {
    throw VmmErrors.SNAPSHOT_VM_NOT_PAUSED({ message: `cannot ${what}: the VM is ${status}, not paused`, details: { status } });
  }
  return status;
}

async function queryMigrate(qmp: QmpClient): Promise<MigrateInfo> {
  const ret = await qmp.execute("query-migrate");
  const parsed = MigrateInfoSchema.safeParse(ret);
  if (!parsed.success) throw VmmErrors.QMP_PROTOCOL({ message: `unexpected query-migrate reply: ${JSON.stringify(ret).slice(0, 200)}` });
  return parsed.data;
}

/** Quote one word for `/bin/sh -c` (QEMU runs `exec:` URIs through the shell). */
export function shellQuote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

export interface SaveVmStateOptions {
  /** Bound on the whole save, file flushed included. Default 120 s. */
  timeoutMs?: number;
}

export interface SaveVmStateResult {
  /** The state file (0600), complete and flushed. */
  path: string;
  bytes: number;
  ms: number;
  /** RAM bytes QEMU reports as sent (zero pages count as a few bytes each). */
  ramTransferredBytes?: number;
}

/**
 * Write the paused VM's memory and device state to `file`, atomically: a 0600 temp file next to it that
 * a shell child of QEMU fills and flushes (`dd conv=fsync`) and renames to a marker name once `dd`
 * succeeded, then our rename to `file`. QEMU reports `completed` when it has handed the last bytes to
 * the pipe, not when they are on disk; the marker is how we know the writer finished. On any failure or
 * timeout the migration is cancelled and no file is left. The VM stays paused (`postmigrate`); call
 * `resumeVm` to go on.
 */
export async function saveVmState(qmp: QmpClient, file: string, opts: SaveVmStateOptions = {}): Promise<SaveVmStateResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const deadline = Date.now() + timeoutMs;
  const t0 = performance.now();
  const target = resolve(file);
  await assertPaused(qmp, "save the VM state");
  const before = await queryMigrate(qmp);
  if (before.status !== undefined && MIGRATION_BUSY.has(before.status)) {
    throw VmmErrors.SNAPSHOT_MIGRATION_BUSY({ message: `cannot save the VM state: a migration is already ${before.status}`, details: { status: before.status } });
  }
  await qmp.execute("migrate-set-parameters", { "max-bandwidth": SAVE_MAX_BANDWIDTH_BYTES });

  const tag = `${process.pid}.${randomBytes(4).toString("hex")}`;
  const tmp = join(dirname(target), `.${basename(target)}.${tag}.tmp`);
  const written = join(dirname(target), `.${basename(target)}.${tag}.written`);
  const cleanup = async () => {
    await rm(tmp, { force: true });
    await rm(written, { force: true });
  };
  // Create it ourselves so the mode is 0600 whatever QEMU's umask; dd keeps an existing file's mode.
  try {
    await (await open(tmp, "wx", FILE_MODE)).close();
  } catch (e) {
    throw saveFileError(e, target);
  }
  const uri = `exec:dd of=${shellQuote(tmp)} bs=1M conv=fsync status=none && mv -f ${shellQuote(tmp)} ${shellQuote(written)}`;
  try {
    await qmp.execute("migrate", { uri });
    let info: MigrateInfo = {};
    for (;;) {
      info = await queryMigrate(qmp);
      if (info.status !== undefined && MIGRATION_DONE.has(info.status)) break;
      if (Date.now() >= deadline) {
        await qmp.execute("migrate_cancel").catch(() => {});
        throw VmmErrors.SNAPSHOT_SAVE_TIMEOUT({ message: `saving the VM state did not finish within ${timeoutMs} ms (migration ${info.status ?? "unknown"})`, details: { timeoutMs, status: info.status } });
      }
      await delay(POLL_MS);
    }
    if (info.status !== "completed") {
      throw VmmErrors.SNAPSHOT_SAVE_FAILED({
        message: `QEMU could not save the VM state to ${target}: migration ${info.status}${info["error-desc"] ? `: ${info["error-desc"]}` : ""}`,
        details: { path: target, status: info.status, error: info["error-desc"] },
      });
    }
    // The writer may still be flushing the tail of the stream.
    while (!(await exists(written))) {
      if (Date.now() >= deadline) {
        throw VmmErrors.SNAPSHOT_SAVE_TIMEOUT({ message: `QEMU sent the whole VM state but the file was not flushed within ${timeoutMs} ms`, details: { timeoutMs, path: target } });
      }
      await delay(POLL_MS);
    }
    await rename(written, target);
    await syncDir(dirname(target));
    const st = await stat(target);
    return { path: target, bytes: st.size, ms: performance.now() - t0, ...(info.ram?.transferred !== undefined ? { ramTransferredBytes: info.ram.transferred } : {}) };
  } catch (e) {
    await cleanup();
    if (VmmErrors.QMP_COMMAND_FAILED.is(e)) {
      throw VmmErrors.SNAPSHOT_SAVE_FAILED({ message: `QEMU could not start saving the VM state: ${(e as Error).message}`, cause: e, details: { path: target } });
    }
    throw e;
  }
}

function saveFileError(e: unknown, target: string): MicroagentError {
  const err = e as NodeJS.ErrnoException;
  if (err.code === "ENOSPC") return CommonErrors.DISK_FULL({ message: `no space left to save the VM state to ${target}`, cause: e });
  return VmmErrors.SNAPSHOT_SAVE_FAILED({ message: `cannot create the VM state file next to ${target}: ${err.message}`, cause: e, details: { path: target } });
}

export interface FreezeDiskOptions {
  /** The drive id (`-drive id=`, e.g. "disk0") or node name of the disk to freeze. */
  device: string;
  /** The new top overlay the VM writes to from now on; must not exist. Created 0600. */
  newOverlayPath: string;
  /**
   * The backing file name written into the new overlay's header (what a later QEMU start opens). Default:
   * the frozen file's current path. A relative name resolves against the new overlay's directory, so a
   * workspace directory can move as a whole. Never rename or move a file the running QEMU has open: on
   * `cont` after a save QEMU re-activates its disks by reopening them by name, and fails ("Could not
   * open ...") if one moved, leaving the VM stopped.
   */
  backingFile?: string;
  /** Bound on each step. Default 30 s. */
  timeoutMs?: number;
}

export interface FreezeDiskResult {
  /** The file that is now read-only to the VM: the snapshot's disk. */
  frozenPath: string;
  frozenFormat: string;
  newOverlayPath: string;
  virtualSizeBytes: number;
}

/**
 * Switch the paused VM's disk `device` onto a new qcow2 overlay whose backing is the current image, so
 * the current image holds the disk exactly as of the pause and is never written again. The overlay is
 * made with `qemu-img create -u` (the backing is open in QEMU; no need to open it again) and attached
 * with `blockdev-snapshot-sync` mode `existing` (QEMU links the backing in memory, it does not reopen it
 * by name).
 */
export async function freezeDisk(qmp: QmpClient, opts: FreezeDiskOptions): Promise<FreezeDiskResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  await assertPaused(qmp, "freeze the disk");
  const ret = await qmp.execute("query-block", undefined, { timeoutMs });
  const parsed = BlockInfoSchema.safeParse(ret);
  if (!parsed.success) throw VmmErrors.QMP_PROTOCOL({ message: `unexpected query-block reply: ${JSON.stringify(ret).slice(0, 200)}` });
  const entry = parsed.data.find((b) => b.device === opts.device || b.inserted?.["node-name"] === opts.device);
  if (!entry?.inserted) {
    throw VmmErrors.SNAPSHOT_DISK_FREEZE_FAILED({
      message: `the VM has no disk ${JSON.stringify(opts.device)} (has: ${parsed.data.map((b) => b.device || b.inserted?.["node-name"]).join(", ") || "none"})`,
      details: { device: opts.device },
    });
  }
  const frozenPath = hostFilename(entry.inserted.file);
  const frozenFormat = entry.inserted.image.format;
  const virtualSizeBytes = entry.inserted.image["virtual-size"];
  const overlay = resolve(opts.newOverlayPath);
  await createOverlayImage(overlay, { backingFile: opts.backingFile ?? frozenPath, backingFormat: frozenFormat, virtualSizeBytes, timeoutMs });
  try {
    await qmp.execute("blockdev-snapshot-sync", { ...(entry.device ? { device: entry.device } : { "node-name": entry.inserted["node-name"] }), "snapshot-file": overlay, format: "qcow2", mode: "existing" }, { timeoutMs });
  } catch (e) {
    await rm(overlay, { force: true });
    if (VmmErrors.QMP_COMMAND_FAILED.is(e)) {
      throw VmmErrors.SNAPSHOT_DISK_FREEZE_FAILED({ message: `QEMU could not switch ${opts.device} to ${overlay}: ${(e as Error).message}`, cause: e, details: { device: opts.device, path: overlay } });
    }
    throw e;
  }
  return { frozenPath, frozenFormat, newOverlayPath: overlay, virtualSizeBytes };
}

/**
 * The host file behind a block node's reported name. After a `freezeDisk` QEMU names the new top node
 * by its options (`json:{"driver":"qcow2","file":{"driver":"file","filename":"/x/disk-1.qcow2"},...}`),
 * because its backing was linked in memory rather than opened from the header: take the file child's name.
 */
export function hostFilename(reported: string): string {
  if (!reported.startsWith("json:")) return reported;
  try {
    const opts = JSON.parse(reported.slice("json:".length)) as { file?: { filename?: unknown } | string; filename?: unknown };
    if (typeof opts.file === "string") return opts.file;
    if (typeof opts.file?.filename === "string") return opts.file.filename;
    if (typeof opts.filename === "string") return opts.filename;
  } catch {
    // Fall through: report it as QEMU gave it.
  }
  return reported;
}

export interface CreateOverlayImageOptions {
  /** Backing file name recorded in the header (relative names resolve against the overlay's directory). */
  backingFile: string;
  backingFormat: string;
  virtualSizeBytes: number;
  timeoutMs?: number;
}

/**
 * `qemu-img create -f qcow2 -u -b BACKING -F FMT OVERLAY SIZE`, 0600, refusing an existing file. `-u` skips opening the backing
 * (it may be open read-write in a running QEMU, whose lock would refuse us), so the size is explicit.
 * Also what a restore or a fork boots from: a new overlay over the frozen layer, one per VM.
 */
export async function createOverlayImage(overlayPath: string, o: CreateOverlayImageOptions): Promise<void> {
  const bin = process.env.MICROAGENT_QEMU_IMG || "qemu-img";
  // Reserve the name (never overwrite a disk) with the final mode; qemu-img rewrites the file in place.
  try {
    await (await open(overlayPath, "wx", FILE_MODE)).close();
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === "ENOSPC") throw CommonErrors.DISK_FULL({ message: `no space left for the overlay ${overlayPath}`, cause: e });
    throw VmmErrors.SNAPSHOT_DISK_FREEZE_FAILED({
      message: err.code === "EEXIST" ? `the overlay ${overlayPath} already exists` : `cannot create the overlay ${overlayPath}: ${err.message}`,
      cause: e,
      details: { path: overlayPath },
    });
  }
  try {
    await run(bin, ["create", "-q", "-f", "qcow2", "-u", "-b", o.backingFile, "-F", o.backingFormat, overlayPath, String(o.virtualSizeBytes)], { timeout: o.timeoutMs ?? 30_000 });
  } catch (e) {
    await rm(overlayPath, { force: true });
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === "ENOENT") {
      throw CommonErrors.TOOL_MISSING({ message: `qemu-img not found (${bin})`, remediation: "Install qemu-utils (apt install qemu-utils) or set MICROAGENT_QEMU_IMG to its path.", cause: e });
    }
    const stderr = (err.stderr ?? err.message).trim();
    if (/No space left on device/i.test(stderr)) throw CommonErrors.DISK_FULL({ message: `no space left for the overlay ${overlayPath}`, cause: e });
    throw VmmErrors.SNAPSHOT_DISK_FREEZE_FAILED({ message: `qemu-img could not create the overlay ${overlayPath}: ${stderr.split("\n").slice(-2).join(" ")}`, cause: e, details: { path: overlayPath } });
  }
}

/**
 * The launch spec of a VM that will receive a state saved from a VM launched with `spec`: the same
 * machine, waiting for `migrate-incoming`. The caller swaps in its own sockets, serial log and root disk
 * (a fresh overlay over the frozen layer); memory, CPUs, accelerator, CPU model and the device list must
 * stay as they were, or QEMU refuses the stream. The kernel and initramfs are only used to build the
 * (identical) machine: the guest's kernel is in the saved memory.
 */
export function restoreLaunchSpec(spec: QemuSpec, changes: Pick<Partial<QemuSpec>, "rootDisk" | "channel" | "serial" | "qmpSocketPath" | "network">): QemuSpec {
  return { ...spec, ...changes, incoming: "defer" };
}

export interface RestoreVmStateOptions {
  /** Bound on loading the state. Default 120 s. */
  timeoutMs?: number;
  /** `cont` once loaded. Default true; false leaves the VM paused (e.g. to reconfigure first). */
  resume?: boolean;
  /** QEMU exits when it cannot load a stream: its stderr explains why. */
  stderrTail?: () => string;
}

export interface RestoreVmStateResult {
  ms: number;
  /** The run state the saved VM had (QEMU carries it in the stream): "paused" for our saves. */
  loadedStatus: string;
}

/**
 * Load `file` into a QEMU launched with `incoming: "defer"` (`migrate-incoming` from `exec:cat FILE`),
 * wait until it is in, then `cont`. QEMU 7.2 exits when the stream does not fit the machine (a different
 * memory size or device list) or is truncated; that shows as SNAPSHOT_RESTORE_FAILED with its stderr.
 */
export async function restoreVmState(qmp: QmpClient, file: string, opts: RestoreVmStateOptions = {}): Promise<RestoreVmStateResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const deadline = Date.now() + timeoutMs;
  const t0 = performance.now();
  const source = resolve(file);
  try {
    await access(source, constants.R_OK);
  } catch (e) {
    throw VmmErrors.SNAPSHOT_STATE_MISSING({ message: `the saved VM state ${source} cannot be read: ${(e as Error).message}`, cause: e, details: { path: source } });
  }
  const failed = (reason: string, cause?: unknown) => {
    const stderr = opts.stderrTail?.().trim();
    return VmmErrors.SNAPSHOT_RESTORE_FAILED({
      message: `QEMU could not restore ${source}: ${reason}${stderr ? `; its error output:\n${stderr}` : ""}`,
      ...(cause !== undefined ? { cause } : {}),
      details: { path: source, ...(stderr ? { stderrTail: stderr } : {}) },
    });
  };
  try {
    const { status } = await qmp.queryStatus();
    if (status !== "inmigrate") {
      throw VmmErrors.SNAPSHOT_NOT_INCOMING({ message: `cannot restore into this QEMU: it is ${status}, not waiting for incoming state`, details: { status } });
    }
    try {
      await qmp.execute("migrate-incoming", { uri: `exec:cat ${shellQuote(source)}` });
    } catch (e) {
      if (VmmErrors.QMP_COMMAND_FAILED.is(e)) {
        throw VmmErrors.SNAPSHOT_NOT_INCOMING({ message: `QEMU refused to receive state: ${(e as Error).message}`, cause: e });
      }
      throw e;
    }
    let loadedStatus = "inmigrate";
    for (;;) {
      loadedStatus = (await qmp.queryStatus()).status;
      if (loadedStatus !== "inmigrate") break;
      const info = await queryMigrate(qmp);
      if (info.status === "failed" || info.status === "cancelled") throw failed(`migration ${info.status}${info["error-desc"] ? `: ${info["error-desc"]}` : ""}`);
      if (Date.now() >= deadline) {
        throw VmmErrors.SNAPSHOT_RESTORE_TIMEOUT({ message: `restoring ${source} did not finish within ${timeoutMs} ms`, details: { path: source, timeoutMs } });
      }
      await delay(POLL_MS);
    }
    if (loadedStatus === "internal-error" || loadedStatus === "guest-panicked") throw failed(`the VM came up ${loadedStatus}`);
    if (opts.resume ?? true) await qmp.execute("cont");
    return { ms: performance.now() - t0, loadedStatus };
  } catch (e) {
    // A stream QEMU cannot load makes it exit: the control connection closing is that failure.
    if (VmmErrors.QMP_CLOSED.is(e)) throw failed("QEMU exited while loading the state", e);
    throw e;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

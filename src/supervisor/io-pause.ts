/**
 * A VM paused by an I/O error (reliability D5). QEMU's default `werror=enospc` stops the vCPUs when a
 * disk write fails with ENOSPC, so a full host disk freezes the guest: without this, microagent kept
 * saying `running` and every exec ran into its timeout. The supervisor watches the VMM's events, turns
 * the pause into a DISK_FULL condition that requests fail with at once, checks the host's free space
 * while paused, and resumes the VM (QMP `cont`) once enough is back.
 */
import { statfs } from "node:fs/promises";
import { dirname } from "node:path";
import { CommonErrors, type MicroagentError } from "../contract/errors.ts";
import type { RunningVm, VmEvent } from "../backend/types.ts";

/** Free bytes needed on the disk's file system before a VM paused on ENOSPC is resumed. */
export const DEFAULT_RESUME_FREE_BYTES = 64 * 1024 * 1024;
/** How often free space is checked while paused. */
export const DEFAULT_IO_PAUSE_POLL_MS = 2000;

export interface IoPause {
  device: string;
  operation: string;
  /** True when the host reported ENOSPC (the only cause we resume from by ourselves). */
  nospace: boolean;
  reason: string;
  since: string;
}

export interface IoPauseWatchOptions {
  workspace: string;
  /** The VM's disk image: its file system is the one that filled up. */
  diskPath: string;
  resumeFreeBytes?: number;
  pollMs?: number;
  /** Free bytes on the file system holding `path` (default: statfs). */
  freeBytes?: (path: string) => Promise<number>;
  /** True while the VM is frozen on purpose (`pause`, quarantine): space coming back must not thaw it. */
  holdResume?: () => boolean;
  log(message: string): void;
}

export async function statfsFreeBytes(path: string): Promise<number> {
  const s = await statfs(path);
  return Number(s.bavail) * Number(s.bsize);
}

export class IoPauseWatch {
  readonly #vm: RunningVm;
  readonly #opts: IoPauseWatchOptions;
  readonly #resumeFreeBytes: number;
  #paused: IoPause | undefined;
  #timer: NodeJS.Timeout | undefined;
  #off: (() => void) | undefined;
  #waiters = new Set<(e: MicroagentError) => void>();

  constructor(vm: RunningVm, opts: IoPauseWatchOptions) {
    this.#vm = vm;
    this.#opts = opts;
    this.#resumeFreeBytes = opts.resumeFreeBytes ?? DEFAULT_RESUME_FREE_BYTES;
    this.#off = vm.onEvent?.((e) => this.#onEvent(e));
    void vm.exited.then(() => this.stop());
  }

  /** The pause, while the VM is paused on an I/O error. */
  get paused(): IoPause | undefined {
    return this.#paused;
  }

  /** The error requests fail with while paused. */
  error(): MicroagentError {
    const p = this.#paused;
    const what = p?.nospace ? "the host disk is full" : `a disk ${p?.operation || "I/O"} failed on the host`;
    return CommonErrors.DISK_FULL({
      message: `workspace ${this.#opts.workspace} is paused: ${what} (${p?.reason || "no reason given"}, disk ${this.#opts.diskPath}, since ${p?.since ?? "?"}); the VMM stopped its vCPUs so the guest's write is not lost`,
      remediation: `Free disk space on the file system holding ${dirname(this.#opts.diskPath)} (e.g. \`microagent image prune --delete\`, or delete other workspaces): the VM resumes by itself once ${Math.round(this.#resumeFreeBytes / 1048576)} MiB are free. \`microagent kill ${this.#opts.workspace}\` ends it instead.`,
      details: { workspace: this.#opts.workspace, disk: this.#opts.diskPath, ...(p ? { pause: p } : {}) },
    });
  }

  /**
   * `p`, failed with DISK_FULL as soon as the VM is (or already is) paused on an I/O error: a request
   * to a paused guest would otherwise wait out its whole timeout.
   */
  race<T>(p: Promise<T>): Promise<T> {
    if (this.#paused) return Promise.reject(this.error());
    let waiter: ((e: MicroagentError) => void) | undefined;
    const paused = new Promise<never>((_res, rej) => {
      waiter = rej;
      this.#waiters.add(rej);
    });
    return Promise.race([p, paused]).finally(() => {
      if (waiter) this.#waiters.delete(waiter);
    });
  }

  /** Resume now if the disk has room again; true when the VM was resumed (or was not paused). */
  async resumeIfSpace(): Promise<boolean> {
    const p = this.#paused;
    if (!p) return true;
    if (!p.nospace || !this.#vm.resume || this.#opts.holdResume?.()) return false;
    const free = await (this.#opts.freeBytes ?? statfsFreeBytes)(dirname(this.#opts.diskPath)).catch(() => 0);
    if (free < this.#resumeFreeBytes) return false;
    this.#opts.log(`${Math.round(free / 1048576)} MiB free again on the disk's file system: resuming the VM`);
    try {
      await this.#vm.resume();
    } catch (e) {
      this.#opts.log(`resuming the VM failed: ${(e as Error).message}`);
      return false;
    }
    // RESUME clears the pause too; clear it here so a caller sees the result at once.
    if (this.#paused === p) this.#clear();
    return true;
  }

  stop(): void {
    this.#off?.();
    this.#off = undefined;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #onEvent(e: VmEvent): void {
    if (e.type === "resumed") {
      if (this.#paused) this.#opts.log("the VM runs again");
      this.#clear();
      return;
    }
    const first = !this.#paused;
    this.#paused = { device: e.device, operation: e.operation, nospace: e.nospace, reason: e.reason, since: this.#paused?.since ?? new Date().toISOString() };
    if (first) this.#opts.log(`the VM is paused: ${e.operation} error on ${e.device} (${e.reason}${e.nospace ? ", no space left" : ""})`);
    const err = this.error();
    for (const w of [...this.#waiters]) w(err);
    if (!this.#timer && e.nospace) {
      this.#timer = setInterval(() => void this.resumeIfSpace(), this.#opts.pollMs ?? DEFAULT_IO_PAUSE_POLL_MS);
      this.#timer.unref();
    }
  }

  #clear(): void {
    this.#paused = undefined;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

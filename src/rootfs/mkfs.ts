/**
 * Staged tree -> ext4 image: size it, `mke2fs -d` it, replay the ledger with debugfs.
 *
 * Reproducibility: the UUID and directory hash seed derive from a caller-given seed (the manifest
 * digest), every timestamp e2fsprogs would take from the clock is pinned with E2FSPROGS_FAKE_TIME,
 * mke2fs reads directories in a sorted order, and the one superblock counter that depends on how
 * much the replay wrote (s_kbytes_written, which differs between a root build with nothing to fix
 * and an unprivileged one) is restored to mke2fs's value. Same staged content -> same bytes.
 */
import { createHash } from "node:crypto";
import { closeSync, openSync, readSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CommonErrors } from "../contract/errors.ts";
import { RootfsErrors } from "./errors.ts";
import { buildDebugfsScript, verifyDebugfsScript } from "./script.ts";
import type { StagedTree } from "./stage.ts";
import { runTool, tail, type E2fsTools } from "./tools.ts";

const MIB = 1024 * 1024;
const BLOCK = 4096;
/** The clock e2fsprogs sees: 2000-01-01T00:00:00Z (mkfs time, lost+found, replayed inodes' ctime). */
export const FIXED_TIME_SECONDS = 946684800;
/** Filesystem size is a multiple of this. */
const ROUND_MIB = 4;

export interface SizeEstimate {
  /** Blocks the content needs (file data, directories, long symlinks, xattr blocks), in bytes. */
  contentBytes: number;
  /** The smallest size that should hold the content with its metadata, in MiB. */
  minimumMib: number;
  /** The default size: content plus headroom (+50%, at least +64 MiB) plus metadata, in MiB. */
  defaultMib: number;
  /** Inodes to provide: the tree's entries plus 50% for the guest. */
  inodes: number;
}

/** Blocks reserved for the journal by mke2fs for a filesystem of n 4-KiB blocks (ext2fs_default_journal_size). */
function journalBlocks(n: number): number {
  if (n < 2048) return 0;
  if (n < 32768) return 1024;
  if (n < 256 * 1024) return 4096;
  if (n < 512 * 1024) return 8192;
  if (n < 4096 * 1024) return 16384;
  if (n < 8192 * 1024) return 32768;
  if (n < 16384 * 1024) return 65536;
  if (n < 32768 * 1024) return 131072;
  return 262144;
}

/** Total size (MiB) for `payload` bytes of content: adds the journal, inode tables and bitmaps. */
function withMetadata(payloadBytes: number, inodes: number): number {
  let mib = Math.max(ROUND_MIB, Math.ceil(payloadBytes / MIB));
  for (let i = 0; i < 8; i++) {
    const blocks = (mib * MIB) / BLOCK;
    const inodeCount = Math.max(inodes, Math.ceil((mib * MIB) / 16384));
    // inode tables (256 B each) + journal + ~1% for bitmaps, group descriptors, extent blocks, slack.
    const overhead = inodeCount * 256 + journalBlocks(blocks) * BLOCK + Math.ceil(mib * MIB * 0.01) + 2 * MIB;
    const next = Math.ceil((payloadBytes + overhead) / MIB / ROUND_MIB) * ROUND_MIB;
    if (next === mib) break;
    mib = next;
  }
  return mib;
}

export function estimateSize(tree: StagedTree): SizeEstimate {
  const seen = new Set<number>();
  let blocks = 0;
  for (const e of tree.entries) {
    const kind = e.meta.kind;
    if (kind === "file") {
      if (seen.has(e.ino)) continue;
      seen.add(e.ino);
      blocks += Math.ceil(e.size / BLOCK);
    } else if (kind === "dir") blocks += 1;
    else if (kind === "symlink" && e.size >= 60) blocks += 1; // shorter targets live in the inode
    if (e.meta.xattrs.length > 0) blocks += 1;
  }
  // Large directories need more than one block: ~ (8 + name) bytes per entry.
  let nameBytes = 0;
  for (const e of tree.entries) nameBytes += 12 + Buffer.byteLength(e.rel.slice(e.rel.lastIndexOf("/") + 1));
  blocks += Math.ceil(nameBytes / BLOCK);
  const contentBytes = blocks * BLOCK;
  // Room for the guest to create files too: half as many again as the image holds.
  const inodes = Math.ceil((tree.entries.length + 16) * 1.5);
  const minimumMib = withMetadata(contentBytes, inodes);
  const defaultMib = withMetadata(Math.max(contentBytes * 1.5, contentBytes + 64 * MIB), inodes);
  return { contentBytes, minimumMib, defaultMib, inodes };
}

/** A UUID (RFC 4122 v4 layout) derived from a seed string, for `-U` and `-E hash_seed=`. */
export function derivedUuid(seed: string, purpose: string): string {
  const h = createHash("sha256").update(`microagent-rootfs:${purpose}:${seed}`).digest();
  h[6] = ((h[6] as number) & 0x0f) | 0x40;
  h[8] = ((h[8] as number) & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString("hex");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

export interface MakeExt4Options {
  tree: StagedTree;
  /** Image file to create (must not exist). */
  out: string;
  /** Fixed size; default: estimateSize(tree).defaultMib. */
  sizeMib?: number;
  /** Reproducibility seed (the manifest digest). */
  seed: string;
  tools: E2fsTools;
  /** Scratch directory for the debugfs script and xattr value files. */
  workDir: string;
  timeoutMs: number;
  signal?: AbortSignal;
}

export interface MakeExt4Result {
  sizeMib: number;
  /** Commands the debugfs replay ran. */
  replayCommands: number;
}

/** s_kbytes_written lives at byte 0x178 of the superblock (which starts at byte 1024). */
const KBYTES_WRITTEN_OFFSET = 1024 + 0x178;

function readKbytesWritten(image: string): bigint {
  const fd = openSync(image, "r");
  try {
    const buf = Buffer.alloc(8);
    readSync(fd, buf, 0, 8, KBYTES_WRITTEN_OFFSET);
    return buf.readBigUInt64LE(0);
  } finally {
    closeSync(fd);
  }
}

export async function makeExt4(opts: MakeExt4Options): Promise<MakeExt4Result> {
  const estimate = estimateSize(opts.tree);
  if (opts.sizeMib !== undefined && opts.sizeMib < estimate.minimumMib) throw tooSmall(opts.sizeMib, estimate.minimumMib);
  const env = { ...process.env, E2FSPROGS_FAKE_TIME: String(FIXED_TIME_SECONDS), LC_ALL: "C" };
  let sizeMib = opts.sizeMib ?? estimate.defaultMib;
  // With automatic sizing, an estimate that turns out short is the builder's problem, not the
  // user's: grow and retry (twice) before reporting.
  for (let attempt = 0; ; attempt++) {
    const outcome = await runMke2fs(opts, estimate, sizeMib, env);
    if (outcome === "ok") break;
    if (opts.sizeMib !== undefined || attempt >= 2)
      throw tooSmall(sizeMib, Math.max(estimate.minimumMib, Math.ceil((sizeMib * 1.25) / ROUND_MIB) * ROUND_MIB), outcome.output);
    sizeMib = Math.ceil((sizeMib * 1.5) / ROUND_MIB) * ROUND_MIB;
  }

  const valueFile = (i: number) => join(opts.workDir, `xattr-${i}`);
  const script = buildDebugfsScript(opts.tree.entries, valueFile);
  if (script.commands > 0) {
    const before = readKbytesWritten(opts.out);
    script.xattrValues.forEach((v, i) => writeFileSync(valueFile(i), v, { mode: 0o600 }));
    const scriptPath = join(opts.workDir, "replay.debugfs");
    // Checked again at the point of use: what debugfs will read is exactly the commands we made.
    verifyDebugfsScript(script.text, script.lines);
    writeFileSync(scriptPath, script.text, { mode: 0o600 });
    const check = new DebugfsStdoutCheck(script.text);
    const dbg = await runTool(opts.tools.debugfs, ["-w", "-f", scriptPath, opts.out], {
      env: debugfsEnv(env),
      timeoutMs: opts.timeoutMs,
      signal: opts.signal,
      onStdout: (d) => check.feed(d),
    });
    // debugfs exits 0 even when a command fails; a failed command prints to stderr. The only
    // legitimate stderr line is its version banner. Some failures (a usage message) go to stdout
    // instead, which must hold nothing but the echo of each script line (and mknod's inode note).
    const errors = dbg.stderr.split("\n").filter((l) => l.trim() !== "" && !/^debugfs \d/.test(l));
    errors.push(...check.finish());
    if (dbg.code !== 0 || errors.length > 0) {
      if (errors.some((l) => /no space left on device/i.test(l)))
        throw CommonErrors.DISK_FULL({ message: `no space left on the host while writing ${opts.out}`, details: { output: tail(errors.join("\n"), 20) } });
      if (errors.some((l) => /no free space|could not allocate/i.test(l))) throw tooSmall(sizeMib, Math.ceil((sizeMib * 1.25) / ROUND_MIB) * ROUND_MIB, tail(errors.join("\n")));
      throw RootfsErrors.ROOTFS_MKFS_FAILED({
        message: `debugfs could not apply owners/modes/devices: ${tail(errors.join("\n") || dbg.stderr, 6)}`,
        details: { tool: opts.tools.debugfs, output: tail(errors.join("\n") || dbg.stderr, 40) },
      });
    }
    const after = readKbytesWritten(opts.out);
    if (after !== before) {
      const fix = await runTool(opts.tools.debugfs, ["-w", "-R", `ssv kbytes_written ${before}`, opts.out], { env: debugfsEnv(env), timeoutMs: opts.timeoutMs, signal: opts.signal });
      if (fix.code !== 0) throw RootfsErrors.ROOTFS_MKFS_FAILED({ message: `debugfs ssv failed: ${tail(fix.stderr, 4)}` });
    }
  }
  return { sizeMib, replayCommands: script.commands };
}

/**
 * The environment debugfs runs in. The script is verified before it runs (script.ts), so it holds no
 * `!` shell escape; as a second fence, debugfs gets no PATH a shell command could be found on (its
 * escapes go through system(3), i.e. /bin/sh, so a command named by absolute path would still run:
 * the verification is what stops that), no pager, and POSIX getopt (no argument permutation).
 */
export function debugfsEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...env, PATH: "/nonexistent/microagent-no-path", SHELL: "/bin/false", PAGER: "__none__", DEBUGFS_PAGER: "__none__", POSIXLY_CORRECT: "1" };
}

/**
 * Checks debugfs's stdout as it streams: it must hold nothing but the echo (`debugfs: <line>`) of
 * the script's lines, in order, and the "Allocated inode: N" note mknod prints. Anything else (a
 * usage message from a command that did not accept its arguments, such as ea_set reading a name as
 * an option) is a failure, even though debugfs exits 0 and prints it to stdout.
 */
export class DebugfsStdoutCheck {
  private readonly want: string[];
  private next = 0;
  private partial = "";
  readonly unexpected: string[] = [];

  constructor(script: string) {
    this.want = script.split("\n").filter((l) => l !== "");
  }

  feed(chunk: string): void {
    const text = this.partial + chunk;
    const lines = text.split("\n");
    this.partial = lines.pop() as string;
    for (const line of lines) this.line(line);
  }

  private line(line: string): void {
    if (line === "") return;
    if (this.next < this.want.length && line === `debugfs: ${this.want[this.next]}`) this.next++;
    else if (/^Allocated inode: \d+$/.test(line) && this.next > 0 && this.want[this.next - 1]?.startsWith("mknod ")) return;
    else if (this.unexpected.length < 40) this.unexpected.push(`stdout: ${line}`);
  }

  /** The unexpected lines (empty when stdout was exactly the echo of every line). */
  finish(): string[] {
    if (this.partial !== "") this.line(this.partial);
    this.partial = "";
    if (this.unexpected.length === 0 && this.next !== this.want.length) return [`stdout: debugfs echoed ${this.next} of ${this.want.length} script lines`];
    return this.unexpected;
  }
}

async function runMke2fs(
  opts: MakeExt4Options,
  estimate: SizeEstimate,
  sizeMib: number,
  env: NodeJS.ProcessEnv,
): Promise<"ok" | { output: string }> {
  const defaultInodes = Math.floor((sizeMib * MIB) / 16384);
  const args = ["-q", "-F", "-t", "ext4", "-b", String(BLOCK), "-m", "0", "-L", "microagent-root"];
  args.push("-U", derivedUuid(opts.seed, "uuid"));
  args.push("-E", `hash_seed=${derivedUuid(opts.seed, "hash_seed")},root_owner=0:0`);
  if (estimate.inodes > defaultInodes) args.push("-N", String(estimate.inodes));
  args.push("-d", opts.tree.root, opts.out, `${sizeMib}M`);
  rmSync(opts.out, { force: true }); // mke2fs would reuse an existing file without truncating it
  const mk = await runTool(opts.tools.mke2fs, args, { env, timeoutMs: opts.timeoutMs, signal: opts.signal });
  if (mk.code === 0) return "ok";
  const output = `${mk.stderr}\n${mk.stdout}`;
  rmSync(opts.out, { force: true });
  // The host's disk filling up ("No space left on device", errno ENOSPC) is not the image being too
  // small for its content ("Could not allocate block/inode in ext2 filesystem").
  if (/no space left on device/i.test(output))
    throw CommonErrors.DISK_FULL({ message: `no space left on the host while writing ${opts.out}: ${tail(output, 3)}`, details: { output: tail(output, 20) } });
  if (/could not allocate|no free space|not enough space|too small/i.test(output)) return { output: tail(output) };
  throw RootfsErrors.ROOTFS_MKFS_FAILED({
    message: `mke2fs failed (${mk.signal ? `signal ${mk.signal}` : `exit ${mk.code}`}): ${tail(output, 6)}`,
    details: { tool: opts.tools.mke2fs, args, output: tail(output, 40) },
  });
}

function tooSmall(sizeMib: number, neededMib: number, output?: string): Error {
  return RootfsErrors.ROOTFS_TOO_SMALL({
    message: `a ${sizeMib} MiB filesystem is too small for this image: it needs at least ${neededMib} MiB`,
    remediation: `Pass --size-mib ${neededMib} or more, or omit --size-mib to size automatically.`,
    details: { sizeMib, neededMib, ...(output ? { output } : {}) },
  });
}

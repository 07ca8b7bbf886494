/**
 * The ledger replay: a debugfs script that makes the ext4 image say what the image says, for
 * everything the staging tree could not hold (owners, setuid/setgid/sticky and other mode bits the
 * staged copy does not carry, device nodes and FIFOs, xattrs). Pure: the same staged tree gives the
 * same script, byte for byte.
 *
 * debugfs reads its script line by line and splits arguments on blanks; every path is therefore
 * double-quoted with embedded quotes doubled (its parser's escape), names with line breaks never get
 * here (paths.ts refuses them), and xattr values travel in files (`ea_set -f`), never inline.
 */
import { RootfsErrors } from "./errors.ts";
import type { EntryKind, StagedEntry } from "./stage.ts";

const TYPE_BITS: Record<EntryKind, number> = {
  file: 0o100000,
  dir: 0o040000,
  symlink: 0o120000,
  char: 0o020000,
  block: 0o060000,
  fifo: 0o010000,
};

/** debugfs reads script lines into a BUFSIZ (8192) buffer; longer lines would be split. */
export const MAX_SCRIPT_LINE = 8000;

export function quote(arg: string): string {
  return `"${arg.replaceAll('"', '""')}"`;
}

export interface DebugfsScript {
  /** The script text (one command per line). */
  text: string;
  /** xattr values to write to files before running: index i goes to `valueFile(i)`. */
  xattrValues: Buffer[];
  /** Number of commands (0: nothing to replay). */
  commands: number;
}

/**
 * @param valueFile path of the file holding the i-th xattr value
 */
export function buildDebugfsScript(entries: readonly StagedEntry[], valueFile: (index: number) => string): DebugfsScript {
  const lines: string[] = [];
  const xattrValues: Buffer[] = [];
  const push = (line: string) => {
    if (Buffer.byteLength(line) > MAX_SCRIPT_LINE)
      throw RootfsErrors.ROOTFS_LAYER_UNSUPPORTED({
        message: `a path is too long for the ownership/mode replay (${Buffer.byteLength(line)} bytes of debugfs command): ${line.slice(0, 120)}...`,
      });
    lines.push(line);
  };
  // Commands address entries relative to the directory debugfs is in (one name lookup instead of a
  // walk from the root per command: the replay is several commands per entry when unprivileged).
  let cwd = "/";
  const cd = (dir: string) => {
    if (dir !== cwd) push(`cd ${quote(dir)}`);
    cwd = dir;
  };
  for (const e of entries) {
    const path = `/${e.rel}`;
    const slash = path.lastIndexOf("/");
    const dir = slash === 0 ? "/" : path.slice(0, slash);
    const name = path.slice(slash + 1);
    // debugfs reads "<N>" as inode number N: such names are only ever addressed by absolute path.
    const relativeOk = e.rel !== "" && !name.startsWith("<");
    if (relativeOk) cd(dir);
    const q = relativeOk ? quote(name) : quote(path);
    const m = e.meta;
    const special = m.kind === "char" || m.kind === "block" || m.kind === "fifo";
    if (special) {
      // The placeholder file becomes the real node: debugfs's mknod takes a bare name in the cwd.
      cd(dir);
      push(`rm ${quote(path)}`);
      push(m.kind === "fifo" ? `mknod ${quote(name)} p` : `mknod ${quote(name)} ${m.kind === "char" ? "c" : "b"} ${m.devmajor} ${m.devminor}`);
      push(`sif ${q} mode 0${(TYPE_BITS[m.kind] | m.mode).toString(8)}`);
      push(`sif ${q} uid ${m.uid}`);
      push(`sif ${q} gid ${m.gid}`);
      push(`sif ${q} mtime @${clampTime(m.mtime)}`);
      push(`sif ${q} atime @${clampTime(m.mtime)}`);
    } else if (e.rel === "") {
      // The root inode is made by mke2fs itself: set everything explicitly.
      push(`sif ${q} mode 0${(TYPE_BITS.dir | m.mode).toString(8)}`);
      push(`sif ${q} uid ${m.uid}`);
      push(`sif ${q} gid ${m.gid}`);
      push(`sif ${q} mtime @${clampTime(m.mtime)}`);
      push(`sif ${q} atime @${clampTime(m.mtime)}`);
    } else {
      // Symlink modes are always 0777 on Linux; only owners need fixing there.
      if (m.kind !== "symlink" && e.staged.perm !== m.mode) push(`sif ${q} mode 0${(TYPE_BITS[m.kind] | m.mode).toString(8)}`);
      if (e.staged.uid !== m.uid) push(`sif ${q} uid ${m.uid}`);
      if (e.staged.gid !== m.gid) push(`sif ${q} gid ${m.gid}`);
    }
    // mke2fs copies the staged copy's ctime (the moment of the build); pin it to the mtime so the
    // image does not depend on when or by whom it was built.
    push(`sif ${q} ctime @${clampTime(m.mtime)}`);
    for (const [xname, value] of m.xattrs) {
      const index = xattrValues.length;
      xattrValues.push(value);
      push(`ea_set -f ${quote(valueFile(index))} ${q} ${quote(xname)}`);
    }
  }
  return { text: lines.length ? `${lines.join("\n")}\n` : "", xattrValues, commands: lines.length };
}

/** ext4 keeps 32 bits of seconds in the base field; the replay uses the base field only. */
function clampTime(t: number): number {
  return Math.min(Math.max(0, Math.floor(t)), 0xffffffff);
}

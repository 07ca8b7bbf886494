/**
 * The ledger replay: a debugfs script that makes the ext4 image say what the image says, for
 * everything the staging tree could not hold (owners, setuid/setgid/sticky and other mode bits the
 * staged copy does not carry, device nodes and FIFOs, xattrs). Pure: the same staged tree gives the
 * same script, byte for byte.
 *
 * The script is the one place image-controlled strings (file names, xattr names) meet a command
 * language, and debugfs's is a dangerous one: a line starting with `!` runs a host shell command
 * (system(3)), `dump`/`write`/`rdump` touch host files. So nothing here is free text:
 *
 * - a command is a verb from a fixed list plus arguments; an argument is either a word made by this
 *   module (`uid`, `1234`, `@946684800`) or a quoted string (paths, xattr names) with embedded
 *   quotes doubled, which is the only escape of debugfs's parser (lib/ss/parse.c);
 * - no argument may hold a line break, a carriage return or a NUL (the reader splits lines on `\n`
 *   and cuts them at `\r`), and none may start with `-` (ea_set parses options with getopt): file
 *   entries are addressed as `./NAME` from the directory debugfs is in, the root as `/`;
 * - the serialized text is parsed back with the same rules as debugfs's parser and must give back
 *   exactly the commands it was made from (`verifyDebugfsScript`), otherwise the build stops with an
 *   internal error before debugfs runs.
 *
 * xattr values never appear in the script: they travel in files (`ea_set -f`). xattr names are
 * checked against a strict grammar (paths.ts) when the layer is parsed (tar.ts), and again here.
 */
import { CommonErrors } from "../contract/errors.ts";
import { RootfsErrors } from "./errors.ts";
import { isValidXattrName } from "./paths.ts";
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

/** The only commands a replay script may contain. None of them reads or writes host files except `ea_set -f` (reads our value file). */
export const SCRIPT_VERBS = ["cd", "sif", "rm", "mknod", "ln", "unlink", "ea_set"] as const;
export type ScriptVerb = (typeof SCRIPT_VERBS)[number];

/** An argument: a quoted string, or a bare word this module made (numbers, field names, flags). */
export type ScriptArg = { q: string } | { w: string };

export interface ScriptCommand {
  verb: ScriptVerb;
  args: ScriptArg[];
}

/** Option flags a command may carry (the only arguments allowed to start with `-`). */
const FLAGS: Partial<Record<ScriptVerb, readonly string[]>> = { ea_set: ["-f"] };
const WORD = /^[A-Za-z0-9_@]+$/;

export function quote(arg: string): string {
  return `"${arg.replaceAll('"', '""')}"`;
}

function internal(what: string): Error {
  return CommonErrors.INTERNAL({ message: `refusing to run the debugfs replay: ${what}` });
}

/** The text of one command; throws INTERNAL when an argument could change how debugfs reads the line. */
export function serializeCommand(c: ScriptCommand): string {
  if (!(SCRIPT_VERBS as readonly string[]).includes(c.verb)) throw internal(`unknown verb ${JSON.stringify(c.verb)}`);
  const parts: string[] = [c.verb];
  for (const a of c.args) {
    if ("w" in a) {
      if (!WORD.test(a.w) && !(FLAGS[c.verb] ?? []).includes(a.w)) throw internal(`bad word ${JSON.stringify(a.w)} in ${c.verb}`);
      parts.push(a.w);
    } else {
      if (/[\n\r\0]/.test(a.q)) throw internal(`an argument of ${c.verb} contains a line break or NUL: ${JSON.stringify(a.q)}`);
      if (a.q.startsWith("-")) throw internal(`an argument of ${c.verb} starts with '-': ${JSON.stringify(a.q)}`);
      if (a.q === "") throw internal(`an empty argument to ${c.verb}`);
      parts.push(quote(a.q));
    }
  }
  return parts.join(" ");
}

/**
 * debugfs's argument splitter (lib/ss/parse.c): blanks (space, tab) separate arguments outside
 * quotes; `"` toggles quoting anywhere in a token; inside quotes `""` is a literal quote. Returns
 * undefined for unbalanced quotes.
 */
export function parseDebugfsLine(line: string): string[] | undefined {
  const argv: string[] = [];
  let mode: "space" | "token" | "quoted" = "space";
  let cur = "";
  for (let i = 0; i < line.length; i++) {
    const ch = line[i] as string;
    if (mode === "quoted") {
      if (ch === '"') {
        if (line[i + 1] === '"') {
          cur += '"';
          i++;
        } else mode = "token";
      } else cur += ch;
      continue;
    }
    if (ch === " " || ch === "\t") {
      if (mode === "token") argv.push(cur);
      cur = "";
      mode = "space";
    } else if (ch === '"') mode = "quoted";
    else {
      cur += ch;
      mode = "token";
    }
  }
  if (mode === "quoted") return undefined;
  if (mode === "token") argv.push(cur);
  return argv;
}

/**
 * The last check before debugfs runs: the text must be exactly one line per command, every line
 * must start with an allowed verb (so never `!`, `#` or a blank), and debugfs's parser must read
 * each line back as the command it was made from. Throws INTERNAL otherwise.
 */
export function verifyDebugfsScript(text: string, commands: readonly ScriptCommand[]): void {
  if (commands.length === 0) {
    if (text !== "") throw internal("text without commands");
    return;
  }
  if (!text.endsWith("\n")) throw internal("the script does not end with a line break");
  const lines = text.slice(0, -1).split("\n");
  if (lines.length !== commands.length) throw internal(`${lines.length} lines for ${commands.length} commands`);
  for (const [i, line] of lines.entries()) {
    const c = commands[i] as ScriptCommand;
    if (/[\r\0]/.test(line)) throw internal(`line ${i + 1} contains a carriage return or NUL`);
    if (Buffer.byteLength(line) > MAX_SCRIPT_LINE) throw internal(`line ${i + 1} is longer than ${MAX_SCRIPT_LINE} bytes`);
    if (!line.startsWith(`${c.verb} `)) throw internal(`line ${i + 1} does not start with its verb: ${JSON.stringify(line.slice(0, 80))}`);
    const argv = parseDebugfsLine(line);
    const want = [c.verb, ...c.args.map((a) => ("w" in a ? a.w : a.q))];
    if (!argv || argv.length !== want.length || argv.some((a, j) => a !== want[j]))
      throw internal(`line ${i + 1} does not read back as the command it was made from: ${JSON.stringify(line.slice(0, 120))}`);
  }
}

export interface DebugfsScript {
  /** The script text (one command per line), verified. */
  text: string;
  /** The commands, in order (what `text` must read back as). */
  lines: ScriptCommand[];
  /** xattr values to write to files before running: index i goes to `valueFile(i)`. */
  xattrValues: Buffer[];
  /** Number of commands (0: nothing to replay). */
  commands: number;
}

const q = (s: string): ScriptArg => ({ q: s });
const w = (s: string | number): ScriptArg => ({ w: String(s) });

/**
 * @param valueFile path of the file holding the i-th xattr value (an absolute path)
 */
export function buildDebugfsScript(entries: readonly StagedEntry[], valueFile: (index: number) => string): DebugfsScript {
  const commands: ScriptCommand[] = [];
  const xattrValues: Buffer[] = [];
  const texts: string[] = [];
  const push = (verb: ScriptVerb, ...args: ScriptArg[]) => {
    const c = { verb, args };
    const line = serializeCommand(c);
    if (Buffer.byteLength(line) > MAX_SCRIPT_LINE)
      throw RootfsErrors.ROOTFS_LAYER_UNSUPPORTED({
        message: `a path is too long for the ownership/mode replay (${Buffer.byteLength(line)} bytes of debugfs command): ${line.slice(0, 120)}...`,
      });
    commands.push(c);
    texts.push(line);
  };
  const allPaths = new Set(entries.map((e) => e.rel));
  // Commands address entries relative to the directory debugfs is in (one name lookup instead of a
  // walk from the root per command: the replay is several commands per entry when unprivileged).
  let cwd = "/";
  const cd = (dir: string) => {
    if (dir !== cwd) push("cd", q(dir));
    cwd = dir;
  };
  for (const e of entries) {
    const path = `/${e.rel}`;
    const slash = path.lastIndexOf("/");
    const dir = slash === 0 ? "/" : path.slice(0, slash);
    const name = path.slice(slash + 1);
    // `./NAME`: never read as an option (a name like `-r`) nor as an inode number (`<2>`).
    const target = e.rel === "" ? q("/") : q(`./${name}`);
    if (e.rel !== "") cd(dir);
    const m = e.meta;
    const mode = (kind: EntryKind) => w(`0${(TYPE_BITS[kind] | m.mode).toString(8)}`);
    const special = m.kind === "char" || m.kind === "block" || m.kind === "fifo";
    if (special) {
      // The placeholder file becomes the real node. debugfs's mknod links the bare name it is given
      // into the cwd (no option parsing, but a bare argument may not start with '-' here): such a
      // name is made under a free temporary name and then linked into place.
      push("rm", q(path));
      const bare = name.startsWith("-") ? freeName(allPaths, dir) : name;
      const how = m.kind === "fifo" ? [w("p")] : [w(m.kind === "char" ? "c" : "b"), w(m.devmajor), w(m.devminor)];
      push("mknod", q(bare), ...how);
      if (bare !== name) {
        push("ln", q(`./${bare}`), target);
        push("unlink", q(`./${bare}`));
      }
      push("sif", target, w("mode"), mode(m.kind));
      push("sif", target, w("uid"), w(m.uid));
      push("sif", target, w("gid"), w(m.gid));
      push("sif", target, w("mtime"), w(`@${clampTime(m.mtime)}`));
      push("sif", target, w("atime"), w(`@${clampTime(m.mtime)}`));
    } else if (e.rel === "") {
      // The root inode is made by mke2fs itself: set everything explicitly.
      push("sif", target, w("mode"), mode("dir"));
      push("sif", target, w("uid"), w(m.uid));
      push("sif", target, w("gid"), w(m.gid));
      push("sif", target, w("mtime"), w(`@${clampTime(m.mtime)}`));
      push("sif", target, w("atime"), w(`@${clampTime(m.mtime)}`));
    } else {
      // Symlink modes are always 0777 on Linux; only owners need fixing there.
      if (m.kind !== "symlink" && e.staged.perm !== m.mode) push("sif", target, w("mode"), mode(m.kind));
      if (e.staged.uid !== m.uid) push("sif", target, w("uid"), w(m.uid));
      if (e.staged.gid !== m.gid) push("sif", target, w("gid"), w(m.gid));
    }
    // mke2fs copies the staged copy's ctime (the moment of the build); pin it to the mtime so the
    // image does not depend on when or by whom it was built.
    push("sif", target, w("ctime"), w(`@${clampTime(m.mtime)}`));
    for (const [xname, value] of m.xattrs) {
      if (!isValidXattrName(xname)) throw internal(`xattr name ${JSON.stringify(xname)} of ${path} should have been refused when the layer was read`);
      const index = xattrValues.length;
      xattrValues.push(value);
      push("ea_set", w("-f"), q(valueFile(index)), target, q(xname));
    }
  }
  const text = texts.length ? `${texts.join("\n")}\n` : "";
  verifyDebugfsScript(text, commands);
  return { text, lines: commands, xattrValues, commands: commands.length };
}

/** A bare name not used by any entry of `dir` (for the two-step mknod). */
function freeName(allPaths: ReadonlySet<string>, dir: string): string {
  const prefix = dir === "/" ? "" : `${dir.slice(1)}/`;
  for (let i = 0; ; i++) {
    const name = `.microagent-mknod-${i}`;
    if (!allPaths.has(`${prefix}${name}`)) return name;
  }
}

/** ext4 keeps 32 bits of seconds in the base field; the replay uses the base field only. */
function clampTime(t: number): number {
  return Math.min(Math.max(0, Math.floor(t)), 0xffffffff);
}

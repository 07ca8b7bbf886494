/**
 * The worker of test/integration/rootfs-fuzz.test.ts, run as its own node process under
 * `strace -f -e trace=execve` so that every program it (or mke2fs/debugfs) starts is on record.
 *
 *   node test/helpers/rootfs-fuzz-worker.ts <json config>
 *   config: { seed, iterations, budgetMs, scratch, canary, tmpPrefix }
 *
 * Each iteration builds one or two layers whose header fields and PAX records are random bytes,
 * random numbers, or fragments of debugfs/shell injections aimed at the canary dir (and at
 * `<tmpPrefix>*` in /tmp), runs the real builder (staging, mke2fs, debugfs), and checks the outcome:
 * an image, or a typed rootfs error; never INTERNAL (the script builder's last fence firing means
 * the parser let something through), never an untyped crash. It prints one JSON line of counts.
 */
import { existsSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { buildExt4FromLayers } from "../../src/rootfs/build.ts";
import { resolveE2fsTools } from "../../src/rootfs/tools.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { prng } from "./prng.ts";
import { rawTar, type RawEntry, type Bytes } from "./raw-tar.ts";

interface Config {
  seed: number;
  iterations: number;
  budgetMs: number;
  scratch: string;
  canary: string;
  tmpPrefix: string;
}

const cfg = JSON.parse(process.argv[2] as string) as Config;
const rand = prng(cfg.seed);
const int = (n: number) => Math.floor(rand() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)] as T;

const PAYLOADS = [
  `\n!touch ${cfg.canary}/shell-\n`,
  `\n!/usr/bin/touch ${cfg.canary}/abs-shell\n`,
  `\n!touch ${cfg.tmpPrefix}tmp\n`,
  `\ndump /etc/passwd ${cfg.canary}/dumped\n`,
  `\nrdump / ${cfg.canary}\n`,
  `\nwrite /etc/hostname stolen\n`,
  `\r!touch ${cfg.canary}/cr\n`,
  `" ; !touch ${cfg.canary}/q "`,
  `"\n!touch ${cfg.canary}/qn\n"`,
  "-r",
  "-f",
  "--",
  "<2>",
  "<7>",
  "./..",
  "../../../../tmp",
  "\0",
  "\xff\xfe",
  "%0A!touch%20x",
  "$(touch x)",
  "`touch x`",
  "# comment",
  " \t ",
];
const NAMESPACES = ["user.", "trusted.", "security.", "system.", "", "foo.", "-"];

function randomBytes(max: number): Buffer {
  const b = Buffer.alloc(int(max + 1));
  for (let i = 0; i < b.length; i++) b[i] = int(256);
  return b;
}

/** A name-ish value: plain, random bytes, a payload, or a mix. */
function hostileText(): Buffer {
  const r = rand();
  if (r < 0.25) return Buffer.from(pick(["a", "etc/passwd", "opt/x", "bin/sh", "dev/null", "-x", ".wh.a", ".wh..wh..opq", "d/", "./"]), "latin1");
  if (r < 0.45) return randomBytes(24);
  if (r < 0.8) return Buffer.from(`${pick(["", "opt/", "x", "a b"])}${pick(PAYLOADS)}${pick(["", "y", "/z"])}`, "latin1");
  return Buffer.concat([randomBytes(6), Buffer.from(pick(PAYLOADS), "latin1"), randomBytes(6)]);
}

function numberField(width: number): number | Buffer {
  const r = rand();
  if (r < 0.5) return int(r < 0.25 ? 0o7777 : 70000);
  if (r < 0.7) return Math.min(int(2 ** 21), 8 ** (width - 1) - 1);
  if (r < 0.85) return randomBytes(width);
  const b = Buffer.alloc(width); // base-256
  b[0] = 0x80;
  for (let i = 1; i < width; i++) b[i] = int(256);
  return b;
}

function paxRecords(): Array<[Bytes, Bytes]> {
  const out: Array<[Bytes, Bytes]> = [];
  for (let i = int(4); i > 0; i--) {
    const r = rand();
    if (r < 0.35) out.push([Buffer.concat([Buffer.from(`SCHILY.xattr.${pick(NAMESPACES)}`), rand() < 0.5 ? Buffer.from(pick(["k", "a.b", "capability"])) : hostileText()]), rand() < 0.5 ? "v" : randomBytes(64)]);
    else if (r < 0.5) out.push([`LIBARCHIVE.xattr.${pick(NAMESPACES)}${encodeURIComponent(hostileText().toString("latin1")).slice(0, 60)}`, randomBytes(16).toString("base64")]);
    else if (r < 0.65) out.push([pick(["path", "linkpath"]), hostileText()]);
    else if (r < 0.8) out.push([pick(["uid", "gid", "mtime", "size"]), rand() < 0.5 ? String(int(2 ** 33)) : randomBytes(8)]);
    else out.push([randomBytes(12), randomBytes(12)]);
  }
  return out;
}

const PLAIN = ["opt/a", "opt/b", "d/f", "d/e/g", "-x", "-r", "opt/-fx", "<2>", "opt/<7>", "a b", '"q"uote', "#hash", "!bang", "é", "tab\tname", "opt/", "d/"];

/** A valid UTF-8 name of characters a command language might care about (no NUL, line break or slash). */
const ODD = [..."\x01\x07\x08\t\x0b\x0c\x0e\x1b\x1f\x7f \"'\\$`!#<>-;&|*?~%=@:.,()[]{}", "é", "中", "\u00a0", "\u2028", "\ufeff", "a", "Z", "0"];
function oddName(): string {
  let out = "";
  for (let i = 1 + int(12); i > 0; i--) out += pick(ODD);
  return out === "." || out === ".." ? "x" : out;
}

/** One entry: a plausible one whose fields are each replaced by hostile bytes with probability `p`. */
function entry(p: number, names: string[]): RawEntry {
  const hostile = () => rand() < p;
  const typeflag = hostile()
    ? pick(["x", "L", "K", "g", "S", "7", "\0", String.fromCharCode(int(128))])
    : pick(["0", "0", "0", "5", "2", "1", "3", "4", "6"]);
  const plain = rand() < 0.3 ? oddName() : pick(PLAIN);
  const name = hostile() ? hostileText() : Buffer.from(plain + (typeflag === "5" ? "/" : ""));
  const linkname = hostile()
    ? hostileText()
    : Buffer.from(typeflag === "1" && names.length > 0 ? pick(names) : pick(["target", "/etc/passwd", "../../x", "a\nb", "-r"]));
  if (typeflag === "0") names.push(name.toString("latin1"));
  const content = typeflag === "0" || typeflag === "7" || hostile() ? randomBytes(rand() < 0.9 ? 40 : 3000) : Buffer.alloc(0);
  const pax: Array<[Bytes, Bytes]> = [];
  if (rand() < 0.5) for (let k = int(3); k >= 0; k--) pax.push([`SCHILY.xattr.${pick(["user.k", "user.a.b", "security.capability", "trusted.x"])}${int(3)}`, randomBytes(80)]);
  // The D1 vector on an otherwise plausible entry: an xattr key carrying an injection.
  if (rand() < 0.15)
    pax.push(
      rand() < 0.7
        ? [Buffer.concat([Buffer.from(`SCHILY.xattr.${pick(NAMESPACES)}x`), Buffer.from(pick(PAYLOADS), "latin1")]), "v"]
        : [`LIBARCHIVE.xattr.${pick(NAMESPACES)}x${encodeURIComponent(pick(PAYLOADS))}`, "dg=="],
    );
  if (hostile()) pax.push(...paxRecords());
  return {
    name,
    typeflag,
    mode: hostile() ? numberField(8) : int(0o10000),
    uid: hostile() ? numberField(8) : int(70000),
    gid: hostile() ? numberField(8) : int(70000),
    mtime: hostile() ? numberField(12) : int(2 ** 31),
    ...(hostile() ? { size: numberField(12) } : {}),
    linkname,
    devmajor: hostile() ? numberField(8) : int(300),
    devminor: hostile() ? numberField(8) : int(300),
    uname: randomBytes(8),
    gname: randomBytes(8),
    ...(hostile() ? { prefix: hostileText() } : {}),
    ...(pax.length > 0 ? { pax } : {}),
    content,
  };
}

// Not ROOTFS_MKFS_FAILED: a replay that debugfs reads differently from what the builder meant fails there.
const ALLOWED = /^ROOTFS_(LAYER_INVALID|LAYER_UNSAFE|LAYER_UNSUPPORTED|TOO_SMALL)$/;
const counts: Record<string, number> = { iterations: 0, built: 0 };
const tools = resolveE2fsTools({});
const start = Date.now();
for (let i = 0; i < cfg.iterations && Date.now() - start < cfg.budgetMs; i++) {
  counts.iterations = (counts.iterations ?? 0) + 1;
  // The hostility varies per iteration: some layers are mostly plausible (and reach mke2fs and the
  // debugfs replay), others are mostly garbage (and exercise the parser's refusals).
  const p = pick([0, 0.02, 0.05, 0.1, 0.3, 0.6]);
  const names: string[] = [];
  const layers = Array.from({ length: 1 + int(2) }, () => rawTar(Array.from({ length: 1 + int(8) }, () => entry(p, names))));
  const out = join(cfg.scratch, `fuzz-${i}.ext4`);
  const workDir = join(cfg.scratch, `work-${i}`);
  try {
    await buildExt4FromLayers({
      layers: layers.map((t, j) => ({
        label: `sha256:fuzz${i}-${j}`,
        open: async function* () {
          yield t;
        },
      })),
      out,
      seed: `sha256:fuzz-${cfg.seed}-${i}`,
      workDir,
      sizeMib: 16,
      tools,
      toolTimeoutMs: 60_000,
    });
    counts.built = (counts.built ?? 0) + 1;
  } catch (e) {
    if (!isMicroagentError(e)) throw new Error(`iteration ${i} (seed ${cfg.seed}): untyped failure: ${String((e as Error)?.stack ?? e)}`);
    if (!ALLOWED.test(e.code)) throw new Error(`iteration ${i} (seed ${cfg.seed}): ${e.code}: ${e.message}`);
    counts[e.code] = (counts[e.code] ?? 0) + 1;
  }
  if (existsSync(workDir)) throw new Error(`iteration ${i}: the work dir ${workDir} was left behind`);
  const canary = readdirSync(cfg.canary);
  if (canary.length > 0) throw new Error(`iteration ${i}: files appeared in the canary dir: ${canary.join(", ")}`);
  rmSync(out, { force: true });
}
counts.elapsedMs = Date.now() - start;
process.stdout.write(`${JSON.stringify(counts)}\n`);

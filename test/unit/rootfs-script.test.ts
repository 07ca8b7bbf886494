import { test } from "node:test";
import assert from "node:assert/strict";
import { buildDebugfsScript, parseDebugfsLine, quote, serializeCommand, verifyDebugfsScript } from "../../src/rootfs/script.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";
import type { EntryMeta, StagedEntry } from "../../src/rootfs/stage.ts";
import { estimateSize, derivedUuid, DebugfsStdoutCheck } from "../../src/rootfs/mkfs.ts";

function entry(rel: string, meta: Partial<EntryMeta>, staged = { uid: 0, gid: 0, perm: 0o644 }, size = 0): StagedEntry {
  return {
    rel,
    meta: { kind: "file", mode: 0o644, uid: 0, gid: 0, mtime: 1000, devmajor: 0, devminor: 0, xattrs: [], ...meta },
    staged,
    ino: rel.length + 1,
    size,
  };
}

test("rootfs-script: quoting doubles embedded quotes (debugfs's escape)", () => {
  assert.equal(quote('/a"b c'), '"/a""b c"');
  assert.equal(quote("/plain"), '"/plain"');
});

test("rootfs-script: only what the staged copy lacks is replayed (plus ctime), as ./NAME relative to the cwd; specials become mknod", () => {
  const script = buildDebugfsScript(
    [
      entry("", { kind: "dir", mode: 0o755 }, { uid: 0, gid: 0, perm: 0o700 }),
      entry("same", {}),
      entry("suid", { mode: 0o4755 }, { uid: 0, gid: 0, perm: 0o755 }),
      entry("owned", { uid: 1234, gid: 5678 }),
      entry("link", { kind: "symlink", mode: 0o777, uid: 5 }, { uid: 0, gid: 0, perm: 0o777 }),
      entry('dev/my "null"', { kind: "char", mode: 0o666, devmajor: 1, devminor: 3 }, { uid: 0, gid: 0, perm: 0o600 }),
      entry("fifo", { kind: "fifo", mode: 0o600 }, { uid: 0, gid: 0, perm: 0o600 }),
      entry("cap", { xattrs: [["security.capability", Buffer.from([1, 0, 0, 2])]] }),
      // debugfs would read "<2>" as inode 2 (the root): every name is addressed as ./NAME
      entry("d/<2>", { uid: 9 }),
    ],
    (i) => `/work/x${i}`,
  );
  assert.equal(
    script.text,
    [
      'sif "/" mode 040755',
      'sif "/" uid 0',
      'sif "/" gid 0',
      'sif "/" mtime @1000',
      'sif "/" atime @1000',
      'sif "/" ctime @1000',
      'sif "./same" ctime @1000',
      'sif "./suid" mode 0104755',
      'sif "./suid" ctime @1000',
      'sif "./owned" uid 1234',
      'sif "./owned" gid 5678',
      'sif "./owned" ctime @1000',
      'sif "./link" uid 5',
      'sif "./link" ctime @1000',
      'cd "/dev"',
      'rm "/dev/my ""null"""',
      'mknod "my ""null""" c 1 3',
      'sif "./my ""null""" mode 020666',
      'sif "./my ""null""" uid 0',
      'sif "./my ""null""" gid 0',
      'sif "./my ""null""" mtime @1000',
      'sif "./my ""null""" atime @1000',
      'sif "./my ""null""" ctime @1000',
      'cd "/"',
      'rm "/fifo"',
      'mknod "fifo" p',
      'sif "./fifo" mode 010600',
      'sif "./fifo" uid 0',
      'sif "./fifo" gid 0',
      'sif "./fifo" mtime @1000',
      'sif "./fifo" atime @1000',
      'sif "./fifo" ctime @1000',
      'sif "./cap" ctime @1000',
      'ea_set -f "/work/x0" "./cap" "security.capability"',
      'cd "/d"',
      'sif "./<2>" uid 9',
      'sif "./<2>" ctime @1000',
      "",
    ].join("\n"),
  );
  assert.deepEqual(script.xattrValues, [Buffer.from([1, 0, 0, 2])]);
});

test("rootfs-script: size estimate adds at least 64 MiB of headroom and grows with content", () => {
  const small = estimateSize({ root: "/x", contentBytes: 10, entries: [entry("", { kind: "dir" }), entry("f", {}, undefined, 10)] });
  assert.ok(small.defaultMib >= 64 && small.defaultMib <= 96, `small image: ${small.defaultMib} MiB`);
  assert.ok(small.minimumMib < small.defaultMib);
  const big = estimateSize({ root: "/x", contentBytes: 1 << 30, entries: [entry("", { kind: "dir" }), entry("f", {}, undefined, 1 << 30)] });
  assert.ok(big.defaultMib >= 1536 && big.defaultMib < 1700, `1 GiB of content: ${big.defaultMib} MiB`);
  assert.ok(big.minimumMib >= 1024 && big.minimumMib < 1100, `1 GiB minimum: ${big.minimumMib} MiB`);
});

test("rootfs-script: derived UUIDs are stable per seed and well-formed", () => {
  const a = derivedUuid("sha256:abc", "uuid");
  assert.equal(a, derivedUuid("sha256:abc", "uuid"));
  assert.notEqual(a, derivedUuid("sha256:abd", "uuid"));
  assert.notEqual(a, derivedUuid("sha256:abc", "hash_seed"));
  assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
});

// --- the script as a command language (reliability campaign D1, D14) ----------------------------------

function internalError(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(isMicroagentError(e), String(e));
    assert.equal(e.code, "INTERNAL");
    return e.message;
  }
  assert.fail("expected an internal error");
}

test("rootfs-script: the builder refuses any argument with a line break, CR, NUL or a leading '-' (internal error)", () => {
  for (const bad of ["a\nb", "a\rb", "a\0b", "-r", "-f"]) {
    const msg = internalError(() => serializeCommand({ verb: "sif", args: [{ q: bad }, { w: "uid" }, { w: "0" }] }));
    assert.match(msg, /refusing to run the debugfs replay/);
  }
  assert.match(internalError(() => serializeCommand({ verb: "sif", args: [{ q: "./a" }, { w: "uid 0\n!sh" }] })), /bad word/);
  assert.match(internalError(() => serializeCommand({ verb: "dump" as never, args: [{ q: "/etc/passwd" }] })), /unknown verb/);
  // even if a name got past the parser's checks, it never reaches the script
  const entries = [entry("f", { xattrs: [["user.x\n!touch /tmp/pwned #", Buffer.from("v")]] })];
  assert.match(internalError(() => buildDebugfsScript(entries, (i) => `/w/${i}`)), /should have been refused/);
  assert.match(internalError(() => buildDebugfsScript([entry("a\nb", { uid: 5 })], (i) => `/w/${i}`)), /line break/);
});

test("rootfs-script: the verifier reads every line back with debugfs's parser and refuses anything else", () => {
  assert.deepEqual(parseDebugfsLine('sif "./a ""b"" c" uid 5'), ["sif", './a "b" c', "uid", "5"]);
  assert.deepEqual(parseDebugfsLine('x a"b c"d\te'), ["x", "ab cd", "e"]);
  assert.equal(parseDebugfsLine('x "unbalanced'), undefined);
  const script = buildDebugfsScript([entry("f", { uid: 7 })], (i) => `/w/${i}`);
  verifyDebugfsScript(script.text, script.lines);
  assert.match(internalError(() => verifyDebugfsScript(`${script.text}!touch /tmp/pwned\n`, script.lines)), /lines for/);
  const swapped = script.text.replace('sif "./f" uid 7', '!touch /tmp/pwned "./f" uid 7');
  assert.match(internalError(() => verifyDebugfsScript(swapped, script.lines)), /does not start with its verb/);
  const requoted = script.text.replace('sif "./f" uid 7', 'sif "./f" uid 7 extra');
  assert.match(internalError(() => verifyDebugfsScript(requoted, script.lines)), /does not read back/);
});

test("rootfs-script: names starting with '-' or '<' are addressed as ./NAME; a special node named '-x' is made under a free name and linked", () => {
  const script = buildDebugfsScript(
    [
      entry("", { kind: "dir", mode: 0o755 }, { uid: 0, gid: 0, perm: 0o755 }),
      entry("-r", { xattrs: [["user.k", Buffer.from("v")]] }),
      entry(".microagent-mknod-0", {}),
      entry("-x", { kind: "char", mode: 0o600, devmajor: 1, devminor: 3 }, { uid: 0, gid: 0, perm: 0o600 }),
    ],
    (i) => `/w/${i}`,
  );
  const lines = script.text.split("\n");
  assert.ok(lines.includes('ea_set -f "/w/0" "./-r" "user.k"'), script.text);
  const at = lines.indexOf('rm "/-x"');
  assert.deepEqual(lines.slice(at, at + 5), ['rm "/-x"', 'mknod ".microagent-mknod-1" c 1 3', 'ln "./.microagent-mknod-1" "./-x"', 'unlink "./.microagent-mknod-1"', 'sif "./-x" mode 020600']);
  for (const line of lines.filter(Boolean)) for (const arg of parseDebugfsLine(line)!.slice(1)) assert.ok(!arg.startsWith("-") || arg === "-f", line);
});

test("rootfs-script: debugfs stdout must be only the echo of the script (a usage message is a failure)", () => {
  const text = 'mknod "n" p\nea_set -f "/w/0" "./-r" "user.k"\n';
  const ok = new DebugfsStdoutCheck(text);
  ok.feed('debugfs: mknod "n" p\nAllocated inode: 14\ndebugfs: ea_set -f "/w/0" "./-');
  ok.feed('r" "user.k"\n');
  assert.deepEqual(ok.finish(), []);
  const usage = new DebugfsStdoutCheck(text);
  usage.feed('debugfs: mknod "n" p\ndebugfs: ea_set -f "/w/0" "./-r" "user.k"\nUsage:\tea_set [-r] <file> <attr> <value>\n');
  assert.deepEqual(usage.finish(), ["stdout: Usage:\tea_set [-r] <file> <attr> <value>"]);
  const short = new DebugfsStdoutCheck(text);
  short.feed('debugfs: mknod "n" p\n');
  assert.match(short.finish()[0]!, /echoed 1 of 2/);
});

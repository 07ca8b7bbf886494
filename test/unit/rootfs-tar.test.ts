import { test } from "node:test";
import assert from "node:assert/strict";
import { makeTar, type TarEntry as FixtureEntry } from "../helpers/oci-image.ts";
import { parseNumber, readTar, type TarEntry } from "../../src/rootfs/tar.ts";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { prng } from "../helpers/prng.ts";
import { rawTar, type Bytes } from "../helpers/raw-tar.ts";

interface Parsed {
  entry: TarEntry;
  content: Buffer;
}

async function* chunked(buf: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, Math.min(buf.length, i + size));
}

async function parse(buf: Buffer, chunkSize = buf.length || 1): Promise<Parsed[]> {
  const out: Parsed[] = [];
  for await (const { entry, body } of readTar(chunked(buf, chunkSize), "test-layer")) {
    const parts: Buffer[] = [];
    for await (const c of body()) parts.push(Buffer.from(c));
    out.push({ entry, content: Buffer.concat(parts) });
  }
  return out;
}

async function parseError(buf: Buffer, chunkSize?: number): Promise<{ code: string; message: string }> {
  try {
    await parse(buf, chunkSize);
  } catch (e) {
    assert.ok(isMicroagentError(e), `expected a MicroagentError, got ${String(e)}`);
    return { code: e.code, message: e.message };
  }
  assert.fail("expected the layer to be refused");
}

const SAMPLE: FixtureEntry[] = [
  { path: "etc/", type: "dir", mode: 0o755 },
  { path: "etc/passwd", type: "file", content: "root:x:0:0\n", mode: 0o644, uid: 0, gid: 0, mtime: 1_600_000_000 },
  { path: "usr/bin/suid", type: "file", content: Buffer.alloc(1500, 7), mode: 0o4755, uid: 1234, gid: 5678 },
  { path: "bin", type: "symlink", linkname: "usr/bin" },
  { path: "usr/bin/suid2", type: "hardlink", linkname: "usr/bin/suid" },
  { path: "dev/null", type: "char", devmajor: 1, devminor: 3, mode: 0o666 },
  { path: "dev/loop0", type: "block", devmajor: 7, devminor: 0, mode: 0o660 },
  { path: "run/fifo", type: "fifo", mode: 0o600 },
  { path: `deep/${"d".repeat(120)}/file`, type: "file", content: "long\n" },
  { path: "caps", type: "file", content: "x", pax: { "SCHILY.xattr.user.b": "2", "SCHILY.xattr.user.a": "1" } },
];

test("rootfs-tar: every entry type, PAX long names and xattrs, identical in one chunk and byte by byte", async () => {
  const tar = makeTar(SAMPLE);
  const whole = await parse(tar);
  const bytewise = await parse(tar, 1);
  const odd = await parse(tar, 511);
  assert.deepEqual(bytewise, whole);
  assert.deepEqual(odd, whole);
  assert.deepEqual(
    whole.map((p) => [p.entry.path, p.entry.type]),
    SAMPLE.map((e) => [e.path, e.type]),
  );
  const byPath = new Map(whole.map((p) => [p.entry.path, p]));
  const passwd = byPath.get("etc/passwd")!;
  assert.equal(passwd.content.toString(), "root:x:0:0\n");
  assert.equal(passwd.entry.mtime, 1_600_000_000);
  const suid = byPath.get("usr/bin/suid")!;
  assert.equal(suid.entry.mode, 0o4755);
  assert.equal(suid.entry.uid, 1234);
  assert.equal(suid.entry.gid, 5678);
  assert.equal(suid.content.length, 1500);
  assert.equal(byPath.get("bin")!.entry.linkpath, "usr/bin");
  assert.equal(byPath.get("usr/bin/suid2")!.entry.linkpath, "usr/bin/suid");
  const dev = byPath.get("dev/null")!.entry;
  assert.deepEqual([dev.type, dev.devmajor, dev.devminor, dev.mode], ["char", 1, 3, 0o666]);
  assert.deepEqual(
    byPath.get("caps")!.entry.xattrs.map(([k, v]) => [k, v.toString()]),
    [
      ["user.a", "1"],
      ["user.b", "2"],
    ],
  );
});

test("rootfs-tar: bsdtar's LIBARCHIVE.xattr records (base64) are read; SCHILY's raw value wins for the same name", async () => {
  const tar = makeTar([
    {
      path: "f",
      type: "file",
      pax: {
        "LIBARCHIVE.xattr.user.only%40bsd": Buffer.from([0, 1, 2, 255]).toString("base64"),
        "LIBARCHIVE.xattr.user.both": Buffer.from("bsd").toString("base64"),
        "SCHILY.xattr.user.both": "schily",
      },
    },
  ]);
  const [f] = await parse(tar);
  assert.deepEqual(
    f!.entry.xattrs.map(([k, v]) => [k, v.toString("hex")]),
    [
      ["user.both", Buffer.from("schily").toString("hex")],
      ["user.only@bsd", "000102ff"],
    ],
  );
});

test("rootfs-tar: GNU long names (L/K) are applied to the next entry", async () => {
  const long = `x/${"n".repeat(150)}`;
  const target = `t/${"l".repeat(150)}`;
  const gnu = (flag: string, value: string) => {
    const data = Buffer.from(`${value}\0`);
    const h = Buffer.alloc(512);
    h.write("././@LongLink", 0);
    h.write("0000644\0", 100);
    h.write("0000000\0", 108);
    h.write("0000000\0", 116);
    h.write(`${data.length.toString(8).padStart(11, "0")}\0`, 124);
    h.write("00000000000\0", 136);
    h.write("        ", 148);
    h.write(flag, 156);
    h.write("ustar  \0", 257, "binary");
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
    return Buffer.concat([h, data, Buffer.alloc((512 - (data.length % 512)) % 512)]);
  };
  const rest = makeTar([{ path: "short", type: "symlink", linkname: "short-target" }]);
  const tar = Buffer.concat([gnu("L", long), gnu("K", target), rest]);
  const [only] = await parse(tar);
  assert.equal(only!.entry.path, long);
  assert.equal(only!.entry.linkpath, target);
});

test("rootfs-tar: a header declaring more data than the layer holds is a truncation error naming the entry", async () => {
  const tar = makeTar([{ path: "big", type: "file", content: "only a little", declaredSize: 8 * 1024 * 1024 * 1024 }]);
  const err = await parseError(tar);
  assert.equal(err.code, "ROOTFS_LAYER_INVALID");
  assert.match(err.message, /"big"/);
  assert.match(err.message, /truncated/);
  assert.match(err.message, /8589934592 bytes/);
});

test("rootfs-tar: a layer cut in the middle of a file or a header is refused", async () => {
  const tar = makeTar([{ path: "a", type: "file", content: Buffer.alloc(5000, 1) }, { path: "b", type: "file", content: "b" }]);
  const inData = await parseError(tar.subarray(0, 512 + 3000), 100);
  assert.equal(inData.code, "ROOTFS_LAYER_INVALID");
  assert.match(inData.message, /truncated/);
  const inHeader = await parseError(tar.subarray(0, 512 + 5120 + 200));
  assert.match(inHeader.message, /truncated: ends inside a 512-byte header/);
});

test("rootfs-tar: a corrupt header checksum and garbage input are refused", async () => {
  const tar = makeTar([{ path: "a", type: "file", content: "x" }]);
  tar[10] = 0x41;
  assert.match((await parseError(tar)).message, /checksum/);
  assert.match((await parseError(Buffer.alloc(2048, 0x61))).message, /checksum/);
});

test("rootfs-tar: oversized PAX headers and sparse files are refused before buffering", async () => {
  const bigPax = makeTar([{ path: "a", type: "file", pax: { comment: "z".repeat(2 * 1024 * 1024) } }]);
  assert.match((await parseError(bigPax)).message, /exceeds the 1048576-byte limit/);
  const sparse = makeTar([{ path: "s", type: "file", pax: { "GNU.sparse.major": "1" } }]);
  assert.match((await parseError(sparse)).message, /sparse/);
});

test("rootfs-tar: numbers (octal with padding, base-256, malformed)", () => {
  assert.equal(parseNumber(Buffer.from("0000644\0")), 0o644);
  assert.equal(parseNumber(Buffer.from(" 644 \0")), 0o644);
  assert.equal(parseNumber(Buffer.from("\0\0\0\0")), 0);
  assert.equal(parseNumber(Buffer.from([0x80, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0])), 2 * 2 ** 32);
  assert.equal(parseNumber(Buffer.from([0xff, 0xff, 0xff, 0xff])), undefined);
  assert.equal(parseNumber(Buffer.from("12389\0")), undefined);
});

test("rootfs-tar: an archive without the trailing zero blocks still ends cleanly", async () => {
  const tar = makeTar([{ path: "a", type: "file", content: "x" }]);
  const parsed = await parse(tar.subarray(0, tar.length - 1024));
  assert.equal(parsed.length, 1);
});

test("rootfs-tar: seeded fuzz: mutated layers either parse or fail with a typed error, never crash or hang", async () => {
  const base = makeTar(SAMPLE);
  const rand = prng(0x5eed);
  let typed = 0;
  let parsed = 0;
  for (let i = 0; i < 400; i++) {
    const buf = Buffer.from(base);
    const mutations = 1 + Math.floor(rand() * 4);
    for (let m = 0; m < mutations; m++) {
      const at = Math.floor(rand() * buf.length);
      const kind = rand();
      if (kind < 0.6) buf[at] = Math.floor(rand() * 256);
      else if (kind < 0.8) buf.write(String(Math.floor(rand() * 1e9)), at % (buf.length - 12), "latin1");
      else buf.fill(0, at, Math.min(buf.length, at + Math.floor(rand() * 600)));
    }
    // fix up some header checksums so mutations reach the field parsers, not only the checksum check
    if (rand() < 0.5) {
      for (let off = 0; off + 512 <= buf.length; off += 512) {
        const h = buf.subarray(off, off + 512);
        if (h.toString("latin1", 257, 262) !== "ustar") continue;
        h.write("        ", 148);
        let sum = 0;
        for (const b of h) sum += b;
        h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "latin1");
      }
    }
    const cut = rand() < 0.3 ? buf.subarray(0, Math.floor(rand() * buf.length)) : buf;
    try {
      await parse(cut, 1 + Math.floor(rand() * 700));
      parsed++;
    } catch (e) {
      assert.ok(isMicroagentError(e), `iteration ${i}: untyped failure ${String(e)}`);
      assert.match(e.code, /^ROOTFS_LAYER_(INVALID|UNSUPPORTED|UNSAFE)$/);
      typed++;
    }
  }
  assert.ok(typed > 50 && parsed > 10, `both outcomes exercised (typed ${typed}, parsed ${parsed})`);
});

// --- hostile names (reliability campaign D1, D15) ----------------------------------------------------

async function refusedWith(tar: Buffer): Promise<{ code: string; message: string; details: Record<string, unknown> }> {
  try {
    await parse(tar);
  } catch (e) {
    assert.ok(isMicroagentError(e), `expected a MicroagentError, got ${String(e)}`);
    return { code: e.code, message: e.message, details: (e.details ?? {}) as Record<string, unknown> };
  }
  assert.fail("expected the layer to be refused");
}

test("rootfs-tar: an xattr name with a line break (the debugfs injection) is refused as unsafe, naming layer and entry", async () => {
  for (const key of ["SCHILY.xattr.user.x\n!touch /tmp/pwned-by-image #", "LIBARCHIVE.xattr.user.x%0A!touch%20/tmp/pwned"]) {
    const tar = rawTar([{ name: "opt/x", typeflag: "0", content: Buffer.from("x\n"), pax: [[key, key.startsWith("LIB") ? "dg==" : "v"]] }]);
    const err = await refusedWith(tar);
    assert.equal(err.code, "ROOTFS_LAYER_UNSAFE", err.message);
    assert.match(err.message, /layer test-layer: entry "opt\/x": the extended attribute name "user\.x\\n!touch/);
    assert.equal(err.details.entry, "opt/x");
    assert.equal(err.details.layer, "test-layer");
  }
});

test("rootfs-tar: xattr names must be a known namespace plus [A-Za-z0-9._@:+-] components", async () => {
  const bad: Array<[Bytes, RegExp]> = [
    ["SCHILY.xattr.user.a\rb", /outside/],
    ["SCHILY.xattr.user.a\tb", /outside/],
    ["SCHILY.xattr.user.a b", /outside/],
    ['SCHILY.xattr.user.a"b', /outside/],
    ["SCHILY.xattr.user.", /empty component/],
    ["SCHILY.xattr.user..x", /empty component/],
    ["SCHILY.xattr.user.-r", /starting with '-'/],
    ["SCHILY.xattr.-r", /namespace/],
    ["SCHILY.xattr.foo.bar", /namespace/],
    ["SCHILY.xattr.", /namespace/],
    [`SCHILY.xattr.user.${"a".repeat(260)}`, /longer than 255/],
    [Buffer.concat([Buffer.from("SCHILY.xattr.user.\xff", "latin1")]), /not valid UTF-8/],
    ["LIBARCHIVE.xattr.user.%FF", /URL-encoded UTF-8/],
    ["LIBARCHIVE.xattr.user.%00x", /outside/],
  ];
  for (const [key, why] of bad) {
    const err = await refusedWith(rawTar([{ name: "f", typeflag: "0", pax: [[key, "dg=="]] }]));
    assert.equal(err.code, "ROOTFS_LAYER_UNSAFE", `${JSON.stringify(String(key))}: ${err.message}`);
    assert.match(err.message, why, String(key));
    assert.match(err.message, /entry "f"/);
  }
  const good = ["security.capability", "security.selinux", "system.posix_acl_access", "trusted.overlay.opaque", "user.xdg.origin.url", "user.a-b_c@d:e+f"];
  const [f] = await parse(rawTar([{ name: "f", typeflag: "0", pax: good.map((n) => [`SCHILY.xattr.${n}`, "v"] as [string, string]) }]));
  assert.deepEqual(f!.entry.xattrs.map(([k]) => k), [...good].sort());
});

test("rootfs-tar: non-UTF-8 PAX path and linkpath are refused (never renamed to U+FFFD)", async () => {
  const path = await refusedWith(rawTar([{ name: "x", typeflag: "0", pax: [["path", Buffer.from("opt/\xff", "latin1")]] }]));
  assert.equal(path.code, "ROOTFS_LAYER_UNSUPPORTED");
  assert.match(path.message, /PAX path is not valid UTF-8/);
  const link = await refusedWith(rawTar([{ name: "l", typeflag: "2", pax: [["linkpath", Buffer.from("t\xfe", "latin1")]] }]));
  assert.equal(link.code, "ROOTFS_LAYER_UNSUPPORTED");
  assert.match(link.message, /PAX linkpath is not valid UTF-8/);
  // valid multi-byte UTF-8 is fine
  const [ok] = await parse(rawTar([{ name: "x", typeflag: "0", pax: [["path", "opt/é-ü"]] }]));
  assert.equal(ok!.entry.path, "opt/é-ü");
});

test("rootfs-tar: owners beyond 32 bits and device numbers beyond debugfs's range are refused", async () => {
  const uid = await refusedWith(rawTar([{ name: "f", typeflag: "0", pax: [["uid", "4294967296"]] }]));
  assert.equal(uid.code, "ROOTFS_LAYER_INVALID");
  assert.match(uid.message, /32-bit/);
  const dev = await refusedWith(rawTar([{ name: "d", typeflag: "3", devmajor: 70000, devminor: 1 }]));
  assert.equal(dev.code, "ROOTFS_LAYER_INVALID");
  assert.match(dev.message, /device number 70000:1/);
});

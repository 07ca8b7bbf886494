import { test } from "node:test";
import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, readdir, rm, stat, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isMicroagentError } from "../../src/contract/errors.ts";
import { ensurePrivateDir, writeFileAtomic } from "../../src/util/fs.ts";

test("workspace: ensurePrivateDir makes 0700 and refuses symlinks and parents others can rewrite", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-fs-"));
  try {
    const ok = join(dir, "a", "b");
    await ensurePrivateDir(join(dir, "a"));
    await mkdir(ok, { mode: 0o755 });
    await ensurePrivateDir(ok);
    assert.equal((await stat(ok)).mode & 0o777, 0o700);

    await symlink(ok, join(dir, "link"));
    await assert.rejects(ensurePrivateDir(join(dir, "link")), (e: unknown) => isMicroagentError(e) && e.code === "PERMISSION_DENIED" && /symlink/.test(e.message));

    const open = join(dir, "open");
    await mkdir(open);
    await chmod(open, 0o777);
    await assert.rejects(ensurePrivateDir(join(open, "x")), /lets another user replace/);
    await chmod(open, 0o1777); // sticky, like /tmp: fine
    await ensurePrivateDir(join(open, "x"));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("workspace: writeFileAtomic replaces whole files, 0600, and leaves no temp file on success", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ws-fs-"));
  try {
    const p = join(dir, "f.json");
    await writeFileAtomic(p, "one");
    await writeFileAtomic(p, "two");
    assert.equal((await stat(p)).mode & 0o777, 0o600);
    assert.deepEqual(await readdir(dir), ["f.json"]);
    await assert.rejects(writeFileAtomic(join(dir, "missing", "f"), "x"));
    assert.deepEqual(await readdir(dir), ["f.json"]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

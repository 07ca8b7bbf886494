import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { isZombie, pidExists, processAlive } from "../../src/util/process.ts";

test("process: an exited child its parent has not reaped is a zombie: it exists, but is not alive", async () => {
  // `sleep 0` is started by a shell that then becomes `sleep 5`, which never waits: the child stays a zombie.
  const parent = spawn("/bin/sh", ["-c", "sleep 0 & echo $!; exec sleep 5"], { stdio: ["ignore", "pipe", "inherit"] });
  try {
    const [line] = (await once(parent.stdout, "data")) as [Buffer];
    const pid = Number(line.toString().trim());
    let zombie = false;
    for (let i = 0; i < 100 && !zombie; i++) {
      zombie = isZombie(pid);
      if (!zombie) await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(zombie, true, `pid ${pid} never became a zombie`);
    assert.equal(pidExists(pid), true);
    assert.equal(processAlive(pid), false);
    assert.equal(isZombie(process.pid), false);
  } finally {
    parent.kill("SIGKILL");
  }
});

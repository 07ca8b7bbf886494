import { test } from "node:test";
import assert from "node:assert/strict";
import { parseBootConfig, bootConfigSchema } from "../../src/channel/boot-config.ts";
import { bootConfigMessage } from "../../src/channel/messages.ts";

test("channel boot config: defaults are applied", () => {
  const c = parseBootConfig({});
  assert.deepEqual(c, { env: [], files: [], setup: [], stopSignal: "SIGTERM", shell: "/bin/sh", streamOutput: false });
  const f = parseBootConfig({ files: [{ path: "/etc/x", contentBase64: "aGk=" }] }).files[0]!;
  assert.deepEqual(f, { path: "/etc/x", mode: 0o644, uid: 0, gid: 0, contentBase64: "aGk=" });
});

test("channel boot config: a full config round-trips to the wire form", () => {
  const c = parseBootConfig({
    argv: ["/bin/app", "--flag"],
    env: ["A=1", "EMPTY="],
    cwd: "/srv",
    user: "app:staff",
    hostname: "ws-1",
    stopSignal: "INT",
    setup: ["echo hi"],
    streamOutput: true,
  });
  const wire = bootConfigMessage(c);
  assert.equal(wire.type, "boot-config");
  assert.equal((wire.config as { stopSignal: string }).stopSignal, "SIGINT");
});

test("channel boot config: bad values are refused with the field named", () => {
  const bad: Array<[unknown, RegExp]> = [
    [{ env: ["NOEQUALS"] }, /env/],
    [{ cwd: "relative" }, /cwd/],
    [{ user: "a:b:c" }, /user/],
    [{ user: "has space" }, /user/],
    [{ hostname: "-bad-" }, /hostname/],
    [{ hostname: "x".repeat(64) }, /hostname/],
    [{ files: [{ path: "/a/../etc/shadow", contentBase64: "" }] }, /files/],
    [{ files: [{ path: "rel", contentBase64: "" }] }, /files/],
    [{ files: [{ path: "/a", contentBase64: "not base64!" }] }, /files/],
    [{ files: [{ path: "/a", contentBase64: "", mode: 0o10000 }] }, /files/],
    [{ stopSignal: "sigterm" }, /stopSignal/],
    [{ stopSignal: 0 }, /stopSignal/],
    [{ setup: [""] }, /setup/],
    [{ shell: "sh" }, /shell/],
  ];
  for (const [input, re] of bad) {
    const r = bootConfigSchema.safeParse(input);
    assert.equal(r.success, false, JSON.stringify(input));
    assert.match(r.error!.issues.map((i) => i.path.join(".")).join(" "), re, JSON.stringify(input));
  }
});

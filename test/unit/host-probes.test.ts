import { test } from "node:test";
import assert from "node:assert/strict";
import { decideUserns, type UsernsFacts } from "../../src/host/userns.ts";
import { decideDevice } from "../../src/host/devices.ts";
import { decideTool, parseQemuAccelHelp, parseVersion } from "../../src/host/tools.ts";
import { firstLine } from "../../src/host/exec.ts";

const userns = (over: Partial<UsernsFacts>): UsernsFacts => ({
  unsharePath: "/usr/bin/unshare",
  run: { code: 0, signal: null, stderr: "", timedOut: false },
  sysctls: { maxUserNamespaces: "63704" },
  uid: 1000,
  ...over,
});

test("host-probes: user namespaces that work", () => {
  const r = decideUserns(userns({}));
  assert.equal(r.available, true);
  assert.match(r.detail, /uid 1000/);
  assert.equal(r.remediation, "");
});

test("host-probes: AppArmor's restrict_unprivileged_userns is named (Ubuntu 24.04 case)", () => {
  const r = decideUserns(
    userns({
      run: { code: 1, signal: null, stderr: "unshare: write failed /proc/self/uid_map: Operation not permitted\n", timedOut: false },
      sysctls: { maxUserNamespaces: "63704", apparmorRestrictUnprivilegedUserns: "1" },
    }),
  );
  assert.equal(r.available, false);
  assert.match(r.detail, /uid_map: Operation not permitted/);
  assert.match(r.remediation, /apparmor_restrict_unprivileged_userns=0/);
});

test("host-probes: userns sysctls and a missing unshare", () => {
  const failed = { code: 1, signal: null, stderr: "unshare: unshare failed: No space left on device", timedOut: false } as const;
  assert.match(decideUserns(userns({ run: failed, sysctls: { maxUserNamespaces: "0" } })).remediation, /max_user_namespaces/);
  assert.match(decideUserns(userns({ run: failed, sysctls: { unprivilegedUsernsClone: "0" } })).remediation, /unprivileged_userns_clone=1/);
  const missing = decideUserns(userns({ unsharePath: undefined, run: undefined }));
  assert.equal(missing.available, false);
  assert.match(missing.detail, /unshare \(util-linux\) not found/);
  const hung = decideUserns(userns({ run: { code: null, signal: "SIGKILL", stderr: "", timedOut: true } }));
  assert.match(hung.detail, /timed out/);
});

test("host-probes: device decisions", () => {
  assert.deepEqual(decideDevice({ path: "/dev/net/tun" }), { available: true, detail: "/dev/net/tun present and opens read-write" });
  assert.match(decideDevice({ path: "/dev/vhost-vsock", openErrno: "ENOENT" }).detail, /does not exist/);
  const denied = decideDevice({ path: "/dev/net/tun", openErrno: "EACCES" });
  assert.equal(denied.available, false);
  assert.match(denied.detail, /cannot open it \(EACCES\)/);
  assert.match(decideDevice({ path: "/dev/x", openErrno: "ENXIO" }).detail, /could not be opened \(ENXIO\)/);
});

test("host-probes: version banners", () => {
  assert.equal(parseVersion("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright"), "7.2.22");
  assert.equal(parseVersion("Firecracker v1.7.0\n\nSupported snapshot data format versions: v1.0.0"), "1.7.0");
  assert.equal(parseVersion("mke2fs 1.47.0 (5-Feb-2023)\n\tUsing EXT2FS Library version 1.47.0"), "1.47.0");
  assert.equal(parseVersion("pasta unknown version\nCopyright Red Hat"), "unknown");
  assert.equal(parseVersion("pasta 2024_09_06.6b38f07\n"), "2024_09_06.6b38f07");
  assert.equal(parseVersion(""), undefined);
  assert.equal(firstLine("\n\n  hello \nworld"), "hello");
});

test("host-probes: tool decisions", () => {
  const missing = decideTool("pasta", undefined, "path", undefined, "pasta not found on PATH");
  assert.deepEqual(missing, { name: "pasta", available: false, detail: "pasta not found on PATH" });
  const ok = decideTool("mke2fs", "/usr/sbin/mke2fs", "path", { code: 1, stdout: "", stderr: "mke2fs 1.47.0 (5-Feb-2023)\n", timedOut: false }, "");
  assert.equal(ok.available, true, "mke2fs -V exits 1 on some versions but printed its version");
  assert.equal(ok.version, "1.47.0");
  const broken = decideTool("qemu-system-x86_64", "/usr/bin/qemu-system-x86_64", "path", { code: 127, stdout: "", stderr: "error while loading shared libraries: libfoo.so", timedOut: false }, "");
  assert.equal(broken.available, false);
  assert.match(broken.detail, /exit 127.*shared libraries/);
  const noexec = decideTool("firecracker", "/opt/fc", "env", { code: null, stdout: "", stderr: "", timedOut: false, spawnErrno: "EACCES" }, "");
  assert.match(noexec.detail, /could not run \(EACCES\)/);
  const env = decideTool("firecracker", "/opt/fc", "env", { code: 0, stdout: "Firecracker v1.7.0\n", stderr: "", timedOut: false }, "");
  assert.equal(env.detail, "/opt/fc 1.7.0 (from environment)");
});

test("host-probes: qemu -accel help", () => {
  assert.deepEqual(parseQemuAccelHelp("Accelerators supported in QEMU binary:\ntcg\nkvm\n"), ["tcg", "kvm"]);
});

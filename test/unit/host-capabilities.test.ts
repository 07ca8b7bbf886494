/**
 * `host` and `doctor` read each backend's capabilities off its capability objects (registry ->
 * capabilitiesOf), not from a table in src/host: a backend that gains an object is reported with it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { capabilitiesOf, capabilityTable } from "../../src/backend/capabilities.ts";
import { linuxQemuBackend } from "../../src/backend/linux-qemu.ts";
import type { Backend } from "../../src/backend/types.ts";
import { featuresOf, hostReportResolved, resolveDoctorOptions, doctorResolved } from "../../src/host/doctor.ts";
import { formatHostText } from "../../src/host/format.ts";

test("host capabilities: features come from the backend's row; unimplemented backends say so", () => {
  assert.deepEqual(featuresOf(capabilitiesOf(linuxQemuBackend)), { console: true, exec: true, pauseResume: true, snapshots: true, isolated: true, user: true, note: "" });
  const { pause: _p, network: _n, snapshot: _s, ...noPauseNoNic } = linuxQemuBackend;
  assert.deepEqual(featuresOf(capabilitiesOf(noPauseNoNic)), { console: true, exec: true, pauseResume: false, snapshots: false, isolated: true, user: false, note: "" });
  for (const row of capabilityTable([linuxQemuBackend]).filter((r) => !r.implemented)) {
    const f = featuresOf(row);
    assert.equal(f.note, `${row.backend} is not implemented in this build`);
    assert.deepEqual([f.console, f.exec, f.pauseResume, f.snapshots, f.isolated, f.user], [false, false, false, false, false, false]);
  }
});

test("host capabilities: hostReport and doctor report the injected backends, not a static table", { timeout: 120_000 }, async () => {
  const stateDir = await mkdtemp(join(tmpdir(), "host-caps-"));
  try {
    // linux-qemu as it is, but with a snapshot capability and without pause: the report must follow.
    const { pause: _p, ...rest } = linuxQemuBackend;
    const altered: Backend = { ...rest, snapshot: { ...linuxQemuBackend.snapshot!, restore: async () => Promise.reject(new Error("not in this test")) } };
    const o = { ...resolveDoctorOptions({ stateDir, backend: "linux-qemu" }), backends: [altered] };
    const r = await hostReportResolved(o);
    assert.ok(r.host.capabilities);
    assert.equal(r.host.capabilities.snapshots.supported, true);
    assert.equal(r.host.capabilities.pauseResume.supported, false);
    assert.match(r.host.capabilities.pauseResume.detail, /linux-qemu does not support pause\/resume yet/);
    assert.deepEqual(r.backends.map((b) => [b.backend, b.implemented]), [["linux-kvm", false], ["linux-qemu", true], ["apple-vf", false], ["windows-hyperv", false]]);
    const text = formatHostText(r);
    assert.match(text, /\nBackends:\n {2}linux-kvm {7}not implemented in this build\n {2}linux-qemu {6}channel virtio-serial; disk qcow2\/raw; network isolated, stream socket; pause no; snapshot yes\n/);

    // The real registry: linux-qemu pauses (QMP stop/cont) and snapshots; asking about an
    // unimplemented backend reports every capability as not implemented.
    const real = await hostReportResolved(resolveDoctorOptions({ stateDir, backend: "linux-qemu" }));
    assert.equal(real.host.capabilities?.pauseResume.supported, true);
    assert.equal(real.host.capabilities?.snapshots.supported, true);
    const kvm = await hostReportResolved(resolveDoctorOptions({ stateDir, backend: "linux-kvm" }));
    for (const c of [kvm.host.capabilities?.console, kvm.host.capabilities?.exec, kvm.host.capabilities?.networking.isolated]) {
      assert.deepEqual(c, { supported: false, ready: false, detail: "linux-kvm is not implemented in this build" });
    }
    const doc = await doctorResolved(resolveDoctorOptions({ stateDir }));
    assert.deepEqual(doc.backends, capabilityTable([linuxQemuBackend]));
  } finally {
    await rm(stateDir, { recursive: true, force: true });
  }
});

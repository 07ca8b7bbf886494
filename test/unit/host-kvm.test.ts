import { test } from "node:test";
import assert from "node:assert/strict";
import { constants } from "node:os";
import { accelFromKvm, decideKvm, formatIps, MIN_GUEST_IPS, parseKvmProbeOutput, type KvmFacts } from "../../src/host/kvm.ts";

/** kvm-probe output recorded on the development machine (paravirtual kvm_pvm, no VMX/SVM). */
const PVM_OUTPUT = `stage=open ok=1
stage=api ok=1
stage=real ok=1 exit=5
stage=long ok=1 exit=5
stage=speed ok=1 ips=1531198 cpu_us=231437 iterations=177188 finished=0
`;
/** What a hardware-assisted KVM host prints (the loop finishes in ~17 ms of CPU). */
const HW_OUTPUT = `stage=open ok=1
stage=api ok=1
stage=real ok=1 exit=5
stage=long ok=1 exit=5
stage=speed ok=1 ips=2400000000 cpu_us=16600 iterations=20000000 finished=1
`;

function facts(over: Partial<KvmFacts> = {}, stdout = HW_OUTPUT, code = 0): KvmFacts {
  return {
    devicePath: "/dev/kvm",
    devicePresent: true,
    hostArch: "amd64",
    guestArch: "amd64",
    probePath: "/pkg/native/build/kvm-probe",
    probeRun: { code, signal: null, stdout, stderr: "", timedOut: false },
    modules: ["kvm", "kvm_intel"],
    ...over,
  };
}

test("host-kvm: parse probe lines", () => {
  const stages = parseKvmProbeOutput(PVM_OUTPUT + "garbage line\nstage=real ok=0 errno=22 detail=KVM_RUN_failed\n");
  assert.equal(stages.length, 6);
  assert.deepEqual(stages[4], { stage: "speed", ok: true, ips: 1531198, cpuUs: 231437, finished: false });
  assert.deepEqual(stages[5], { stage: "real", ok: false, errno: 22, detail: "KVM RUN failed" });
});

test("host-kvm: hardware KVM is usable", () => {
  const r = decideKvm(facts());
  assert.equal(r.usable, true);
  assert.equal(r.code, "ok");
  assert.equal(r.guestIps, 2_400_000_000);
  assert.match(r.reason, /2\.4G instructions\/s/);
  assert.equal(accelFromKvm(r).accel, "kvm");
});

test("host-kvm: paravirtual KVM that emulates guest code is unusable, with the reason", () => {
  const r = decideKvm(facts({ modules: ["kvm", "kvm_pvm"] }, PVM_OUTPUT));
  assert.equal(r.usable, false);
  assert.equal(r.code, "slow");
  assert.equal(r.paravirtual, true);
  assert.match(r.reason, /only 1\.5M instructions\/s/);
  assert.match(r.reason, /kvm_pvm/);
  assert.match(r.remediation, /hardware virtualization/);
  const accel = accelFromKvm(r);
  assert.equal(accel.accel, "tcg");
  assert.match(accel.reason, /^KVM unusable: .*using TCG/);
});

test("host-kvm: slow without the pvm module still fails, without blaming pvm", () => {
  const r = decideKvm(facts({}, PVM_OUTPUT));
  assert.equal(r.code, "slow");
  assert.doesNotMatch(r.reason, /kvm_pvm/);
});

test("host-kvm: the threshold sits between emulation and hardware speed", () => {
  assert.ok(MIN_GUEST_IPS > 1_531_198 * 10);
  assert.ok(MIN_GUEST_IPS * 10 <= 2_400_000_000);
  const at = (ips: number) => decideKvm(facts({}, HW_OUTPUT.replace("ips=2400000000", `ips=${ips}`))).usable;
  assert.equal(at(MIN_GUEST_IPS), true);
  assert.equal(at(MIN_GUEST_IPS - 1), false);
});

test("host-kvm: missing device, permissions, missing helper", () => {
  const absent = decideKvm(facts({ devicePresent: false }));
  assert.equal(absent.code, "absent");
  assert.match(absent.reason, /does not exist/);
  assert.match(absent.remediation, /modprobe kvm/);

  const eacces = decideKvm(facts({}, `stage=open ok=0 errno=${constants.errno.EACCES}\n`, 1));
  assert.equal(eacces.code, "no_access");
  assert.match(eacces.reason, /EACCES/);
  assert.match(eacces.remediation, /usermod -aG kvm/);

  const noHelper = decideKvm(facts({ probePath: undefined, probeRun: undefined }));
  assert.equal(noHelper.usable, false);
  assert.equal(noHelper.code, "probe_missing");
  assert.match(noHelper.remediation, /make -C native/);

  const notChar = decideKvm(facts({ deviceNotChar: true }));
  assert.equal(notChar.code, "not_char_device");
});

test("host-kvm: guest code that fails or hangs", () => {
  const real = decideKvm(facts({}, "stage=open ok=1\nstage=api ok=1\nstage=real ok=0 exit=17 detail=internal_error_suberror_1\nstage=long ok=1 exit=5\n", 1));
  assert.equal(real.code, "real_mode");
  assert.match(real.reason, /16-bit real-mode guest code: internal error suberror 1/);

  const entry = decideKvm(facts({}, "stage=open ok=1\nstage=api ok=1\nstage=real ok=1 exit=5\nstage=long ok=0 exit=9 detail=entry_failed_hw_reason_0x80000021\n", 1));
  assert.equal(entry.code, "long_mode");

  const create = decideKvm(facts({}, `stage=open ok=1\nstage=api ok=1\nstage=real ok=0 errno=${constants.errno.ENOMEM} detail=KVM_CREATE_VM_failed\n`, 1));
  assert.equal(create.code, "create_failed");
  assert.match(create.reason, /ENOMEM/);

  const hangAlarm = decideKvm(facts({}, "stage=open ok=1\nstage=api ok=1\nstage=timeout ok=0 detail=KVM_RUN_did_not_return\n", 1));
  assert.equal(hangAlarm.code, "hang");
  assert.match(hangAlarm.reason, /real mode/);

  const hangKilled = decideKvm(facts({ probeRun: { code: null, signal: "SIGKILL", stdout: "stage=open ok=1\nstage=api ok=1\nstage=real ok=1 exit=5\n", stderr: "", timedOut: true } }));
  assert.equal(hangKilled.code, "hang");
  assert.match(hangKilled.reason, /long mode/);

  const crashed = decideKvm(facts({ probeRun: { code: null, signal: "SIGSEGV", stdout: "stage=open ok=1\n", stderr: "", timedOut: false } }));
  assert.equal(crashed.code, "probe_crashed");
  assert.match(crashed.reason, /SIGSEGV/);

  const api = decideKvm(facts({}, "stage=open ok=1\nstage=api ok=0 detail=api_version_11\n", 1));
  assert.equal(api.code, "api");
});

test("host-kvm: another guest architecture never uses KVM", () => {
  const r = decideKvm(facts({ guestArch: "arm64" }));
  assert.equal(r.code, "arch_mismatch");
  assert.match(r.remediation, /TCG with linux-qemu/);
});

test("host-kvm: instruction rates print short", () => {
  assert.equal(formatIps(1_531_198), "1.5M");
  assert.equal(formatIps(MIN_GUEST_IPS), "100M");
  assert.equal(formatIps(2_400_000_000), "2.4G");
  assert.equal(formatIps(950), "950");
});

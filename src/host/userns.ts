/**
 * Unprivileged user namespaces, probed live: `unshare --user --map-root-user true` makes a real
 * CLONE_NEWUSER and writes /proc/self/uid_map, exactly what pasta does. Sysctls alone are not
 * enough: Ubuntu's AppArmor (kernel.apparmor_restrict_unprivileged_userns=1) lets the clone
 * succeed and then denies the uid_map write, which only a live probe catches. The probe runs as
 * the invoking user, which is the user that will start workspaces.
 */
import { readFileSync } from "node:fs";
import { runTool, type ToolRun } from "./exec.ts";
import { findOnPath } from "../util/exec-path.ts";

export interface UsernsFacts {
  unsharePath?: string;
  run?: Pick<ToolRun, "code" | "signal" | "stderr" | "timedOut" | "spawnErrno">;
  /** Raw sysctl values that explain a failure; absent when the file does not exist. */
  sysctls: {
    maxUserNamespaces?: string;
    unprivilegedUsernsClone?: string;
    apparmorRestrictUnprivilegedUserns?: string;
  };
  uid: number;
}

export interface UsernsResult {
  available: boolean;
  detail: string;
  remediation: string;
}

export function decideUserns(f: UsernsFacts): UsernsResult {
  if (!f.unsharePath || !f.run) {
    return {
      available: false,
      detail: "unshare (util-linux) not found, so user-namespace creation could not be probed",
      remediation: "Install util-linux (`apt install util-linux`).",
    };
  }
  const r = f.run;
  if (r.code === 0 && !r.timedOut) {
    return { available: true, detail: `created a user namespace and wrote uid_map as uid ${f.uid}`, remediation: "" };
  }
  const err = r.spawnErrno ?? (r.timedOut ? "timed out" : (r.stderr.trim().split("\n").pop() ?? "").trim() || `exit ${r.code ?? r.signal}`);
  const s = f.sysctls;
  let remediation = "Enable unprivileged user namespaces (sysctl user.max_user_namespaces>0, kernel.unprivileged_userns_clone=1), or use --network isolated.";
  if (s.apparmorRestrictUnprivilegedUserns === "1") {
    remediation =
      "AppArmor blocks unprivileged user namespaces: set `sysctl kernel.apparmor_restrict_unprivileged_userns=0` or install an AppArmor profile allowing userns for microagent and pasta; or use --network isolated.";
  } else if (s.maxUserNamespaces === "0") {
    remediation = "Set `sysctl user.max_user_namespaces` to a non-zero value, or use --network isolated.";
  } else if (s.unprivilegedUsernsClone === "0") {
    remediation = "Set `sysctl kernel.unprivileged_userns_clone=1`, or use --network isolated.";
  }
  return { available: false, detail: `user-namespace creation failed: ${err}`, remediation };
}

function readSysctl(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return undefined;
  }
}

export async function gatherUsernsFacts(env: NodeJS.ProcessEnv = process.env): Promise<UsernsFacts> {
  const sysctls: UsernsFacts["sysctls"] = {};
  const a = readSysctl("/proc/sys/user/max_user_namespaces");
  if (a !== undefined) sysctls.maxUserNamespaces = a;
  const b = readSysctl("/proc/sys/kernel/unprivileged_userns_clone");
  if (b !== undefined) sysctls.unprivilegedUsernsClone = b;
  const c = readSysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
  if (c !== undefined) sysctls.apparmorRestrictUnprivilegedUserns = c;
  const facts: UsernsFacts = { sysctls, uid: process.getuid?.() ?? -1 };
  const unshare = findOnPath("unshare", env, ["/usr/bin", "/bin"]);
  if (!unshare) return facts;
  facts.unsharePath = unshare;
  const run = await runTool(unshare, ["--user", "--map-root-user", "true"], { timeoutMs: 3000 });
  facts.run = { code: run.code, signal: run.signal, stderr: run.stderr, timedOut: run.timedOut, ...(run.spawnErrno ? { spawnErrno: run.spawnErrno } : {}) };
  return facts;
}

/**
 * Global setup and teardown for the integration suite (node --test --test-global-setup).
 *
 * Setup gives every test one shared scratch root (MICROAGENT_TEST_ROOT) so that teardown can find what
 * the suite started. Teardown is the orphan check (STYLE 14): any process still running whose command line
 * mentions the scratch root (a QEMU, a supervisor, a registry) survived its test. It is killed, named, and
 * the run fails.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export function globalSetup(): void {
  const root = mkdtempSync(join(tmpdir(), "matest-"));
  process.env.MICROAGENT_TEST_ROOT = root;
  // Test traffic stays on this machine: a workspace's DNS forwards names it does not answer itself to
  // the host's resolvers, so every test workspace gets a resolver list naming loopback only.
  const resolvConf = join(root, "resolv.conf");
  writeFileSync(resolvConf, "nameserver 127.0.0.1\n");
  process.env.MICROAGENT_HOST_RESOLV_CONF = resolvConf;
}

export function findProcessesMentioning(needle: string): Array<{ pid: number; cmdline: string }> {
  const found: Array<{ pid: number; cmdline: string }> = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ").trim();
    } catch {
      continue; // exited while we looked
    }
    if (cmdline.includes(needle)) found.push({ pid, cmdline });
  }
  return found;
}

/** The VMMs and supervisors whose command line names `stateDir` (a suite's own). */
export function vmProcessesOf(stateDir: string): Array<{ pid: number; cmdline: string }> {
  return findProcessesMentioning(stateDir).filter((p) => /qemu-system|supervisor\/main/.test(p.cmdline));
}

/**
 * The orphan check at the end of a suite: its processes get `graceMs` to exit (a supervisor that just
 * recorded its final state is on its way out), the rest are SIGKILLed. Returns the command lines that
 * had to be killed; the suite asserts the list is empty (after its own cleanup, so a failure leaves nothing).
 */
export async function reapVmProcesses(stateDir: string, graceMs = 5000): Promise<string[]> {
  let left = vmProcessesOf(stateDir);
  for (let waited = 0; waited < graceMs && left.length > 0; waited += 50) {
    await new Promise((r) => setTimeout(r, 50));
    left = vmProcessesOf(stateDir);
  }
  for (const p of left) {
    try {
      process.kill(p.pid, "SIGKILL");
    } catch {
      /* gone */
    }
  }
  return left.map((p) => p.cmdline);
}

export async function globalTeardown(): Promise<void> {
  const root = process.env.MICROAGENT_TEST_ROOT;
  if (!root) return;
  // Give processes that are shutting down a moment to finish.
  let orphans = findProcessesMentioning(root);
  for (let i = 0; i < 20 && orphans.length > 0; i++) {
    await new Promise((r) => setTimeout(r, 250));
    orphans = findProcessesMentioning(root);
  }
  for (const o of orphans) {
    try {
      process.kill(o.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  if (orphans.length > 0) {
    process.stderr.write(`orphan check: ${orphans.length} process(es) outlived the integration suite:\n`);
    for (const o of orphans) process.stderr.write(`  pid ${o.pid}: ${o.cmdline.slice(0, 300)}\n`);
    process.exitCode = 1;
    throw new Error(`orphan check failed: ${orphans.map((o) => o.pid).join(", ")} survived the suite`);
  }
  if (!process.env.MICROAGENT_TEST_KEEP) rmSync(root, { recursive: true, force: true });
}

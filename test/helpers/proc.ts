/** Reading the process table for tests that check what a process group left behind. */
import { readdirSync, readFileSync } from "node:fs";

/** Pids of non-zombie processes in process group `pgid` (zombies await a reaper and hold nothing). */
export function liveGroupMembers(pgid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[2]) === pgid && fields[0] !== "Z") out.push(Number(d));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

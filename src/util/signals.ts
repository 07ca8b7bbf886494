/**
 * Signal names and numbers, from Node's own table (`os.constants.signals`). The numbers a guest
 * reports (an exit by signal, an image's StopSignal) are Linux numbers; the host's table is that same
 * table on a Linux host, which is where every backend runs today (a macOS backend would have to map
 * Linux numbers itself: SIGUSR1 is 30 there).
 */
import { constants } from "node:os";

const NAMES = new Map<number, string>();
// The first name wins over later aliases (SIGABRT, not SIGIOT; SIGIO, not SIGPOLL).
for (const [name, n] of Object.entries(constants.signals)) if (!NAMES.has(n)) NAMES.set(n, name);

/** "SIGTERM", "term", "Term" -> 15; undefined for a name the table does not know. */
export function signalNumber(name: string): number | undefined {
  const upper = name.trim().toUpperCase();
  const full = upper.startsWith("SIG") ? upper : `SIG${upper}`;
  return (constants.signals as Record<string, number | undefined>)[full];
}

/** 15 -> "SIGTERM"; undefined for a number the table does not know. */
export function signalName(n: number): string | undefined {
  return NAMES.get(n);
}

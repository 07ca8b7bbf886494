/**
 * Short notes printed to stderr in text mode. A note is one line a person can take in at a glance;
 * the long explanation lives in `microagent doctor`, which runs the same (cached) probe.
 */

/** The line printed when a workspace boots under TCG: under 120 characters whatever the reason. */
export function tcgNote(): string {
  return "note: running under TCG software emulation (KVM not usable here; `microagent doctor` says why)\n";
}

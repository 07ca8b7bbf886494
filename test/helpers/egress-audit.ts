/**
 * Reading a workspace's egress audit the way a user does (`microagent --json egress NAME`), for the
 * VM tests. Denies are coalesced over a 1 s window, so a test polls (bounded) for the record it expects.
 */
import assert from "node:assert/strict";
import { runCli } from "./cli.ts";

/** The records, oldest first; each test file types them with the fields it asserts. */
export async function readAudit<R>(stateDir: string, name: string): Promise<R[]> {
  const r = await runCli(["--state-dir", stateDir, "--json", "egress", name]);
  assert.equal(r.code, 0, r.err);
  return (JSON.parse(r.out) as { egress: R[] }).egress;
}

/** The first record matching `want`, polled for up to 10 s; fails naming `what` and listing the log. */
export async function awaitRecord<R>(stateDir: string, name: string, want: (r: R) => boolean, what: string): Promise<R> {
  let last: R[] = [];
  for (let i = 0; i < 40; i++) {
    last = await readAudit<R>(stateDir, name);
    const hit = last.find(want);
    if (hit) return hit;
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.fail(`no audit record for ${what}; the log holds:\n${last.map((r) => JSON.stringify(r)).join("\n")}`);
}

/** The records matching `want` once their counts (coalesced records carry one) add up to `n`, polled for up to 10 s. */
export async function awaitCount<R extends { count?: number }>(stateDir: string, name: string, want: (r: R) => boolean, n: number, what: string): Promise<R[]> {
  let hits: R[] = [];
  for (let i = 0; i < 40; i++) {
    hits = (await readAudit<R>(stateDir, name)).filter(want);
    if (hits.reduce((k, r) => k + (r.count ?? 1), 0) >= n) return hits;
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.fail(`fewer than ${n} audited ${what}: ${JSON.stringify(hits)}`);
}

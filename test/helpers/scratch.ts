/**
 * Scratch directories for tests, all under one root so the orphan check (global-setup.ts) can find
 * anything a test left running. Use `scratchDir("name")` instead of mkdtemp in os.tmpdir().
 */
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export function scratchRoot(): string {
  const root = process.env.MICROAGENT_TEST_ROOT ?? join(tmpdir(), "matest-standalone");
  mkdirSync(root, { recursive: true, mode: 0o700 });
  return root;
}

export function scratchDir(label: string): string {
  return mkdtempSync(join(scratchRoot(), `${label.replace(/[^a-z0-9_-]/gi, "_")}-`));
}

/**
 * Run the CLI in-process: `main()` from src/cli/main.ts with PassThrough streams for stdout and
 * stderr. `env` is merged into process.env for the call and undone afterwards; process.exitCode is
 * saved and restored so a failing command does not fail the test run.
 */
import { PassThrough } from "node:stream";
import { main } from "../../src/cli/main.ts";

export interface CliResult {
  code: number;
  out: string;
  err: string;
}

export async function runCli(args: readonly string[], env: Record<string, string> = {}): Promise<CliResult> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const outChunks: Buffer[] = [];
  const errChunks: Buffer[] = [];
  stdout.on("data", (d: Buffer) => outChunks.push(d));
  stderr.on("data", (d: Buffer) => errChunks.push(d));
  const saved = { ...process.env };
  Object.assign(process.env, env);
  const savedExit = process.exitCode;
  process.exitCode = undefined;
  try {
    const code = await main(args, { stdout, stderr });
    return { code, out: Buffer.concat(outChunks).toString("utf8"), err: Buffer.concat(errChunks).toString("utf8") };
  } finally {
    process.exitCode = savedExit;
    for (const k of Object.keys(env)) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
}

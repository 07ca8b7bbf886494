/**
 * Global flags. They may appear before or after the subcommand (`microagent --json doctor` and
 * `microagent doctor --json` are the same), so they are lifted out of argv before commander sees
 * the rest. Two places are never scanned: anything after `--`, and the guest command tail of
 * commands that take one (in `run alpine ls --json`, `--json` belongs to `ls`).
 */
import { homedir } from "node:os";
import { join } from "node:path";
import { z } from "zod";
import { BackendNameSchema, normalizeArch, type Arch, type BackendName } from "../contract/backend.ts";

export type OutputFormat = "json" | "text";
export type Mode = "ux" | "ax";

export interface GlobalOptions {
  format: OutputFormat;
  mode: Mode;
  stateDir: string;
  supervisor: string | undefined;
  backend: BackendName | undefined;
  arch: Arch | undefined;
  color: boolean;
}

/** A usage error found while reading global flags (exit code 2). */
export class GlobalFlagError extends Error {}

const FLAGS_WITH_VALUE = new Set(["--output", "--mode", "--state-dir", "--supervisor", "--backend", "--arch"]);
const BOOLEAN_FLAGS = new Set(["--json", "--text", "--no-color"]);

const OutputSchema = z.enum(["json", "text"]);
const ModeSchema = z.enum(["ux", "ax"]);

export interface SplitResult {
  globals: GlobalOptions;
  rest: string[];
}

/**
 * @param argv the arguments after the program name
 * @param tailStart returns, for a subcommand name, a function that tells whether argument i (an
 *   index into `rest` so far) starts the guest command tail; commands without a tail return undefined.
 */
export function splitGlobalFlags(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  isTailStart: (subcommand: string, restSoFar: readonly string[], token: string) => boolean,
  stdoutIsTty: boolean,
): SplitResult {
  const raw: Record<string, string | true> = {};
  const rest: string[] = [];
  let subcommand: string | undefined;
  let verbatim = false;
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i] as string;
    if (verbatim) {
      rest.push(token);
      continue;
    }
    if (token === "--") {
      verbatim = true;
      rest.push(token);
      continue;
    }
    if (subcommand && isTailStart(subcommand, rest, token)) {
      verbatim = true;
      rest.push(token);
      continue;
    }
    const eq = token.indexOf("=");
    const name = token.startsWith("--") && eq > 0 ? token.slice(0, eq) : token;
    if (BOOLEAN_FLAGS.has(name)) {
      raw[name] = true;
      continue;
    }
    if (FLAGS_WITH_VALUE.has(name)) {
      let value: string | undefined;
      if (eq > 0 && name !== token) value = token.slice(eq + 1);
      else {
        value = argv[i + 1];
        i++;
      }
      if (value === undefined || value === "") throw new GlobalFlagError(`option '${name} <value>' argument missing`);
      raw[name] = value;
      continue;
    }
    if (!subcommand && !token.startsWith("-")) subcommand = token;
    rest.push(token);
  }
  return { globals: resolveGlobals(raw, env, stdoutIsTty), rest };
}

function resolveGlobals(raw: Record<string, string | true>, env: NodeJS.ProcessEnv, stdoutIsTty: boolean): GlobalOptions {
  const mode = parseEnum(ModeSchema, raw["--mode"] ?? env.MICROAGENT_MODE, "--mode", "ux") as Mode;
  // Precedence: explicit flag > MICROAGENT_OUTPUT > AX mode (JSON) > text.
  let format: OutputFormat;
  if (raw["--json"] && raw["--text"]) throw new GlobalFlagError("--json and --text contradict each other: pass one");
  if (raw["--json"]) format = "json";
  else if (raw["--text"]) format = "text";
  else if (typeof raw["--output"] === "string") format = parseEnum(OutputSchema, raw["--output"], "--output", "text") as OutputFormat;
  else if (env.MICROAGENT_OUTPUT) format = parseEnum(OutputSchema, env.MICROAGENT_OUTPUT, "MICROAGENT_OUTPUT", "text") as OutputFormat;
  else format = mode === "ax" ? "json" : "text";

  let backend: BackendName | undefined;
  if (typeof raw["--backend"] === "string") {
    const parsed = BackendNameSchema.safeParse(raw["--backend"]);
    if (!parsed.success) {
      throw new GlobalFlagError(
        `invalid --backend '${raw["--backend"]}'${suggest(raw["--backend"], BackendNameSchema.options)}; expected one of ${BackendNameSchema.options.join(", ")}`,
      );
    }
    backend = parsed.data;
  }
  let arch: Arch | undefined;
  if (typeof raw["--arch"] === "string") {
    arch = normalizeArch(raw["--arch"]);
    if (!arch) throw new GlobalFlagError(`invalid --arch '${raw["--arch"]}'; expected amd64 (x86_64) or arm64 (aarch64)`);
  }
  const stateDir =
    typeof raw["--state-dir"] === "string" ? raw["--state-dir"] : env.MICROAGENT_STATE_DIR || join(homedir(), ".microagent");
  const color = !raw["--no-color"] && env.NO_COLOR === undefined && stdoutIsTty && format === "text";
  return {
    format,
    mode,
    stateDir,
    supervisor: typeof raw["--supervisor"] === "string" ? raw["--supervisor"] : undefined,
    backend,
    arch,
    color,
  };
}

function parseEnum(schema: z.ZodEnum, value: string | true | undefined, what: string, fallback: string): string {
  if (value === undefined || value === true) return fallback;
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const options = schema.options as string[];
    throw new GlobalFlagError(`invalid ${what} '${value}'${suggest(value, options)}; expected one of ${options.join(", ")}`);
  }
  return parsed.data as string;
}

/** " (did you mean X?)" when a candidate is a near miss, else "". */
export function suggest(value: string, candidates: readonly string[]): string {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(value.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) {
      bestDistance = d;
      best = c;
    }
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(best.length / 3)) ? ` (did you mean ${best}?)` : "";
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0] as number;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j] as number;
      row[j] = Math.min((row[j] as number) + 1, (row[j - 1] as number) + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length] as number;
}

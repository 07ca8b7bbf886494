/**
 * `microagent serve e2b`: the E2B-compatible server, so the unmodified `e2b` SDK drives microagent
 * workspaces (point E2B_API_URL and E2B_SANDBOX_URL at --listen). Runs until SIGINT/SIGTERM, then
 * kills the sandboxes it created: E2B sandboxes do not outlive the API that made them.
 *
 * It lives beside the server rather than in src/cli (the library may not import the CLI), so it
 * reads the one global it needs, --state-dir, from the root command itself, and prints its own lines.
 */
import { readFileSync } from "node:fs";
import { Command, Option } from "commander";
import { CommonErrors } from "../../contract/errors.ts";
import { NETWORK_MODES, type NetworkMode } from "../../workspace/manifest.ts";
import { PROFILE_NAMES, type ProfileName } from "../../workspace/profiles.ts";
import { E2bErrors } from "./errors.ts";
import { startE2bServer } from "./server.ts";

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** `HOST:PORT` (IPv6 in brackets); the port may be 0 for any free one. */
export function parseListen(value: string): { hostname: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw CommonErrors.INVALID_ARGUMENT({ message: `--listen '${value}' is not HOST:PORT`, remediation: "Pass --listen 127.0.0.1:PORT." });
  return { hostname: (m[1] ?? m[2])!, port };
}

export function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname);
}

/** `NAME=IMAGE` pairs as the template alias table. */
export function parseTemplates(pairs: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const eq = p.indexOf("=");
    if (eq <= 0 || eq === p.length - 1) throw CommonErrors.INVALID_ARGUMENT({ message: `--template '${p}' is not NAME=IMAGE`, remediation: "Pass --template base=docker.io/library/debian:12, once per alias." });
    out[p.slice(0, eq)] = p.slice(eq + 1);
  }
  return out;
}

function positiveInt(what: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw CommonErrors.INVALID_ARGUMENT({ message: `${what} '${value}' is not a positive whole number` });
    return n;
  };
}

interface E2bFlags {
  listen: string;
  apiKey?: string;
  apiKeyFile?: string;
  allowRemote?: boolean;
  template: string[];
  user?: string;
  network: NetworkMode;
  profile?: ProfileName;
  memory?: number;
  cpus?: number;
}

/** --state-dir when the user gave it; otherwise the library's default ($MICROAGENT_STATE_DIR or ~/.microagent). */
function stateDirOf(cmd: Command): string | undefined {
  let root = cmd;
  while (root.parent) root = root.parent;
  return root.getOptionValueSource("stateDir") === "cli" ? (root.opts()["stateDir"] as string) : undefined;
}

export function e2bCommand(): Command {
  return new Command("e2b")
    .description("serve the E2B API (control plane and envd) so the unmodified e2b SDK drives workspaces; see docs/e2b.md")
    .option("--listen <host:port>", "where to listen (loopback unless --allow-remote)", "127.0.0.1:3000")
    .option("--api-key <key>", "require this key in X-API-KEY (default: any non-empty key)")
    .option("--api-key-file <path>", "read the required key from this file (keeps it out of the process list)")
    .option("--allow-remote", "allow a non-loopback --listen (needs an API key)")
    .option("--template <name=image>", "template alias: Sandbox.create(NAME) boots IMAGE (repeatable; other names are image references)", collect, [])
    .option("--user <name>", "run commands and file operations as this guest user when the SDK names none (E2B templates use `user`; default: the image's user)")
    .addOption(new Option("--network <mode>", "network mode of each sandbox's workspace").choices(NETWORK_MODES).default("user"))
    .addOption(new Option("--profile <name>", "resources of each sandbox").choices(PROFILE_NAMES))
    .option("--memory <mib>", "guest memory in MiB (overrides the profile)", positiveInt("--memory"))
    .option("--cpus <n>", "vCPUs (overrides the profile)", positiveInt("--cpus"))
    .action(async (o: E2bFlags, cmd: Command) => {
      const { hostname, port } = parseListen(o.listen);
      const apiKey = o.apiKeyFile ? readFileSync(o.apiKeyFile, "utf8").trim() : o.apiKey;
      if (apiKey !== undefined && apiKey.length === 0) throw CommonErrors.INVALID_ARGUMENT({ message: "the API key is empty", remediation: "Pass a non-empty --api-key or --api-key-file." });
      if (!isLoopback(hostname) && !(o.allowRemote && apiKey)) {
        throw E2bErrors.E2B_LISTEN_REFUSED({ message: `refusing to listen on ${hostname}: not a loopback address${o.allowRemote ? " and no API key was given" : ""}` });
      }
      const resources = {
        ...(o.profile ? { profile: o.profile } : {}),
        ...(o.memory ? { memoryMib: o.memory } : {}),
        ...(o.cpus ? { cpus: o.cpus } : {}),
      };
      const stateDir = stateDirOf(cmd);
      const log = (line: string) => process.stderr.write(`serve e2b: ${line}\n`);
      const server = await startE2bServer({
        hostname,
        port,
        apiKey,
        ...(o.user ? { defaultUser: o.user } : {}),
        host: stateDir ? { stateDir } : {},
        templates: parseTemplates(o.template),
        network: o.network,
        ...(Object.keys(resources).length > 0 ? { resources } : {}),
        log,
      });
      log(`listening on ${server.url}; point the SDK at it with E2B_API_URL=${server.url} E2B_SANDBOX_URL=${server.url} E2B_API_KEY=${apiKey ? "<the key>" : "<any>"}`);
      const signal = await new Promise<string>((resolve) => {
        process.once("SIGINT", () => resolve("SIGINT"));
        process.once("SIGTERM", () => resolve("SIGTERM"));
      });
      const n = server.table.list().length;
      await server.close();
      log(`stopped by ${signal}; killed ${n} sandbox(es)`);
    });
}

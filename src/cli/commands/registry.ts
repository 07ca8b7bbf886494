import { Command } from "commander";
import { action } from "../action.ts";
import { formatTable } from "../output.ts";
import { CommonErrors } from "../../contract/errors.ts";
import { registryList, registryLogin, registryLogout } from "../../image/registry-auth.ts";

export function registryCommand(): Command {
  const registry = new Command("registry").description("manage registry credentials (<state-dir>/auth.json or $REGISTRY_AUTH_FILE)");

  registry
    .command("login")
    .description("check credentials against a registry and store them (file mode 0600)")
    .argument("<registry>", "registry host[:port], e.g. ghcr.io or 127.0.0.1:5000")
    .requiredOption("-u, --username <user>", "user name")
    .option("--password-stdin", "read the password or token from stdin (the only way to pass it)")
    .option("--no-verify", "store the credentials without contacting the registry")
    .action(
      action(async (ctx, reg: string, o: { username: string; passwordStdin?: boolean; verify: boolean }) => {
        if (!o.passwordStdin) {
          throw CommonErrors.USAGE({
            message: "registry login needs --password-stdin (passwords on the command line end up in shell history)",
            remediation: `Run \`echo "$TOKEN" | microagent registry login ${reg} -u ${o.username} --password-stdin\`.`,
          });
        }
        const password = (await readStdin()).replace(/\r?\n$/, "");
        const r = await registryLogin(reg, { stateDir: ctx.globals.stateDir, username: o.username, password, verify: o.verify });
        return { json: r, text: `logged in to ${r.registry} as ${r.username} (credentials in ${r.authFile})` };
      }),
    );

  registry
    .command("logout")
    .description("remove the stored credentials for a registry")
    .argument("<registry>", "registry host[:port]")
    .action(
      action(async (ctx, reg: string) => {
        const r = await registryLogout(reg, { stateDir: ctx.globals.stateDir });
        return { json: r, text: `logged out of ${r.registry}` };
      }),
    );

  registry
    .command("list")
    .alias("ls")
    .description("list registries with stored credentials (user names only)")
    .action(
      action(async (ctx) => {
        const entries = await registryList({ stateDir: ctx.globals.stateDir });
        const text = entries.length
          ? formatTable(["REGISTRY", "USER"], entries.map((e) => [e.registry, e.username ?? "(unreadable)"]))
          : "not logged in to any registry";
        return { json: { registries: entries }, text };
      }),
    );
  return registry;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of process.stdin) {
    total += (chunk as Buffer).length;
    if (total > 64 * 1024) throw CommonErrors.INVALID_ARGUMENT({ message: "the password on stdin is longer than 64 KiB" });
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

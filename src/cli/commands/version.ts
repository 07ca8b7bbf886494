import { Command } from "commander";
import { action } from "../action.ts";
import { packageVersion } from "../../version.ts";

export function versionCommand(): Command {
  return new Command("version").description("print the microagent version").action(
    action(async () => {
      const version = packageVersion();
      return { json: { version, node: process.versions.node }, text: `microagent ${version}` };
    }),
  );
}

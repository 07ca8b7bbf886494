import { Command } from "commander";
import { action } from "../action.ts";
import { versionJson } from "../../api/results.ts";

export function versionCommand(): Command {
  return new Command("version").description("print the microagent version").action(
    action(async () => {
      const json = versionJson();
      return { json, text: `microagent ${json.version}` };
    }),
  );
}

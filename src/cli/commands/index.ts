/** Every top-level command, one file each. */
import type { Command } from "commander";
import { versionCommand } from "./version.ts";

export const COMMANDS: ReadonlyArray<() => Command> = [
  versionCommand,
];

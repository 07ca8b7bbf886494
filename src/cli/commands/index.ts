/** Every top-level command, one file each. */
import type { Command } from "commander";
import { versionCommand } from "./version.ts";
import { createCommand } from "./create.ts";
import { statusCommand } from "./status.ts";
import { listCommand } from "./list.ts";
import { psCommand } from "./ps.ts";
import { eventsCommand } from "./events.ts";
import { logsCommand } from "./logs.ts";
import { deleteCommand } from "./delete.ts";
import { runCommand } from "./run.ts";
import { doctorCommand } from "./doctor.ts";
import { hostCommand } from "./host.ts";
import { startCommand } from "./start.ts";
import { waitCommand } from "./wait.ts";
import { haltCommand } from "./halt.ts";
import { stopCommand } from "./stop.ts";
import { killCommand } from "./kill.ts";
import { quarantineCommand } from "./quarantine.ts";
import { pauseCommand, resumeCommand } from "./pause.ts";
import { snapshotCommand } from "./snapshot.ts";
import { execCommand } from "./exec.ts";
import { cpCommand } from "./cp.ts";
import { connectCommand } from "./connect.ts";
import { kernelCommand } from "./kernel.ts";
import { imageCommand } from "./image.ts";
import { registryCommand } from "./registry.ts";
import { rootfsCommand } from "./rootfs.ts";
import { secretCommand } from "./secret.ts";
import { serveCommand } from "./serve.ts";
import { egressCommand } from "./egress.ts";
import { networkCommand } from "./network.ts";

export const COMMANDS: ReadonlyArray<() => Command> = [
  versionCommand,
  createCommand,
  statusCommand,
  listCommand,
  psCommand,
  eventsCommand,
  logsCommand,
  deleteCommand,
  runCommand,
  doctorCommand,
  hostCommand,
  startCommand,
  waitCommand,
  haltCommand,
  stopCommand,
  killCommand,
  quarantineCommand,
  pauseCommand,
  resumeCommand,
  snapshotCommand,
  execCommand,
  cpCommand,
  connectCommand,
  kernelCommand,
  imageCommand,
  registryCommand,
  rootfsCommand,
  secretCommand,
  serveCommand,
  egressCommand,
  networkCommand,
];

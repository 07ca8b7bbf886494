#!/usr/bin/env node
// The microagent CLI. Runs the compiled library (dist/); `npm run build` or scripts/setup makes it.
//
// This file must parse and link on any Node that can run it, so it imports nothing by name: a named
// import that an old Node lacks fails at link time, before any check could run. The version check
// comes first; only then is the library loaded.
import * as nodeModule from "node:module";

const REQUIRED = [22, 18];
const [major, minor] = process.versions.node.split(".").map(Number);
if (major < REQUIRED[0] || (major === REQUIRED[0] && minor < REQUIRED[1])) {
  process.stderr.write(
    `error: microagent needs Node ${REQUIRED.join(".")} or newer; this is Node ${process.versions.node}\n` +
      "  fix: run scripts/setup (it installs Node 24 into .tools/ and scripts/microagent uses it), or install Node 22.18+ and put it first on PATH\n",
  );
  process.exit(1);
}

// Node's on-disk compile cache roughly halves start-up for a CLI that loads this many modules.
nodeModule.enableCompileCache?.();
const { main } = await import("../dist/cli/main.js");
process.exitCode = await main(process.argv.slice(2));

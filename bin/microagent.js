#!/usr/bin/env node
// The microagent CLI. Runs the compiled library (dist/); `npm run build` or scripts/setup makes it.
import { enableCompileCache } from "node:module";

// Node's on-disk compile cache roughly halves start-up for a CLI that loads this many modules.
enableCompileCache?.();
const { main } = await import("../dist/cli/main.js");
process.exitCode = await main(process.argv.slice(2));

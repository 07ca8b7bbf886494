#!/usr/bin/env node
// The microagent CLI. Runs the compiled library (dist/); `npm run build` or scripts/setup makes it.
import { main } from "../dist/cli/main.js";

process.exitCode = await main(process.argv.slice(2));

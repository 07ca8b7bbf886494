// Rewrite docs/control-protocol.schema.json from the op table (src/supervisor/ops.ts).
// Run after changing an op: `npm run -s schema:control`. test/unit/supervisor-ops.test.ts fails until you do.
import { writeFile } from "node:fs/promises";
import { controlProtocolJsonSchemaText } from "../src/supervisor/ops-schema.ts";

const target = new URL("../docs/control-protocol.schema.json", import.meta.url);
await writeFile(target, controlProtocolJsonSchemaText());
console.log(`wrote ${target.pathname}`);

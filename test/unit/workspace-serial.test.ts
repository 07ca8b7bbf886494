import { test } from "node:test";
import assert from "node:assert/strict";
import { lastLines } from "../../src/workspace/serial.ts";

test("workspace-serial: lastLines drops ANSI colours, OSC titles and CRs, and keeps the last non-empty lines", () => {
  const text = "boot\r\n\u001b[0;32m[  OK  ]\u001b[0m Started\r\n\u001b]0;root@box\u0007$ \u001b[?25hready\n\n   \n";
  assert.deepEqual(lastLines(text, 2), ["[  OK  ] Started", "$ ready"]);
  assert.deepEqual(lastLines(text, 9), ["boot", "[  OK  ] Started", "$ ready"]);
});

import { test } from "node:test";
import assert from "node:assert/strict";
import { signalName, signalNumber } from "../../src/util/signals.ts";

test("util-signals: names and numbers come from Node's table, first name over aliases", () => {
  assert.equal(signalNumber("SIGTERM"), 15);
  assert.equal(signalNumber("kill"), 9);
  assert.equal(signalNumber(" usr1 "), 10);
  assert.equal(signalNumber("SIGNOPE"), undefined);
  assert.equal(signalName(6), "SIGABRT");
  assert.equal(signalName(29), "SIGIO");
  assert.equal(signalName(11), "SIGSEGV");
  assert.equal(signalName(0), undefined);
  assert.equal(signalName(999), undefined);
});
